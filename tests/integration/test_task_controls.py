"""Execution controls, through the public API and real workers: a task's timeout (async tasks
cancelled, sync tasks asked to stop and, past a grace, failed while their thread ends on its
own), and a task that snoozes or cancels its own job.

Tests of what only the executor decides run on psycopg alone; those whose outcome goes through
the finish statement run once per async connector.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from test_lifecycle import drain, running_worker, wait_for_status

import sqla_jobs
from sqla_jobs import JobStatus
from sqla_jobs.worker.executor import TIMEOUT_GRACE

if TYPE_CHECKING:
    from conftest import Database

UTC = datetime.UTC


@pytest.fixture
async def psycopg_app(db_url: str) -> AsyncIterator[sqla_jobs.App]:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    async with app.open_async():
        yield app


async def labels(app: sqla_jobs.App, job_id: int) -> list[str]:
    return [event.label for event in await app.job_manager.get_job_history_async(job_id)]


# -- timeouts ----------------------------------------------------------------------------------


async def test_async_task_past_its_timeout_is_cancelled_and_fails_and_the_worker_goes_on(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app
    seen: list[str] = []

    @app.task(name="tests.slow_async", timeout=0.5)
    async def slow_async() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    @app.task(name="tests.next_one")
    async def next_one() -> None:
        seen.append("next job ran")

    job_id = await slow_async.defer_async()
    began = time.monotonic()
    async with running_worker(app, database, concurrency=1):
        await wait_for_status(database, job_id, "failed", within=15)
        took = time.monotonic() - began
        after = await next_one.defer_async()
        await wait_for_status(database, after, "succeeded", within=10)

    assert seen == ["cancelled", "next job ran"]
    assert 0.4 < took < 10
    job = await app.job_manager.get_job_async(job_id)
    assert job.attempts == 1 and job.last_error is not None
    assert job.last_error.rstrip().splitlines()[-1] == (
        f"sqla_jobs.errors.JobTimeout: Job {job_id} (tests.slow_async) ran past its task's "
        "timeout of 0.5 s; it was cancelled."
    )
    assert "in slow_async" in job.last_error  # where the task was when it was stopped
    assert await labels(app, job_id) == ["todo", "doing", "failed (timed out)"]


async def test_sync_task_past_its_timeout_sees_should_abort_and_fails_once_it_stops(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app
    asked_after: list[float] = []

    @app.task(name="tests.slow_sync", timeout=0.5, pass_context=True)
    def slow_sync(context: sqla_jobs.JobContext) -> None:
        started = time.monotonic()
        while time.monotonic() - started < 20:
            if context.should_abort():
                asked_after.append(time.monotonic() - started)
                return  # a partial result: the job still timed out
            time.sleep(0.01)

    job_id = await slow_sync.defer_async()
    await drain(app)

    assert len(asked_after) == 1 and 0.4 < asked_after[0] < 10
    job = await app.job_manager.get_job_async(job_id)
    assert job.status is JobStatus.FAILED and job.last_error is not None
    assert (
        job.last_error.rstrip()
        .splitlines()[-1]
        .endswith(
            "ran past its task's timeout of 0.5 s; asked to stop (should_abort()), it stopped."
        )
    )
    assert await labels(app, job_id) == ["todo", "doing", "failed (timed out)"]


async def test_sync_task_ignoring_its_timeout_fails_after_the_grace_and_keeps_its_slot(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    """A thread cannot be interrupted: the job is recorded failed after the grace while its
    thread runs on; the worker (concurrency 1) starts nothing else until the thread ends; the
    task's late return is not written over the failure."""
    app = psycopg_app
    release = threading.Event()
    events: list[str] = []

    @app.task(name="tests.stuck", timeout=0.3)
    def stuck() -> str:
        events.append("stuck started")
        release.wait(30)  # never looks at should_abort()
        events.append("stuck returned")
        return "a late result"

    @app.task(name="tests.after")
    def after() -> None:
        events.append("after ran")

    job_id = await stuck.defer_async()
    next_id = await after.defer_async()
    async with running_worker(app, database, concurrency=1):
        try:
            await wait_for_status(database, job_id, "failed", within=10 + TIMEOUT_GRACE)
            await asyncio.sleep(0.5)
            assert events == ["stuck started"], "another job ran beside the leftover thread"
        finally:
            release.set()
        await wait_for_status(database, next_id, "succeeded", within=10)

    assert events == ["stuck started", "stuck returned", "after ran"]
    job = database.job(job_id)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert (
        "its thread, which cannot be interrupted, is left to end (the traceback shows where "
        "it was)." in job["last_error"]
    )
    assert "in stuck" in job["last_error"]  # where the thread was at the grace's end
    assert await labels(app, job_id) == ["todo", "doing", "failed (timed out)"]


