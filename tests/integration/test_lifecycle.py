"""A job's life after defer, through the public API and real workers: retries, scheduling,
cancel and abort, history, and the job manager (list, retry, delete, prune).

Worker tests run once per async connector; the manager's own operations once per connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs import JobStatus, RetryStrategy
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Database

UTC = datetime.UTC


@contextlib.asynccontextmanager
async def running_worker(
    app: sqla_jobs.App, database: Database, **options: Any
) -> AsyncIterator[sqla_jobs.Worker]:
    """A waiting worker polling every 0.1 s, listening (so aborts reach it) before the body
    runs, and stopped after it."""
    worker = sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(
            **{"wait": True, "polling_interval": 0.1, "install_signal_handlers": False, **options}
        ),
    )
    task = asyncio.create_task(worker.run())
    try:
        assert await database.wait_until_async(database.listening), "the worker never listened"
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)


async def drain(app: sqla_jobs.App) -> None:
    """Run a worker until no runnable job is left (wait=False)."""
    await asyncio.wait_for(
        app.run_worker_async(wait=False, install_signal_handlers=False, polling_interval=0.05),
        timeout=20,
    )


def status_of(database: Database, job_id: int) -> str:
    return str(database.job(job_id)["status"])


async def wait_for_status(database: Database, job_id: int, status: str, within: float = 10) -> None:
    reached = await database.wait_until_async(
        lambda: status_of(database, job_id) == status, within=within
    )
    assert reached, f"job {job_id} is {status_of(database, job_id)}, not {status}"


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_job_retried_twice_runs_three_times_then_fails_keeping_the_last_error(
    async_app: sqla_jobs.App, database: Database, kind: str
) -> None:
    runs: list[int] = []

    if kind == "async":

        @async_app.task(name="tests.flaky", retry=2)
        async def flaky() -> None:
            runs.append(1)
            raise ConnectionError(f"try {len(runs)} failed")

    else:

        @async_app.task(name="tests.flaky", retry=2)
        def flaky() -> None:
            runs.append(1)
            raise ConnectionError(f"try {len(runs)} failed")

    job_id = await flaky.defer_async()
    await drain(async_app)

    assert len(runs) == 3
    job = await async_app.job_manager.get_job_async(job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 3)
    assert job.last_error is not None and "ConnectionError: try 3 failed" in job.last_error
    history = await async_app.job_manager.get_job_history_async(job_id)
    assert [event.status for event in history] == [
        JobStatus.TODO,
        JobStatus.DOING,
        JobStatus.TODO,
        JobStatus.DOING,
        JobStatus.TODO,
        JobStatus.DOING,
        JobStatus.FAILED,
    ]
    errors = [event.error for event in history if event.error is not None]
    assert len(errors) == 3
    for attempt, error in enumerate(errors, start=1):
        assert f"ConnectionError: try {attempt} failed" in error


async def test_job_that_succeeds_on_a_retry_ends_succeeded(
    async_app: sqla_jobs.App, database: Database
) -> None:
    runs: list[int] = []

    @async_app.task(name="tests.second_time_lucky", retry=5)
    async def second_time_lucky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise TimeoutError("first try")

    job_id = await second_time_lucky.defer_async()
    await drain(async_app)

    assert len(runs) == 2
    job = database.job(job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert "TimeoutError: first try" in job["last_error"]  # the last error is kept


async def test_retry_refused_by_a_waiting_job_with_its_queueing_lock_fails_and_others_finish(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """A job's queueing lock is free while it runs, so a twin may be deferred meanwhile; if the
    job then fails and would retry, the twin already waits: the job fails saying why, and the
    outcomes written with it in the same batch are recorded all the same."""
    ran: list[str] = []

    @async_app.task(name="tests.sync_feed", retry=3, queueing_lock="feed")
    async def sync_feed(n: int) -> None:
        ran.append(f"feed {n}")
        if n == 1:
            # The twin waits (scheduled later, so that no worker takes it meanwhile).
            await sync_feed.configure(schedule_in={"seconds": 60}).defer_async(n=2)
            raise ConnectionError("feed down")

    @async_app.task(name="tests.other")
    async def other() -> None:
        ran.append("other")

    first = await sync_feed.defer_async(n=1)
    bystander = await other.defer_async()
    await drain(async_app)

    job = database.job(first)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "ConnectionError: feed down" in job["last_error"]
    assert (
        "Not retried: another job with this job's queueing lock is already waiting"
        in (job["last_error"])
    )
    assert database.job(bystander)["status"] == "succeeded"
    twin = next(j for j in database.jobs() if j["id"] not in (first, bystander))
    assert (twin["status"], twin["queueing_lock"]) == ("todo", "feed")
    assert sorted(ran) == ["feed 1", "other"]


async def test_outcome_of_a_job_another_worker_took_over_is_not_written(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """A worker taken for dead may still finish its job late; by then the job belongs to
    whoever recovered it, and the late outcome changes nothing."""
    from sqla_jobs.worker.outcomes import Outcome

    worker_db = WorkerDatabase(async_app.connector)
    job_id = await async_app.configure_task("tests.slow").defer_async()
    zombie = await worker_db.register_worker(name="zombie", queues=None, concurrency=1)
    rescuer = await worker_db.register_worker(name="rescuer", queues=None, concurrency=1)
    [claimed] = await worker_db.claim(worker_id=zombie, queues=None, limit=1)
    database.rows(
        "UPDATE sqla_jobs_jobs SET worker_id = %(w)s WHERE id = %(id)s RETURNING id",
        {"w": rescuer, "id": job_id},
    )

    attempt = claimed.attempts
    await worker_db.finish_succeeded(zombie, [job_id], [attempt], delete=False)
    await worker_db.finish(zombie, [Outcome(job_id, attempt, JobStatus.FAILED, "late")])
    await worker_db.finish_succeeded(zombie, [job_id], [attempt], delete=True)
    assert (database.job(job_id)["status"], database.job(job_id)["worker_id"]) == (
        "doing",
        rescuer,
    )

    await worker_db.finish_succeeded(rescuer, [job_id], [attempt], delete=False)
    assert database.job(job_id)["status"] == "succeeded"
    assert claimed.id == job_id


@pytest.mark.parametrize("late", ["succeeded", "failed", "deleted"])
async def test_late_outcome_of_an_earlier_attempt_under_the_same_worker_is_not_written(
    async_app: sqla_jobs.App, database: Database, late: str
) -> None:
    """A worker declared stalled registers again under its own id, and may claim the job it
    was running anew: the outcome of its first attempt, written late, must not end the second
    one, which is still running."""
    from sqla_jobs.worker.outcomes import Outcome

    worker_db = WorkerDatabase(async_app.connector)
    job_id = await async_app.configure_task("tests.slow").defer_async()
    worker = await worker_db.register_worker(name="paused", queues=None, concurrency=1)
    [first] = await worker_db.claim(worker_id=worker, queues=None, limit=1)
    # Recovered while the worker was paused: back in the queue, then claimed by it again.
    database.rows(
        "UPDATE sqla_jobs_jobs SET status = 'todo', worker_id = NULL WHERE id = %(id)s "
        "RETURNING id",
        {"id": job_id},
    )
    [second] = await worker_db.claim(worker_id=worker, queues=None, limit=1)
    assert (first.id, first.attempts, second.id, second.attempts) == (job_id, 1, job_id, 2)

    if late == "succeeded":
        await worker_db.finish_succeeded(worker, [job_id], [first.attempts], delete=False)
    elif late == "failed":
        failed = Outcome(job_id, first.attempts, JobStatus.FAILED, "late")
        await worker_db.finish(worker, [failed])
    else:
        await worker_db.finish_succeeded(worker, [job_id], [first.attempts], delete=True)
    row = database.job(job_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("doing", 2, None)

    await worker_db.finish_succeeded(worker, [job_id], [second.attempts], delete=False)
    assert database.job(job_id)["status"] == "succeeded"


async def test_retry_waits_the_strategy_delay_before_the_next_attempt(
    async_app: sqla_jobs.App, database: Database
) -> None:
    run_times: list[float] = []

    @async_app.task(name="tests.later", retry=RetryStrategy(max_attempts=2, wait=1))
    async def later() -> None:
        run_times.append(time.monotonic())
        raise RuntimeError("not yet")

    job_id = await later.defer_async()
    async with running_worker(async_app, database):
        # Back in the queue after its first run (the job starts in 'todo' too: wait for that run).
        back = await database.wait_until_async(
            lambda: (job := database.job(job_id))["status"] == "todo" and job["attempts"] == 1,
            within=5,
        )
        assert back, f"job {job_id} was not sent back to the queue: {database.job(job_id)}"
        job = database.job(job_id)
        retried_at = database.rows(
            "SELECT at FROM sqla_jobs_job_events WHERE job_id = %s AND status = 'todo' "
            "ORDER BY id DESC LIMIT 1",
            (job_id,),
        )[0]["at"]
        # Scheduled one second after the failure, which was recorded just after it happened.
        assert 0.5 < (job["scheduled_at"] - retried_at).total_seconds() <= 1.0
        await wait_for_status(database, job_id, "failed")

    assert len(run_times) == 2
    assert 1.0 <= run_times[1] - run_times[0] < 2.0  # the wait, plus at most a poll and noise


async def test_error_not_listed_in_retry_exceptions_fails_at_once(
    async_app: sqla_jobs.App, database: Database
) -> None:
    runs: list[str] = []

    @async_app.task(
        name="tests.picky", retry=RetryStrategy(max_attempts=5, retry_exceptions=ConnectionError)
    )
    async def picky(error: str) -> None:
        runs.append(error)
        raise ConnectionError() if error == "network" and len(runs) == 1 else ValueError(error)

    retried = await picky.defer_async(error="network")
    await drain(async_app)
    not_retried = await picky.defer_async(error="bad input")
    await drain(async_app)

    assert runs == ["network", "network", "bad input"]
    assert (status_of(database, retried), status_of(database, not_retried)) == (
        "failed",  # the second run raised ValueError, which is not retried
        "failed",
    )
    assert database.job(not_retried)["attempts"] == 1


async def test_failed_job_retried_by_hand_runs_again_with_fresh_attempts(
    async_app: sqla_jobs.App, database: Database
) -> None:
    fixed = False

    @async_app.task(name="tests.needs_fix", retry=1)
    async def needs_fix() -> None:
        if not fixed:
            raise LookupError("missing row")

    job_id = await needs_fix.defer_async()
    await drain(async_app)
    assert (status_of(database, job_id), database.job(job_id)["attempts"]) == ("failed", 2)

    fixed = True
    assert await async_app.job_manager.retry_job_async(job_id) is True
    assert (status_of(database, job_id), database.job(job_id)["attempts"]) == ("todo", 0)
    await drain(async_app)

    job = database.job(job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    statuses = [event.status for event in async_app.job_manager.get_job_history(job_id)]
    assert statuses[-3:] == [JobStatus.TODO, JobStatus.DOING, JobStatus.SUCCEEDED]
    assert statuses.count(JobStatus.FAILED) == 1


# -- scheduling --------------------------------------------------------------------------------


async def test_scheduled_job_waits_for_its_time_then_runs_within_one_polling_interval(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ran_at: list[datetime.datetime] = []

    @async_app.task(name="tests.at_noon")
    async def at_noon() -> None:
        ran_at.append(datetime.datetime.now(UTC))

    async with running_worker(async_app, database, polling_interval=0.2):
        job_id = await at_noon.configure(schedule_in={"seconds": 1}).defer_async()
        scheduled_at = database.job(job_id)["scheduled_at"]
        await asyncio.sleep(0.5)
        assert status_of(database, job_id) == "todo"  # the NOTIFY of the defer did not run it
        await wait_for_status(database, job_id, "succeeded", within=5)

    late = (ran_at[0] - scheduled_at).total_seconds()
    assert 0 <= late < 0.2 + 0.5  # one polling interval, plus a margin for a busy machine


# -- cancel and abort --------------------------------------------------------------------------


async def test_cancelled_job_is_never_run_and_its_cancellation_is_recorded(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ran: list[int] = []

    @async_app.task(name="tests.unwanted")
    async def unwanted() -> None:
        ran.append(1)

    job_id = await unwanted.defer_async()
    assert await async_app.job_manager.cancel_job_async(job_id) is True
    await drain(async_app)

    assert ran == []
    job = database.job(job_id)
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None
    assert [event["status"] for event in database.events(job_id)] == ["todo", "cancelled"]


async def test_cancel_leaves_a_running_job_alone_and_says_so(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @async_app.task(name="tests.busy")
    async def busy() -> None:
        started.set()
        await release.wait()

    job_id = await busy.defer_async()
    async with running_worker(async_app, database):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert await async_app.job_manager.cancel_job_async(job_id) is False
        assert status_of(database, job_id) == "doing"
        release.set()
        await wait_for_status(database, job_id, "succeeded")

    assert async_app.job_manager.cancel_job(job_id) is False  # finished: nothing to cancel
    assert status_of(database, job_id) == "succeeded"


async def test_abort_of_a_waiting_job_cancels_it(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.queued")
    async def queued() -> None:
        pass

    job_id = await queued.defer_async()
    assert await async_app.job_manager.abort_job_async(job_id) is JobStatus.CANCELLED
    assert status_of(database, job_id) == "cancelled"


async def test_abort_of_a_running_async_task_cancels_it_and_records_aborted(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started = asyncio.Event()
    seen: list[str] = []

    @async_app.task(name="tests.endless")
    async def endless() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    @async_app.task(name="tests.next_one")
    async def next_one() -> None:
        seen.append("next job ran")

    job_id = await endless.defer_async()
    async with running_worker(async_app, database, concurrency=1):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert await async_app.job_manager.abort_job_async(job_id) is JobStatus.ABORTING
        await wait_for_status(database, job_id, "aborted", within=5)
        # The slot is free again: the worker goes on with the next job.
        after = await next_one.defer_async()
        await wait_for_status(database, after, "succeeded", within=5)

    assert seen == ["cancelled", "next job ran"]
    events = database.events(job_id)
    assert [event["status"] for event in events] == ["todo", "doing", "aborting", "aborted"]
    assert events[-1]["error"].startswith("Aborted on request.")
    assert "in endless" in events[-1]["error"]  # where the task was when it was stopped
    assert database.job(job_id)["finished_at"] is not None


async def test_abort_of_a_running_sync_task_sets_should_abort_and_records_aborted_once_it_returns(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started = threading.Event()
    returned = threading.Event()

    @async_app.task(name="tests.long_sync", pass_context=True)
    def long_sync(context: sqla_jobs.JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not context.should_abort() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # clean-up work: the job is not over before the function returns
        returned.set()

    job_id = await long_sync.defer_async()
    async with running_worker(async_app, database):
        assert await asyncio.to_thread(started.wait, 5)
        assert async_app.job_manager.abort_job(job_id) is JobStatus.ABORTING
        await wait_for_status(database, job_id, "aborting", within=5)
        await wait_for_status(database, job_id, "aborted", within=5)
        assert returned.is_set(), "recorded aborted before the sync function returned"

    assert [e["status"] for e in database.events(job_id)] == [
        "todo",
        "doing",
        "aborting",
        "aborted",
    ]
    assert database.job(job_id)["last_error"] == "Aborted on request."


async def test_sync_task_that_raises_after_an_abort_request_is_aborted_not_retried(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started = threading.Event()

    @async_app.task(name="tests.stop_by_raising", pass_context=True, retry=3)
    def stop_by_raising(context: sqla_jobs.JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not context.should_abort() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise InterruptedError("stopping as asked")

    job_id = await stop_by_raising.defer_async()
    async with running_worker(async_app, database):
        assert await asyncio.to_thread(started.wait, 5)
        await async_app.job_manager.abort_job_async(job_id)
        await wait_for_status(database, job_id, "aborted", within=5)

    job = database.job(job_id)
    assert job["attempts"] == 1
    assert job["last_error"].startswith("Aborted on request.")
    assert "InterruptedError: stopping as asked" in job["last_error"]


async def test_abort_of_a_finished_job_changes_nothing_and_returns_its_status(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.quick")
    async def quick() -> None:
        pass

    job_id = await quick.defer_async()
    await drain(async_app)

    assert await async_app.job_manager.abort_job_async(job_id) is JobStatus.SUCCEEDED
    assert [e["status"] for e in database.events(job_id)] == ["todo", "doing", "succeeded"]


# -- the manager, through every connector -----------------------------------------------------


async def test_manager_lists_filters_and_manages_jobs_through_every_connector(
    app: sqla_jobs.App, database: Database
) -> None:
    manager = app.job_manager
    first = app.configure_task("tests.a", queue="mail", lock="user-1").defer()
    second = app.configure_task("tests.b", queue="mail").defer()
    third = app.configure_task("tests.a", queue="reports").defer()

    assert [job.id for job in manager.list_jobs()] == [third, second, first]
    assert [job.id for job in manager.list_jobs(queue="mail")] == [second, first]
    assert [job.id for job in manager.list_jobs(task_name="tests.a")] == [third, first]
    assert [job.id for job in manager.list_jobs(lock="user-1")] == [first]
    assert [job.id for job in manager.list_jobs(limit=1, offset=1)] == [second]

    assert manager.cancel_job(second) is True
    assert [job.id for job in manager.list_jobs(status="cancelled")] == [second]
    assert [job.id for job in manager.list_jobs(status=["todo", JobStatus.CANCELLED])] == [
        third,
        second,
        first,
    ]
    assert manager.abort_job(first) is JobStatus.CANCELLED
    assert manager.retry_job(first) is True
    assert manager.delete_job(third) is True
    assert manager.get_job(first).status is JobStatus.TODO
    assert [e.status for e in manager.get_job_history(first)] == [
        JobStatus.TODO,
        JobStatus.CANCELLED,
        JobStatus.TODO,
    ]
    assert all(isinstance(e.at, datetime.datetime) for e in manager.get_job_history(first))
    assert manager.count_jobs() == {("mail", JobStatus.TODO): 1, ("mail", JobStatus.CANCELLED): 1}

    # The async twins answer the same.
    assert [job.id for job in await manager.list_jobs_async(queue="mail")] == [second, first]
    assert await manager.cancel_job_async(first) is True
    assert await manager.retry_job_async(first) is True
    assert await manager.abort_job_async(first) is JobStatus.CANCELLED
    assert await manager.delete_job_async(first) is True
    assert [e.status for e in await manager.get_job_history_async(second)][-1] == (
        JobStatus.CANCELLED
    )
    assert database.job_count() == 1


async def test_operations_on_a_missing_job_raise_job_not_found(async_app: sqla_jobs.App) -> None:
    manager = async_app.job_manager
    for operation in (
        manager.get_job,
        manager.get_job_history,
        manager.cancel_job,
        manager.abort_job,
        manager.retry_job,
        manager.delete_job,
    ):
        with pytest.raises(sqla_jobs.JobNotFound, match="No job with id 424242"):
            operation(424242)
    with pytest.raises(sqla_jobs.JobNotFound):
        await manager.abort_job_async(424242)


async def test_retry_job_refuses_a_job_that_has_not_failed(
    async_app: sqla_jobs.App, database: Database
) -> None:
    waiting = await async_app.configure_task("tests.x").defer_async()
    assert await async_app.job_manager.retry_job_async(waiting) is False
    assert [e["status"] for e in database.events(waiting)] == ["todo"]


async def test_retry_job_with_schedule_at_waits_until_then(
    async_app: sqla_jobs.App, database: Database
) -> None:
    job_id = await async_app.configure_task("tests.x").defer_async()
    await async_app.job_manager.cancel_job_async(job_id)
    at = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)

    assert await async_app.job_manager.retry_job_async(job_id, schedule_at=at) is True

    assert database.job(job_id)["scheduled_at"] == at
    with pytest.raises(ValueError, match="no time zone"):
        await async_app.job_manager.retry_job_async(job_id, schedule_at=datetime.datetime.now())


async def test_retrying_a_job_whose_queueing_lock_is_taken_is_refused_with_already_enqueued(
    async_app: sqla_jobs.App, database: Database
) -> None:
    deferrer = async_app.configure_task("tests.sync_user", queueing_lock="user-7")
    old = await deferrer.defer_async()
    await async_app.job_manager.cancel_job_async(old)
    await deferrer.defer_async()  # a new job now waits with the same queueing lock

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match=f"Job {old} cannot go back") as raised:
        await async_app.job_manager.retry_job_async(old)

    assert raised.value.queueing_lock == "user-7"
    assert status_of(database, old) == "cancelled"


async def test_delete_job_refuses_a_running_job(
    async_app: sqla_jobs.App, database: Database
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @async_app.task(name="tests.in_use")
    async def in_use() -> None:
        started.set()
        await release.wait()

    job_id = await in_use.defer_async()
    async with running_worker(async_app, database):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert await async_app.job_manager.delete_job_async(job_id) is False
        release.set()
        await wait_for_status(database, job_id, "succeeded")

    assert await async_app.job_manager.delete_job_async(job_id) is True
    assert database.job_count() == 0
    assert database.events(job_id) == []  # the history goes with the job


# -- pruning -----------------------------------------------------------------------------------


async def test_prune_jobs_deletes_old_finished_jobs_in_batches_with_their_history(
    async_app: sqla_jobs.App, database: Database
) -> None:
    deferrer = async_app.configure_task("tests.old")
    old = await deferrer.batch_defer_async(*({"n": n} for n in range(5)))
    recent_ids = await deferrer.batch_defer_async({"n": 5}, {"n": 6})
    waiting = await deferrer.defer_async(n=7)
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() - interval '8 days' "
        "WHERE id = ANY(%s)",
        (old[:4],),
    )
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'failed', finished_at = now() - interval '8 days' "
        "WHERE id = %s",
        (old[4],),
    )
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() WHERE id = ANY(%s)",
        (recent_ids,),
    )

    deleted = await async_app.job_manager.prune_jobs_async(datetime.timedelta(days=7), batch_size=2)

    assert deleted == 5
    assert {job["id"] for job in database.jobs()} == {*recent_ids, waiting}
    assert all(database.events(job_id) == [] for job_id in old)


async def test_prune_jobs_keeps_statuses_not_asked_for(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ids = await async_app.configure_task("tests.old").batch_defer_async({}, {})
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'failed', finished_at = now() - interval '1 hour' "
        "WHERE id = %s",
        (ids[0],),
    )
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() - interval '1 hour' "
        "WHERE id = %s",
        (ids[1],),
    )

    deleted = async_app.job_manager.prune_jobs(
        datetime.timedelta(minutes=30), statuses=["succeeded"]
    )

    assert deleted == 1
    assert [job["id"] for job in database.jobs()] == [ids[0]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"older_than": datetime.timedelta(days=1), "statuses": ["todo"]}, "finished jobs only"),
        ({"older_than": datetime.timedelta(days=1), "statuses": ["later"]}, "not a job status"),
        ({"older_than": datetime.timedelta(days=-1)}, "timedelta of 0 or more"),
        ({"older_than": 7}, "timedelta"),
        ({"older_than": datetime.timedelta(days=1), "batch_size": 0}, "at least 1"),
    ],
)
async def test_prune_jobs_refuses_bad_arguments_naming_the_fix(
    async_app: sqla_jobs.App, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await async_app.job_manager.prune_jobs_async(**arguments)


async def test_a_task_raising_cancelled_error_itself_fails_its_job_and_the_worker_goes_on(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """A CancelledError that no one asked for (a library's timeout, a task's own `raise`) is
    the task's error: its job fails with the traceback, and is neither left running nor
    taken for a stop of the worker."""

    @async_app.task(name="tests.raises_cancelled")
    async def raises_cancelled() -> None:
        raise asyncio.CancelledError("the task's own")

    @async_app.task(name="tests.fine")
    async def fine() -> None:
        pass

    failed_id = await raises_cancelled.defer_async()
    fine_id = await fine.defer_async()
    await drain(async_app)

    assert status_of(database, failed_id) == "failed"
    assert "CancelledError: the task's own" in database.job(failed_id)["last_error"]
    assert status_of(database, fine_id) == "succeeded"
