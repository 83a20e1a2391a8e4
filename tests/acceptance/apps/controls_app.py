"""An app for the execution-control tests: each job writes when it started and ended, so the
test can tell how many ran at once and how fast they started, across worker processes.

The connector reads DATABASE_URL, which the tests set to their own fresh database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqla_jobs import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")))
# Declared in code: each worker writes it at start.
app.configure_queue("limited", concurrency_limit=2)


def write_run(directory: str, n: int, started: float) -> None:
    """``<n>.run``: when the job started and ended; written whole (a rename), so that a
    reader never sees half of it."""
    partial = Path(directory, f"{n}.partial")
    partial.write_text(f"{started} {time.time()}")
    partial.rename(Path(directory, f"{n}.run"))


@app.task(name="record", queue="limited")
def record(directory: str, n: int, seconds: float = 0.1) -> None:
    started = time.time()
    time.sleep(seconds)
    write_run(directory, n, started)


@app.task(name="rated", queue="rated")
async def rated(directory: str, n: int) -> None:
    write_run(directory, n, time.time())
