"""Stalled jobs, once per async connector: a job whose worker stopped heartbeating (killed,
lost) is recovered by a live worker, as its task's retry strategy says, exactly once however
many workers sweep at once; and the heartbeat's poll delivers aborts without LISTEN.

A dead worker is a row of ``sqla_jobs_workers`` whose heartbeat is an hour old, with a job
``doing`` under its id, as a worker killed by SIGKILL leaves them (tests/acceptance kills a
real one).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs import JobStatus, RetryStrategy
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Connectors, Database

# Recovering workers: a heartbeat every 0.1 s, a worker silent for 1 s is dead.
FAST = {"heartbeat_interval": 0.1, "stalled_timeout": 1.0}


@contextlib.asynccontextmanager
async def live_worker(app: sqla_jobs.App, **options: Any) -> AsyncIterator[sqla_jobs.Worker]:
    """A waiting worker with a fast heartbeat, stopped (and awaited) on exit."""
    options = {"polling_interval": 0.05, "install_signal_handlers": False, **FAST, **options}
    worker = sqla_jobs.Worker(app, sqla_jobs.WorkerOptions(**options))
    running = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)


def dead_worker(database: Database, name: str = "dead-worker", silent_for: float = 3600) -> int:
    """A worker row whose last heartbeat is ``silent_for`` seconds old; its id."""
    return int(
        database.scalar(
            "INSERT INTO sqla_jobs_workers (name, hostname, pid, concurrency, last_heartbeat) "
            "VALUES (%s, 'lost-host', 4242, 4, now() - make_interval(secs => %s)) RETURNING id",
            (name, silent_for),
        )
    )


def make_running(
    database: Database,
    job_id: int,
    worker_id: int | None,
    *,
    attempts: int = 1,
    aborting: bool = False,
) -> None:
    """Put a deferred job where a claim leaves it (doing, attempts counted, under
    ``worker_id``), and optionally where abort_job then leaves it (aborting)."""
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'doing', attempts = %s, worker_id = %s, "
        "started_at = now() WHERE id = %s",
        (attempts, worker_id, job_id),
    )
    if aborting:
        database.conn.execute(
            "UPDATE sqla_jobs_jobs SET status = 'aborting' WHERE id = %s", (job_id,)
        )


async def wait_for_status(database: Database, job_id: int, status: str, within: float = 5) -> None:
    reached = await database.wait_until_async(
        lambda: database.job(job_id)["status"] == status, within=within
    )
    assert reached, f"job {job_id} is {database.job(job_id)['status']}, not {status}"


def worker_ids(database: Database) -> list[int]:
    return [row["id"] for row in database.rows("SELECT id FROM sqla_jobs_workers ORDER BY id")]


# -- the retry strategy decides ------------------------------------------------------------------


async def test_job_of_a_dead_worker_is_retried_by_a_live_worker_when_its_strategy_allows(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    @async_app.task(name="tests.report", retry=2, pass_context=True)
    async def report(context: sqla_jobs.JobContext) -> None:
        ran.append(context.job.attempts)

    job_id = await report.defer_async()
    dead = dead_worker(database, "lost-worker")
    make_running(database, job_id, dead, attempts=1)

    with caplog.at_level(logging.WARNING, logger="sqla_jobs.worker"):
        async with live_worker(async_app, name="rescuer") as rescuer:
            await wait_for_status(database, job_id, "succeeded")

    assert ran == [2], "the lost run counts as an attempt"
    job = database.job(job_id)
    assert job["attempts"] == 2
    events = database.events(job_id)
    assert [event["status"] for event in events] == ["todo", "doing", "todo", "doing", "succeeded"]
    error = events[2]["error"]
    assert error.startswith("Recovered from a stalled worker: ")
    assert f"worker 'lost-worker' (id {dead}) stopped heartbeating" in error
    assert f"Worker 'rescuer' (id {rescuer.worker_id}) recovered the job" in error
    assert "retry strategy allows another run, in 0 s" in error
    assert dead not in worker_ids(database), "the dead worker is unregistered"

    (record,) = [r for r in caplog.records if "recovered from a stalled worker" in r.getMessage()]
    assert record.levelno == logging.WARNING
    fields = record.__dict__
    assert (fields["job_id"], fields["task"], fields["attempt"]) == (job_id, "tests.report", 1)
    assert (fields["stalled_worker"], fields["stalled_worker_id"]) == ("lost-worker", dead)
    assert fields["status"] == "todo"
    assert any("Removed stalled worker 'lost-worker'" in r.getMessage() for r in caplog.records)


async def test_job_of_a_dead_worker_with_no_retry_left_fails_naming_the_worker(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.report", retry=1)
    async def report() -> None:
        raise AssertionError("a job with no retry left must not run again")

    job_id = await report.defer_async()
    dead = dead_worker(database, "lost-worker")
    make_running(database, job_id, dead, attempts=2)

    async with live_worker(async_app):
        await wait_for_status(database, job_id, "failed")

    job = database.job(job_id)
    assert job["attempts"] == 2
    assert job["finished_at"] is not None
    assert job["worker_id"] == dead, "a finished job keeps the worker that ran it"
    assert f"worker 'lost-worker' (id {dead}) stopped heartbeating" in job["last_error"]
    assert "no retry is left after 2 attempts (max_attempts=2)" in job["last_error"]
    assert database.events(job_id)[-1] == {"status": "failed", "error": job["last_error"]}


async def test_job_of_a_dead_worker_whose_task_never_retries_fails(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.charge")
    async def charge() -> None:
        raise AssertionError("a task without retry must not run again")

    job_id = await charge.defer_async()
    make_running(database, job_id, dead_worker(database))

    async with live_worker(async_app):
        await wait_for_status(database, job_id, "failed")

    assert "its task has no retry strategy, so the job fails" in database.job(job_id)["last_error"]


async def test_retry_of_a_stalled_job_waits_as_its_strategy_says_whatever_its_exceptions(
    async_app: sqla_jobs.App, database: Database
) -> None:
    strategy = RetryStrategy(max_attempts=3, wait=30, retry_exceptions=(ConnectionError,))

    @async_app.task(name="tests.sync_partner", retry=strategy)
    async def sync_partner() -> None:
        pass

    job_id = await sync_partner.defer_async()
    make_running(database, job_id, dead_worker(database))

    async with live_worker(async_app):
        await wait_for_status(database, job_id, "todo")

    job = database.job(job_id)
    wait = job["scheduled_at"] - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=25) < wait <= datetime.timedelta(seconds=30)
    assert (job["worker_id"], job["finished_at"]) == (None, None)
    assert "allows another run, in 30 s" in job["last_error"]


async def test_aborting_job_of_a_dead_worker_ends_aborted(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.export", retry=5)
    async def export() -> None:
        raise AssertionError("an aborted job must not run again")

    job_id = await export.defer_async()
    make_running(database, job_id, dead_worker(database, "lost-worker"), aborting=True)

    async with live_worker(async_app):
        await wait_for_status(database, job_id, "aborted")

    job = database.job(job_id)
    assert "it was being aborted, so it is recorded aborted" in job["last_error"]
    history = [event["status"] for event in database.events(job_id)]
    assert history == ["todo", "doing", "aborting", "aborted"]


@pytest.mark.parametrize("worker_row", ["gone", "never recorded"])
async def test_running_job_without_a_registered_worker_is_recovered_at_once(
    async_app: sqla_jobs.App, database: Database, worker_row: str
) -> None:
    ran = asyncio.Event()

    @async_app.task(name="tests.report", retry=1)
    async def report() -> None:
        ran.set()

    job_id = await report.defer_async()
    make_running(database, job_id, 987_654 if worker_row == "gone" else None)

    # A long stalled timeout: only the missing row makes the job stalled.
    async with live_worker(async_app, heartbeat_interval=0.1, stalled_timeout=3600):
        await wait_for_status(database, job_id, "succeeded")

    assert ran.is_set()
    error = database.events(job_id)[2]["error"]
    expected = {
        "gone": "its worker (id 987654) is no longer registered",
        "never recorded": "no worker is recorded for this running job",
    }[worker_row]
    assert expected in error


# -- what is left alone --------------------------------------------------------------------------


async def test_jobs_of_live_workers_and_workers_within_the_timeout_are_left_alone(
    async_app: sqla_jobs.App, database: Database
) -> None:
    worker_db = WorkerDatabase(async_app.connector)

    @async_app.task(name="tests.report", retry=3)
    async def report() -> None:
        pass

    sweeper = await worker_db.register_worker(name="sweeper", queues=None, concurrency=1)
    quiet = dead_worker(database, "quiet-for-30-s", silent_for=30)
    own, of_quiet = await report.defer_async(), await report.defer_async()
    make_running(database, own, sweeper)
    make_running(database, of_quiet, quiet)

    recovered = await worker_db.recover_stalled_jobs(
        worker_id=sweeper,
        worker_name="sweeper",
        stalled_timeout=60,
        strategies={"tests.report": report.retry},
    )
    removed = await worker_db.delete_stalled_workers(worker_id=sweeper, stalled_timeout=60)

    assert (recovered, removed) == ([], [])
    assert [database.job(job_id)["status"] for job_id in (own, of_quiet)] == ["doing", "doing"]
    assert worker_ids(database) == sorted([sweeper, quiet])


async def test_dead_worker_without_jobs_is_unregistered(
    async_app: sqla_jobs.App, database: Database
) -> None:
    dead = dead_worker(database, "idle-and-dead")

    async with live_worker(async_app) as worker:
        gone = await database.wait_until_async(lambda: dead not in worker_ids(database))
        assert gone, worker_ids(database)
        assert worker_ids(database) == [worker.worker_id]


# -- a task this worker does not know -----------------------------------------------------------


async def test_job_of_a_task_the_worker_does_not_know_goes_back_once_then_fails(
    async_app: sqla_jobs.App, database: Database
) -> None:
    job_id = await async_app.configure_task("tests.elsewhere", queue="reports").defer_async()
    make_running(database, job_id, dead_worker(database))

    # This worker serves another queue: it recovers the job but never claims it.
    async with live_worker(async_app, queues=["mail"]):
        await wait_for_status(database, job_id, "todo")
        first = database.job(job_id)["last_error"]
        assert "does not know task 'tests.elsewhere'" in first
        assert "goes back to the queue once" in first

        # Its next run (on a worker of the 'reports' queue) is lost too.
        make_running(database, job_id, dead_worker(database, "second-loss"), attempts=2)
        await wait_for_status(database, job_id, "failed")

    error = database.job(job_id)["last_error"]
    assert "the job's previous run stalled too, so it fails rather than loop" in error
    assert f"sqla-jobs jobs retry {job_id}" in error


# -- concurrency -------------------------------------------------------------------------------


async def test_sweeps_running_at_once_recover_each_stalled_job_exactly_once(
    async_app: sqla_jobs.App,
    async_connector_kind: str,
    db_url: str,
    database: Database,
    connectors: type[Connectors],
) -> None:
    @async_app.task(name="tests.report", retry=3)
    async def report() -> None:
        pass

    job_ids = await report.batch_defer_async(*({"n": n} for n in range(300)))
    dead = [dead_worker(database, f"dead-{n}") for n in range(3)]
    for index, job_id in enumerate(job_ids):
        make_running(database, job_id, dead[index % 3])

    # Four sweepers, two per connection pool, small batches: their statements interleave.
    other_app = sqla_jobs.App(connector=connectors.from_dsn(async_connector_kind, db_url))
    await other_app.open_async()
    try:
        managers = [WorkerDatabase(async_app.connector), WorkerDatabase(other_app.connector)] * 2
        sweepers = [
            await manager.register_worker(name=f"sweeper-{n}", queues=None, concurrency=1)
            for n, manager in enumerate(managers)
        ]
        results = await asyncio.gather(
            *(
                manager.recover_stalled_jobs(
                    worker_id=sweeper,
                    worker_name=f"sweeper-{n}",
                    stalled_timeout=60,
                    strategies={"tests.report": report.retry},
                    batch_size=7,
                )
                for n, (manager, sweeper) in enumerate(zip(managers, sweepers, strict=True))
            )
        )
        removed = await asyncio.gather(
            *(
                manager.delete_stalled_workers(worker_id=sweeper, stalled_timeout=60)
                for manager, sweeper in zip(managers, sweepers, strict=True)
            )
        )
    finally:
        await other_app.close_async()

    recovered = [item.job.id for result in results for item in result]
    assert sorted(recovered) == job_ids, "each job recovered once, by one sweeper"
    assert all(item.status is JobStatus.TODO for result in results for item in result)
    assert sorted(row["id"] for rows in removed for row in rows) == dead
    for job_id in job_ids:
        assert [e["status"] for e in database.events(job_id)] == ["todo", "doing", "todo"]
    assert {job["status"] for job in database.jobs()} == {"todo"}


async def test_requeue_refused_by_a_waiting_job_s_queueing_lock_fails_the_stalled_job(
    async_app: sqla_jobs.App, database: Database
) -> None:
    worker_db = WorkerDatabase(async_app.connector)

    @async_app.task(name="tests.refresh", retry=3)
    async def refresh() -> None:
        pass

    stalled = await refresh.configure(queueing_lock="refresh").defer_async()
    fine = await refresh.configure(queueing_lock="other").defer_async()
    make_running(database, stalled, dead_worker(database))
    make_running(database, fine, dead_worker(database, "another"))
    waiting = await refresh.configure(queueing_lock="refresh").defer_async()
    sweeper = await worker_db.register_worker(name="sweeper", queues=None, concurrency=1)

    recovered = await worker_db.recover_stalled_jobs(
        worker_id=sweeper,
        worker_name="sweeper",
        stalled_timeout=60,
        strategies={"tests.refresh": refresh.retry},
    )

    assert {item.job.id: item.status for item in recovered} == {
        stalled: JobStatus.FAILED,
        fine: JobStatus.TODO,
    }
    job = database.job(stalled)
    assert job["status"] == "failed"
    assert "another job with queueing_lock 'refresh' is already waiting" in job["last_error"]
    assert [database.job(job_id)["status"] for job_id in (fine, waiting)] == ["todo", "todo"]


# -- the heartbeat's other duties -----------------------------------------------------------------


async def test_worker_that_does_not_listen_still_aborts_a_running_job(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started = asyncio.Event()

    @async_app.task(name="tests.slow")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    job_id = await slow.defer_async()
    async with live_worker(async_app, listen_notify=False):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert not database.listening()
        assert await async_app.job_manager.abort_job_async(job_id) is JobStatus.ABORTING
        await wait_for_status(database, job_id, "aborted", within=3)

    assert database.job(job_id)["last_error"].startswith("Aborted on request.")


async def test_worker_whose_row_was_removed_registers_again_under_the_same_id(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="sqla_jobs.worker"):
        async with live_worker(async_app, name="paused") as worker:
            assert await database.wait_until_async(lambda: worker.worker_id in worker_ids(database))
            database.conn.execute("DELETE FROM sqla_jobs_workers")
            back = await database.wait_until_async(lambda: worker_ids(database) != [], within=3)
            assert back
            assert worker_ids(database) == [worker.worker_id]
            row = database.rows("SELECT name FROM sqla_jobs_workers")[0]
            assert row["name"] == "paused"
    assert any("was declared stalled by another worker" in r.getMessage() for r in caplog.records)


async def test_job_asked_to_abort_while_its_recovery_is_planned_ends_aborted_and_finished(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """The sweep adopts a doing job and plans a retry; if abort_job comes in before the plan
    is written, the job ends aborted, with its finish time, not back in the queue."""
    from sqla_jobs import queries

    job_id = await async_app.configure_task("tests.export").defer_async()
    rescuer = await WorkerDatabase(async_app.connector).register_worker(
        name="rescuer", queues=None, concurrency=1
    )
    make_running(database, job_id, rescuer, aborting=True)  # adopted, then asked to abort

    await async_app.connector.execute_async(
        queries.finish_recovered_jobs,
        {
            "worker_id": rescuer,
            "ids": [job_id],
            "statuses": ["todo"],
            "errors": ["Recovered from a stalled worker: retried"],
            "retry_ats": [None],
            "stalled_worker_ids": [None],
        },
    )

    job = database.job(job_id)
    assert job["status"] == "aborted"
    assert job["finished_at"] is not None