async def test_timed_out_job_runs_again_when_its_retry_strategy_says_so(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app
    runs: list[int] = []

    @app.task(name="tests.second_run_is_quick", timeout=0.3, retry=1, pass_context=True)
    async def second_run_is_quick(context: sqla_jobs.JobContext) -> None:
        runs.append(context.job.attempts)
        if context.job.attempts == 1:
            await asyncio.sleep(30)

    job_id = await second_run_is_quick.defer_async()
    await drain(app)

    assert runs == [1, 2]
    assert (await app.job_manager.get_job_async(job_id)).status is JobStatus.SUCCEEDED
    assert await labels(app, job_id) == [
        "todo",
        "doing",
        "todo (timed out)",
        "doing",
        "succeeded",
    ]


@pytest.mark.parametrize("held_by", ["retry", "lock"])
async def test_timed_out_sync_job_to_retry_or_holding_a_lock_stays_running_until_its_thread_ends(
    psycopg_app: sqla_jobs.App, database: Database, held_by: str
) -> None:
    """Written at once, a retry would let the job run again, and the end of a job holding a
    lock would let the next job of that lock start, while the thread still runs: such a job
    stays running until its thread ends, whatever the worker's concurrency."""
    app = psycopg_app
    release = threading.Event()
    events: list[str] = []
    lock = "the-lock" if held_by == "lock" else None

    @app.task(name="tests.stuck", timeout=0.3, retry=1 if held_by == "retry" else 0, lock=lock)
    def stuck() -> None:
        events.append("stuck started")
        if len(events) == 1:
            release.wait(30)  # the first run ignores should_abort()
        events.append("stuck returned")

    @app.task(name="tests.same_lock", lock=lock)
    def same_lock() -> None:
        events.append("same lock ran")

    job_id = await stuck.defer_async()
    other_id = await same_lock.defer_async() if held_by == "lock" else None
    async with running_worker(app, database, concurrency=4):
        try:
            assert await database.wait_until_async(lambda: events == ["stuck started"], within=10)
            await asyncio.sleep(0.3 + TIMEOUT_GRACE + 0.7)  # past the timeout and the grace
            assert events == ["stuck started"], "ran beside the leftover thread"
            assert database.job(job_id)["status"] == "doing"
        finally:
            release.set()
        if held_by == "retry":
            await wait_for_status(database, job_id, "succeeded", within=10)
            assert events == ["stuck started", "stuck returned", "stuck started", "stuck returned"]
        else:
            assert other_id is not None
            await wait_for_status(database, other_id, "succeeded", within=10)
            assert events == ["stuck started", "stuck returned", "same lock ran"]

    expected = ["todo", "doing", "failed (timed out)"]
    if held_by == "retry":
        expected = ["todo", "doing", "todo (timed out)", "doing", "succeeded"]
    assert await labels(app, job_id) == expected


async def test_timed_out_sync_job_under_a_concurrency_limit_stays_running_until_its_thread_ends(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    """A job recorded failed while its thread still runs would free a place under its queue's
    concurrency limit, held by the database for every worker: another worker would start one
    job more than the limit. Such a job stays running until its thread ends."""
    app = psycopg_app
    release = threading.Event()
    events: list[str] = []

    @app.task(name="tests.stuck", queue="limited", timeout=0.3)
    def stuck() -> None:
        events.append("stuck started")
        release.wait(30)  # ignores should_abort()
        events.append("stuck returned")

    @app.task(name="tests.next", queue="limited")
    def next_job() -> None:
        events.append("next ran")

    await app.job_manager.set_queue_limits_async("limited", concurrency_limit=1)
    job_id = await stuck.defer_async()
    assert await database.wait_until_async(lambda: database.job(job_id)["id"] == job_id)
    async with running_worker(app, database, concurrency=4):
        try:
            assert await database.wait_until_async(lambda: events == ["stuck started"], within=10)
            next_id = await next_job.defer_async()
            await asyncio.sleep(0.3 + TIMEOUT_GRACE + 0.7)  # past the timeout and the grace
            assert events == ["stuck started"], "the limit let a job start beside the thread"
            assert database.job(job_id)["status"] == "doing"
        finally:
            release.set()
        await wait_for_status(database, next_id, "succeeded", within=10)
    assert events == ["stuck started", "stuck returned", "next ran"]
    assert await labels(app, job_id) == ["todo", "doing", "failed (timed out)"]


async def test_task_without_timeout_is_not_stopped_and_one_that_ends_in_time_succeeds(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app

    @app.task(name="tests.in_time_async", timeout=5)
    async def in_time_async() -> str:
        await asyncio.sleep(0.05)
        return "done"

    @app.task(name="tests.in_time_sync", timeout=5, pass_context=True)
    def in_time_sync(context: sqla_jobs.JobContext) -> None:
        assert not context.should_abort()

    @app.task(name="tests.no_limit")
    async def no_limit() -> None:
        await asyncio.sleep(0.3)

    ids = [
        await in_time_async.defer_async(),
        await in_time_sync.defer_async(),
        await no_limit.defer_async(),
    ]
    await drain(app)
    assert [database.job(job_id)["status"] for job_id in ids] == ["succeeded"] * 3


async def test_aborting_a_job_with_a_timeout_still_aborts_it(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app
    started = asyncio.Event()

    @app.task(name="tests.long_with_timeout", timeout=30)
    async def long_with_timeout() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = await long_with_timeout.defer_async()
    async with running_worker(app, database):
        await asyncio.wait_for(started.wait(), timeout=10)
        await app.job_manager.abort_job_async(job_id)
        await wait_for_status(database, job_id, "aborted", within=10)
    assert database.job(job_id)["last_error"].startswith("Aborted on request.")


# -- snooze and cancel from inside -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_snoozed_job_waits_then_runs_again_without_spending_an_attempt(
    async_app: sqla_jobs.App, database: Database, kind: str
) -> None:
    """No retry left (none allowed), yet the job runs again: a snooze is not an attempt."""
    app = async_app
    runs: list[tuple[int, float]] = []

    def body(context: sqla_jobs.JobContext) -> None:
        runs.append((context.job.attempts, time.monotonic()))
        if len(runs) == 1:
            raise sqla_jobs.Snooze(seconds=1, reason="the partner API is rate-limited")

    if kind == "async":

        @app.task(name="tests.snoozy", pass_context=True)
        async def snoozy(context: sqla_jobs.JobContext) -> None:
            body(context)

    else:

        @app.task(name="tests.snoozy", pass_context=True)
        def snoozy(context: sqla_jobs.JobContext) -> None:
            body(context)

    job_id = await snoozy.defer_async()
    async with running_worker(app, database):
        assert await database.wait_until_async(lambda: len(runs) == 1, within=10)
        await wait_for_status(database, job_id, "todo", within=10)
        waiting = database.job(job_id)
        assert waiting["attempts"] == 0 and waiting["worker_id"] is None
        assert waiting["scheduled_at"] > datetime.datetime.now(UTC)
        await wait_for_status(database, job_id, "succeeded", within=15)

    assert [attempts for attempts, _ in runs] == [1, 1]
    assert runs[1][1] - runs[0][1] >= 0.9
    job = await app.job_manager.get_job_async(job_id)
    assert job.attempts == 1
    history = await app.job_manager.get_job_history_async(job_id)
    assert [event.label for event in history] == [
        "todo",
        "doing",
        "todo (snoozed)",
        "doing",
        "succeeded",
    ]
    assert history[2].error == "Snoozed by the task for 1 s: the partner API is rate-limited"


async def test_snooze_of_a_job_whose_queueing_lock_another_waiting_job_holds_fails_it_saying_so(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """As for a retry: a job's queueing lock is free while it runs, so a twin may wait
    meanwhile; only one job may wait per queueing lock, so the snooze is refused."""
    app = async_app

    @app.task(name="tests.feed", queueing_lock="feed")
    async def feed(n: int) -> None:
        if n == 1:
            # The twin waits (scheduled later, so that no worker takes it meanwhile).
            await feed.configure(schedule_in={"seconds": 60}).defer_async(n=2)
            raise sqla_jobs.Snooze(seconds=60)

    first = await feed.defer_async(n=1)
    await drain(app)
    job = database.job(first)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert job["last_error"] == (
        "Snoozed by the task for 60 s\n\nNot snoozed: another job with this job's queueing "
        "lock is already waiting, and only one may wait at a time."
    )


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_task_cancels_its_own_job_with_a_reason_and_it_is_never_retried(
    async_app: sqla_jobs.App, database: Database, kind: str
) -> None:
    app = async_app
    runs: list[int] = []

    if kind == "async":

        @app.task(name="tests.pointless", retry=3)
        async def pointless(order_id: int) -> None:
            runs.append(order_id)
            raise sqla_jobs.CancelJob(f"order {order_id} was deleted")

    else:

        @app.task(name="tests.pointless", retry=3)
        def pointless(order_id: int) -> None:
            runs.append(order_id)
            raise sqla_jobs.CancelJob(f"order {order_id} was deleted")

    job_id = await pointless.defer_async(order_id=7)
    await drain(app)

    assert runs == [7]
    job = await app.job_manager.get_job_async(job_id)
    assert (job.status, job.attempts) == (JobStatus.CANCELLED, 1)
    assert job.last_error == "Cancelled by the task: order 7 was deleted"
    assert job.finished_at is not None and job.worker_id is not None
    history = await app.job_manager.get_job_history_async(job_id)
    assert [event.label for event in history] == ["todo", "doing", "cancelled (by the task)"]
    assert history[-1].error == "Cancelled by the task: order 7 was deleted"


async def test_a_job_cancelled_while_waiting_shows_no_older_error_in_its_history(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    """Only a cancel by the task carries an error: a waiting job's last error (a retry's) is
    not the reason it was cancelled."""
    app = psycopg_app

    @app.task(name="tests.retried_later", retry=sqla_jobs.RetryStrategy(max_attempts=2, wait=3600))
    async def retried_later() -> None:
        raise ConnectionError("down")

    job_id = await retried_later.defer_async()
    await drain(app)
    assert await app.job_manager.cancel_job_async(job_id)
    history = await app.job_manager.get_job_history_async(job_id)
    assert [(event.label, event.error is None) for event in history] == [
        ("todo", True),
        ("doing", True),
        ("todo", False),
        ("cancelled", True),
    ]


async def test_snooze_after_an_abort_request_ends_the_job_aborted(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app
    started = threading.Event()

    @app.task(name="tests.snooze_when_asked", pass_context=True)
    def snooze_when_asked(context: sqla_jobs.JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 20
        while not context.should_abort() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise sqla_jobs.Snooze(seconds=10)

    job_id = await snooze_when_asked.defer_async()
    async with running_worker(app, database):
        assert await asyncio.to_thread(started.wait, 10)
        await app.job_manager.abort_job_async(job_id)
        await wait_for_status(database, job_id, "aborted", within=10)


async def test_a_bad_snooze_fails_the_job_with_the_reason(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    app = psycopg_app

    @app.task(name="tests.bad_snooze")
    async def bad_snooze() -> None:
        raise sqla_jobs.Snooze(seconds=-5)

    job_id = await bad_snooze.defer_async()
    await drain(app)
    job = database.job(job_id)
    assert job["status"] == "failed"
    assert (
        "InvalidJobOptions: Snooze(seconds=-5): give a number of seconds, 0 or more"
        in (job["last_error"])
    )


# -- the stop ----------------------------------------------------------------------------------


async def test_a_sync_task_still_running_at_the_stop_keeps_seeing_should_abort_until_it_returns(
    psycopg_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the shutdown timeout a sync task is asked to stop: should_abort() stays true while
    its thread runs (it did for one loop turn only, so a task checking it now and then missed
    it, and its job was held back stalled_timeout as if it had ignored the request)."""
    app = psycopg_app
    started = threading.Event()
    stopped: list[bool] = []

    @app.task(name="tests.checks_now_and_then", pass_context=True)
    def checks_now_and_then(context: sqla_jobs.JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if context.should_abort():
                stopped.append(True)
                return
            time.sleep(0.3)

    job_id = await checks_now_and_then.defer_async()
    async with running_worker(app, database, shutdown_timeout=0.1):
        assert await asyncio.to_thread(started.wait, 10)
    assert stopped == [True]
    job = database.job(job_id)
    assert (job["status"], job["scheduled_at"]) == ("todo", None)  # not held back
    assert not any("still run in their threads" in r.getMessage() for r in caplog.records)
