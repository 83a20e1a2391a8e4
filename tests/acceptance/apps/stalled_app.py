"""An app for the stalled-job tests: a long job that leaves a file per attempt, so the test knows
which run is going on, and can kill the worker running it.

The connector reads DATABASE_URL, which the tests set to their own fresh database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqla_jobs import App, JobContext, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")))


@app.task(name="long_job", retry=1, pass_context=True)
def long_job(context: JobContext, directory: str, seconds_on_first_run: float = 60) -> None:
    """Writes ``started-<attempt>``; the first run then takes its time (long enough to be
    killed), a retry finishes at once and writes ``finished``."""
    attempt = context.job.attempts
    Path(directory, f"started-{attempt}").write_text(str(os.getpid()))
    if attempt == 1:
        time.sleep(seconds_on_first_run)
    Path(directory, "finished").write_text(str(attempt))


@app.task(name="always_long_job", retry=1, pass_context=True)
def always_long_job(context: JobContext, directory: str) -> None:
    """Takes its time on every run (two runs allowed: ``retry=1``), writing
    ``started-<attempt>`` first."""
    Path(directory, f"started-{context.job.attempts}").write_text(str(os.getpid()))
    time.sleep(60)
    Path(directory, "finished").write_text(str(context.job.attempts))
