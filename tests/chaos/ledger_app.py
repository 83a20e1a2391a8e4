"""The app that the chaos suite's worker processes run (``--app ledger_app:app``).

Every run of a job writes one row to ``chaos_ledger`` on a connection of its own (not the
worker's): which job, which attempt, which process, when it started and ended. The suite reads
the ledger to prove what ran, how often, where and when. Its writes retry through a database
restart, so that the ledger never loses a run that happened.

The connector is ``CHAOS_CONNECTOR``'s (psycopg, aiopg or sqlalchemy_async) on
``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg
import psycopg_pool

import sqla_jobs

URL = os.environ["DATABASE_URL"]


def _connector() -> sqla_jobs.BaseConnector:
    kind = os.environ.get("CHAOS_CONNECTOR", "psycopg")
    if kind == "psycopg":
        # CHAOS_APP_NAME names the worker's sessions in pg_stat_activity (application_name).
        name = os.environ.get("CHAOS_APP_NAME", "chaos_worker")
        return sqla_jobs.PsycopgConnector(
            conninfo=URL, kwargs={"connect_timeout": 5, "application_name": name}
        )
    if kind == "psycopg_pgbouncer":
        # As the README shows for PgBouncer in transaction mode.
        return sqla_jobs.PsycopgConnector(
            pool_factory=psycopg_pool.AsyncNullConnectionPool,
            conninfo=URL,
            kwargs={"prepare_threshold": None},
        )
    if kind == "aiopg":
        return sqla_jobs.AiopgConnector(URL)
    if kind == "sqlalchemy_async":
        return sqla_jobs.SQLAlchemyAsyncConnector(dsn=URL)
    raise ValueError(f"CHAOS_CONNECTOR={kind!r}")


app = sqla_jobs.App(connector=_connector())

_ledger: psycopg.AsyncConnection[Any] | None = None
_connecting: asyncio.Lock | None = None


async def _ledger_connection() -> psycopg.AsyncConnection[Any]:
    """The process's one ledger connection. Under a lock: hundreds of jobs starting together
    would otherwise each open one (and the server refuse clients)."""
    global _ledger, _connecting
    if _connecting is None:
        _connecting = asyncio.Lock()
    async with _connecting:
        if _ledger is None or _ledger.closed:
            # No prepared statements: the ledger may be reached through PgBouncer.
            _ledger = await psycopg.AsyncConnection.connect(
                URL, autocommit=True, prepare_threshold=None
            )
        return _ledger


async def _ledger_execute(sql: str, params: tuple[Any, ...]) -> Any:
    """Run one ledger statement, reconnecting through an outage (for up to a minute)."""
    global _ledger
    for _ in range(600):
        ledger = None
        try:
            ledger = await _ledger_connection()
            cursor = await ledger.execute(sql, params)
            return await cursor.fetchone() if cursor.description else None
        except psycopg.OperationalError:
            if ledger is not None and _ledger is ledger:
                _ledger = None  # the next statement connects again (under the lock)
            await asyncio.sleep(0.1)
    raise RuntimeError("the ledger stayed unreachable for a minute")


@app.task(
    name="chaos.run",
    pass_context=True,
    retry=sqla_jobs.RetryStrategy(max_attempts=20),
)
async def run(context: sqla_jobs.JobContext, seconds: float = 0.0, key: str = "") -> None:
    """Record a run: its start at once, its end after ``seconds``. The ledger's exclusion
    constraint refuses two runs of one ``key`` that overlap in time (the locks scenario)."""
    job = context.job
    if not seconds and not key:
        # An instant run: one row, one statement.
        await _ledger_execute(
            "INSERT INTO chaos_ledger (job_id, attempt, pid, started_at, finished_at) "
            "VALUES (%s, %s, %s, clock_timestamp(), clock_timestamp())",
            (job.id, job.attempts, os.getpid()),
        )
        return
    row = await _ledger_execute(
        "INSERT INTO chaos_ledger (job_id, attempt, pid, key, started_at) "
        "VALUES (%s, %s, %s, %s, clock_timestamp()) RETURNING id",
        (job.id, job.attempts, os.getpid(), key or None),
    )
    if seconds:
        await asyncio.sleep(seconds)
    await _ledger_execute(
        "UPDATE chaos_ledger SET finished_at = clock_timestamp() WHERE id = %s", (row[0],)
    )
