"""A server-side bound on statements alone (`Statements.bounded`, used by the dashboard):
through every connector, sync and async, a bounded statement reads what the unbounded one
reads, one that runs too long is cancelled by the server with a `StatementCancelled` that
says why, and no pooled connection keeps the setting (the host's own Engine shares them)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import sqla_jobs
from sqla_jobs import operations as ops
from sqla_jobs.queries import Query, Statements

if TYPE_CHECKING:
    from conftest import Database

SETTING = Query("current_statement_timeout", "SELECT current_setting('statement_timeout') AS t")


async def runs(app: sqla_jobs.App, operation: Any, statements: Statements) -> list[tuple[str, Any]]:
    """``operation()`` run through the connector's sync methods (in a thread) and, for a
    connector that has them, its async ones: [(how, result or exception)]."""
    results: list[tuple[str, Any]] = []

    def sync() -> Any:
        return ops.run(app.connector, operation(), statements)

    ways: list[tuple[str, Any]] = [("sync", lambda: asyncio.to_thread(sync))]
    if app.connector.can_run_worker:
        ways.append(("async", lambda: ops.run_async(app.connector, operation(), statements)))
    for how, call in ways:
        try:
            results.append((how, await call()))
        except sqla_jobs.JobsError as exc:
            results.append((how, exc))
    return results


async def settings_of_pooled_connections(app: sqla_jobs.App) -> set[str]:
    """The statement_timeout each of the connector's pooled connections has (the pools hand
    out their idle connections in turn: 20 statements go round all of them)."""
    seen = set()
    for _ in range(20):
        rows = await asyncio.to_thread(app.connector.fetch_all, SETTING)
        seen.add(rows[0]["t"])
        if app.connector.can_run_worker:
            rows = await app.connector.fetch_all_async(SETTING)
            seen.add(rows[0]["t"])
    return seen


async def test_bounded_statements_read_what_the_others_read_and_leave_no_setting_behind(
    app: sqla_jobs.App,
) -> None:
    task = app.configure_task("tests.bounded", queue="bounded")
    ids = [task.defer(n=n) for n in range(3)]
    bounded = app.statements.bounded(5)

    def listing() -> Any:
        return ops.list_jobs(
            queue="bounded", task_name=None, status=None, lock=None, limit=10, offset=0
        )

    expected = ops.run(app.connector, listing(), app.statements)
    assert sorted(job.id for job in expected) == sorted(ids)
    for how, result in await runs(app, listing, bounded):
        assert result == expected, how
    # The setting holds for the statement, and for it alone.
    with_timeout = SETTING.with_timeout(1234)
    assert (await asyncio.to_thread(app.connector.fetch_all, with_timeout))[0]["t"] == "1234ms"
    if app.connector.can_run_worker:
        assert (await app.connector.fetch_all_async(with_timeout))[0]["t"] == "1234ms"
    assert await settings_of_pooled_connections(app) == {"0"}


async def test_a_bounded_statement_that_runs_too_long_is_cancelled_by_the_server(
    app: sqla_jobs.App, database: Database
) -> None:
    task = app.configure_task("tests.bounded", queue="bounded")
    task.defer(n=1)
    bounded = app.statements.bounded(0.3)

    def listing() -> Any:
        return ops.list_jobs(
            queue="bounded", task_name=None, status=None, lock=None, limit=10, offset=0
        )

    blocker = await psycopg.AsyncConnection.connect(database.url)
    try:
        await blocker.execute("LOCK TABLE sqla_jobs_jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        results = await runs(app, listing, bounded)
        took = time.monotonic() - started
    finally:
        await blocker.rollback()
        await blocker.close()
    for how, result in results:
        assert isinstance(result, sqla_jobs.StatementCancelled), (how, result)
        assert result.sqlstate == "57014"
        message = str(result)
        assert "list_jobs" in message and "statement_timeout of 0.3 s" in message, message
        assert "narrower filters" in message, message
    # Each waited its 0.3 s, not the lock's holder: a loaded machine gets room.
    assert took < 2.0 * len(results), took
    # The connections are fine, and none keeps the setting.
    assert len(ops.run(app.connector, listing(), bounded)) == 1
    assert await settings_of_pooled_connections(app) == {"0"}


def test_a_bound_must_be_positive() -> None:
    for seconds in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="more than 0 seconds"):
            sqla_jobs.queries.DEFAULT.bounded(seconds)
    bounded = sqla_jobs.queries.DEFAULT.bounded(0.0001)
    assert bounded.timeout_ms == 1
    query = bounded[sqla_jobs.queries.list_jobs]
    assert query.timeout_ms == 1 and not query.prepared
    assert query.message_sql.startswith("SET LOCAL statement_timeout = 1; ")
