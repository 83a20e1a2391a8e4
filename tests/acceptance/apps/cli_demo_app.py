"""An app for the CLI's end-to-end tests: its tasks leave files behind to prove they ran.

The connector reads DATABASE_URL, which the tests set to their own fresh database.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqla_jobs import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")))


@app.task(name="write_file")
def write_file(path: str, text: str = "done") -> None:
    """Proves the job ran: the test reads the file."""
    Path(path).write_text(text)


@app.task(name="slow_sync")
def slow_sync(seconds: float, started: str, path: str) -> None:
    """A sync task (run in a thread) that signals its start, then takes its time."""
    Path(started).write_text("started")
    time.sleep(seconds)
    Path(path).write_text("finished")


@app.task(name="slow_async")
async def slow_async(seconds: float, started: str, path: str) -> None:
    """An async task that signals its start, then takes its time (cancellable)."""
    await asyncio.to_thread(Path(started).write_text, "started")
    await asyncio.sleep(seconds)
    await asyncio.to_thread(Path(path).write_text, "finished")


@app.task(name="on_reports", queue="reports")
def on_reports(path: str) -> None:
    """A task whose jobs go to the 'reports' queue unless told otherwise."""
    Path(path).write_text("reports")


def create_app() -> App:
    """A factory, for `--app cli_demo_app:create_app`."""
    return app


not_an_app = 42
