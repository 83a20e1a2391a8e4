"""An app for the timeout tests: tasks past their timeout, one sync that ignores
should_abort() and one async, each leaving files behind so the test knows where they are.

The connector reads DATABASE_URL, which the tests set to their own fresh database.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqla_jobs import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")))


@app.task(name="stuck_sync", timeout=1)
def stuck_sync(directory: str, seconds: float) -> None:
    """Runs past its timeout and never looks at should_abort(): its thread goes on."""
    Path(directory, "sync-started").write_text("started")
    time.sleep(seconds)
    Path(directory, "sync-returned").write_text("returned")


@app.task(name="stuck_async", timeout=1)
async def stuck_async(directory: str) -> None:
    """Runs past its timeout: cancelled at the deadline."""
    await asyncio.to_thread(Path(directory, "async-started").write_text, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        Path(directory, "async-cancelled").write_text("cancelled")  # noqa: ASYNC240 (no await here)
        raise


@app.task(name="quick")
def quick(directory: str) -> None:
    Path(directory, "quick").write_text("ran")
