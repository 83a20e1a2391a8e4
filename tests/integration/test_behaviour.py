"""The queue's behaviour, through the public API only (tasks, ``app.job_manager``, a worker),
on PostgreSQL: defer and batches, claim order, queues, schedules, lock rules, queueing locks,
statuses, cancel/abort/retry/delete/prune, counts, lists, history, workers and notifications.
What an application sees, whichever connector it uses (test_connectors.py runs the defers
and the worker on each).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs import JobStatus, RetryStrategy
from sqla_jobs.jobs import JobSpec
from sqla_jobs.periodic import PeriodicTick
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Database

UTC = datetime.UTC
TODO, DOING, SUCCEEDED, FAILED = (
    JobStatus.TODO,
    JobStatus.DOING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
)
CANCELLED, ABORTING, ABORTED = JobStatus.CANCELLED, JobStatus.ABORTING, JobStatus.ABORTED


@dataclasses.dataclass
class Backend:
    """An opened app on the test's database, and what a test cannot do through the API: see
    whether a worker listens, back-date a finished job (for pruning) or a worker's heartbeat
    (to make it stalled)."""

    app: sqla_jobs.App
    listening: Callable[[], bool]
    set_finished_at: Callable[[Sequence[int], datetime.datetime], None]
    set_last_heartbeat: Callable[[int, datetime.datetime], None]


@pytest.fixture
async def backend(database: Database) -> AsyncIterator[Backend]:
    def set_finished_at(ids: Sequence[int], at: datetime.datetime) -> None:
        database.conn.execute(
            "UPDATE sqla_jobs_jobs SET finished_at = %s WHERE id = ANY(%s)", (at, list(ids))
        )

    def set_last_heartbeat(worker_id: int, at: datetime.datetime) -> None:
        database.conn.execute(
            "UPDATE sqla_jobs_workers SET last_heartbeat = %s WHERE id = %s", (at, worker_id)
        )

    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=database.url))
    made = Backend(app, database.listening, set_finished_at, set_last_heartbeat)
    await app.open_async()
    yield made
    await app.close_async()


async def drain(app: sqla_jobs.App, **options: Any) -> None:
    """Run a worker until no runnable job is left (wait=False), failing after 10 s."""
    options = {"wait": False, "install_signal_handlers": False, "polling_interval": 0.05, **options}
    await asyncio.wait_for(app.run_worker_async(**options), timeout=10)


@contextlib.asynccontextmanager
async def running_worker(backend: Backend, **options: Any) -> AsyncIterator[sqla_jobs.Worker]:
    """A waiting worker, listening before the body runs, stopped after it."""
    worker = sqla_jobs.Worker(
        backend.app,
        sqla_jobs.WorkerOptions(
            **{"wait": True, "polling_interval": 0.1, "install_signal_handlers": False, **options}
        ),
    )
    task = asyncio.create_task(worker.run())
    try:
        assert await wait_until(backend.listening), "the worker never listened"
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def wait_for_status(app: sqla_jobs.App, job_id: int, status: JobStatus) -> None:
    manager = app.job_manager
    reached = await wait_until(lambda: manager.get_job(job_id).status is status, within=10)
    assert reached, f"job {job_id} is {manager.get_job(job_id).status}, not {status}"


def statuses(app: sqla_jobs.App) -> dict[int, JobStatus]:
    return {job.id: job.status for job in app.job_manager.list_jobs(limit=1000)}


def history(app: sqla_jobs.App, job_id: int) -> list[JobStatus]:
    return [event.status for event in app.job_manager.get_job_history(job_id)]


# -- defer -------------------------------------------------------------------------------------


async def test_defer_stores_a_waiting_job_with_the_task_options_and_returns_its_id(
    backend: Backend,
) -> None:
    app = backend.app

    @app.task(name="tests.report", queue="reports", priority=3, lock="ledger", queueing_lock="r")
    def report(**kwargs: Any) -> None:
        pass

    before = datetime.datetime.now(UTC)
    first = report.defer(day="monday", pages=[1, 2])
    second = await report.configure(queueing_lock="r2", priority=-1).defer_async(day="tuesday")
    after = datetime.datetime.now(UTC)

    assert second == first + 1
    job = app.job_manager.get_job(first)
    assert (job.id, job.task_name, job.queue, job.priority, job.lock, job.queueing_lock) == (
        first,
        "tests.report",
        "reports",
        3,
        "ledger",
        "r",
    )
    assert job.args == {"day": "monday", "pages": [1, 2]}
    assert (job.status, job.attempts, job.scheduled_at, job.last_error) == (TODO, 0, None, None)
    assert (job.started_at, job.finished_at, job.worker_id) == (None, None, None)
    assert job.created_at is not None
    assert before - datetime.timedelta(seconds=1) <= job.created_at <= after
    other = app.job_manager.get_job(second)
    assert (other.priority, other.queueing_lock, other.args) == (-1, "r2", {"day": "tuesday"})
    assert history(app, first) == [TODO]


async def test_batch_defer_returns_consecutive_ids_in_argument_order(backend: Backend) -> None:
    deferrer = backend.app.configure_task("tests.batch", queue="bulk")

    ids = await deferrer.batch_defer_async(*({"n": n} for n in range(5)))
    more = deferrer.batch_defer({"n": 5})

    assert ids == list(range(ids[0], ids[0] + 5))
    assert more == [ids[-1] + 1]
    jobs = backend.app.job_manager.list_jobs(queue="bulk")
    assert [(job.id, job.args) for job in reversed(jobs)] == [
        (job_id, {"n": n}) for n, job_id in enumerate([*ids, *more])
    ]
    assert deferrer.batch_defer() == []
    assert len(backend.app.job_manager.list_jobs()) == 6


async def test_schedule_at_is_stored_as_the_same_instant(backend: Backend) -> None:
    when = datetime.datetime(
        2031, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
    )

    job_id = await backend.app.configure_task("tests.x", schedule_at=when).defer_async()

    assert backend.app.job_manager.get_job(job_id).scheduled_at == when


async def test_second_waiting_job_with_a_queueing_lock_is_refused_until_the_first_leaves_todo(
    backend: Backend,
) -> None:
    deferrer = backend.app.configure_task("tests.digest", queueing_lock="digest:42")
    first = deferrer.defer()

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'digest:42'") as caught:
        await deferrer.defer_async()
    assert caught.value.queueing_lock == "digest:42"
    with pytest.raises(sqla_jobs.AlreadyEnqueued):
        deferrer.defer()

    assert backend.app.job_manager.cancel_job(first) is True
    second = deferrer.defer()  # the lock only counts waiting jobs
    # Each refused insert used an id, as PostgreSQL's identity does.
    assert second == first + 3
    assert statuses(backend.app) == {first: CANCELLED, second: TODO}


async def test_batch_with_a_queueing_lock_clash_writes_none_of_its_jobs(backend: Backend) -> None:
    app = backend.app
    waiting = app.configure_task("tests.sync_user", queueing_lock="user-1").defer()
    free = app.configure_task("tests.sync_user")
    clashing = app.configure_task("tests.sync_user", queueing_lock="user-1")

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="None of the 3 jobs") as caught:
        clashing.batch_defer({"n": 1}, {"n": 2}, {"n": 3})
    assert caught.value.queueing_lock == "user-1"
    other = app.configure_task("tests.sync_user", queueing_lock="user-2")
    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'user-2'"):
        await other.batch_defer_async({"n": 1}, {"n": 2})  # the batch clashes with itself

    assert [job.id for job in app.job_manager.list_jobs()] == [waiting]
    assert app.job_manager.count_jobs() == {("default", TODO): 1}
    # The refused rows used ids up to the one that clashed (1 and 2), no further.
    assert free.defer() == waiting + 4


async def test_retrying_a_job_whose_queueing_lock_is_taken_is_refused(backend: Backend) -> None:
    manager = backend.app.job_manager
    deferrer = backend.app.configure_task("tests.sync_user", queueing_lock="user-7")
    old = deferrer.defer()
    manager.cancel_job(old)
    deferrer.defer()

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match=f"Job {old} cannot go back") as caught:
        await manager.retry_job_async(old)

    assert caught.value.queueing_lock == "user-7"
    assert manager.get_job(old).status is CANCELLED
    assert history(backend.app, old) == [TODO, CANCELLED]


async def test_arguments_that_are_not_json_are_refused_before_anything_is_written(
    backend: Backend,
) -> None:
    deferrer = backend.app.configure_task("tests.x")

    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'when'"):
        deferrer.batch_defer({"when": 1}, {"when": datetime.date(2030, 1, 1)})

    assert backend.app.job_manager.list_jobs() == []


# -- claim order, queues, schedules, locks -----------------------------------------------------


async def test_jobs_run_by_priority_then_in_defer_order(backend: Backend) -> None:
    order: list[int] = []

    @backend.app.task(name="tests.record")
    async def record(n: int) -> None:
        order.append(n)

    priorities = [0, 10, 0, 5, 10, -1, 5]
    for n, priority in enumerate(priorities):
        await record.configure(priority=priority).defer_async(n=n)

    await drain(backend.app, concurrency=1)

    assert order == [1, 4, 3, 6, 0, 2, 5]


async def test_worker_with_queues_leaves_jobs_of_other_queues_untouched(backend: Backend) -> None:
    ran: list[str] = []

    @backend.app.task(name="tests.in_queue")
    async def in_queue(queue: str) -> None:
        ran.append(queue)

    ids = {
        queue: await in_queue.configure(queue=queue).defer_async(queue=queue)
        for queue in ("emails", "reports", "default")
    }

    await drain(backend.app, queues=["emails", "default"])

    assert sorted(ran) == ["default", "emails"]
    untouched = backend.app.job_manager.get_job(ids["reports"])
    assert (untouched.status, untouched.attempts, untouched.worker_id, untouched.started_at) == (
        TODO,
        0,
        None,
        None,
    )


async def test_job_scheduled_for_later_is_not_run_and_one_whose_time_has_come_is(
    backend: Backend,
) -> None:
    @backend.app.task(name="tests.scheduled")
    async def scheduled() -> None:
        pass

    now = datetime.datetime.now(UTC)
    later = await scheduled.configure(schedule_in={"hours": 1}).defer_async()
    due = await scheduled.configure(schedule_at=now - datetime.timedelta(seconds=1)).defer_async()

    await drain(backend.app)

    assert statuses(backend.app) == {later: TODO, due: SUCCEEDED}


async def test_jobs_sharing_a_lock_run_one_at_a_time_in_defer_order_whatever_their_priority(
    backend: Backend,
) -> None:
    spans: dict[str, tuple[float, float]] = {}
    running = peak = 0

    @backend.app.task(name="tests.locked")
    async def locked(name: str) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        start = time.monotonic()
        await asyncio.sleep(0.03)
        spans[name] = (start, time.monotonic())
        running -= 1

    # Later jobs of the lock have a higher priority: the lock's defer order still wins.
    for n in range(4):
        await locked.configure(lock="account:1", priority=n).defer_async(name=f"locked{n}")
    for n in range(3):
        await locked.defer_async(name=f"free{n}")

    await drain(backend.app, concurrency=4)

    chain = [spans[f"locked{n}"] for n in range(4)]
    assert chain == sorted(chain), "jobs of one lock run in the order they were deferred"
    for (_, end), (next_start, _) in itertools.pairwise(chain):
        assert end <= next_start, "a job of the lock started before the previous one ended"
    assert peak >= 2, "jobs without the lock ran alongside"
    assert set(statuses(backend.app).values()) == {SUCCEEDED}


async def test_job_waits_behind_an_earlier_waiting_job_of_its_lock_even_one_not_runnable_yet(
    backend: Backend,
) -> None:
    @backend.app.task(name="tests.locked")
    async def locked() -> None:
        pass

    # The earlier job of each lock cannot run (scheduled later, or in a queue this worker does
    # not take): the later one still waits for it.
    later = await locked.configure(lock="a", schedule_in={"hours": 1}).defer_async()
    behind_later = await locked.configure(lock="a").defer_async()
    elsewhere = await locked.configure(lock="b", queue="other").defer_async()
    behind_elsewhere = await locked.configure(lock="b").defer_async()
    unlocked = await locked.defer_async()

    await drain(backend.app, queues=["default"])

    assert statuses(backend.app) == {
        later: TODO,
        behind_later: TODO,
        elsewhere: TODO,
        behind_elsewhere: TODO,
        unlocked: SUCCEEDED,
    }


async def test_job_whose_lock_is_held_by_a_running_job_waits_for_it(backend: Backend) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @backend.app.task(name="tests.holder")
    async def holder() -> None:
        started.set()
        await release.wait()

    first = await holder.configure(lock="export").defer_async()
    async with running_worker(backend, concurrency=3):
        await asyncio.wait_for(started.wait(), timeout=5)
        # Deferred while the first runs: the lock is taken by a running job, not a waiting one.
        second = await backend.app.configure_task("tests.holder", lock="export").defer_async()
        await asyncio.sleep(0.3)
        assert statuses(backend.app) == {first: DOING, second: TODO}
        release.set()
        await wait_for_status(backend.app, second, SUCCEEDED)

    assert history(backend.app, second) == [TODO, DOING, SUCCEEDED]


# -- statuses after a run ----------------------------------------------------------------------


async def test_successful_job_ends_succeeded_after_one_attempt(backend: Backend) -> None:
    @backend.app.task(name="tests.ok")
    def ok() -> None:
        pass

    job_id = ok.defer()
    await drain(backend.app)

    job = backend.app.job_manager.get_job(job_id)
    assert (job.status, job.attempts, job.last_error) == (SUCCEEDED, 1, None)
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at is not None and job.created_at <= job.started_at <= job.finished_at
    assert job.worker_id is not None
    events = backend.app.job_manager.get_job_history(job_id)
    assert [(event.status, event.error) for event in events] == [
        (TODO, None),
        (DOING, None),
        (SUCCEEDED, None),
    ]
    assert [event.at for event in events] == sorted(event.at for event in events)


async def test_failed_job_ends_failed_with_its_traceback_in_last_error_and_history(
    backend: Backend,
) -> None:
    @backend.app.task(name="tests.broken")
    async def broken() -> None:
        raise RuntimeError("out of paper")

    job_id = await broken.defer_async()
    await drain(backend.app)

    job = backend.app.job_manager.get_job(job_id)
    assert (job.status, job.attempts) == (FAILED, 1)
    assert job.last_error is not None and "RuntimeError: out of paper" in job.last_error
    events = backend.app.job_manager.get_job_history(job_id)
    assert [(event.status, event.error) for event in events] == [
        (TODO, None),
        (DOING, None),
        (FAILED, job.last_error),
    ]


async def test_job_retried_twice_runs_three_times_recording_each_error(backend: Backend) -> None:
    runs: list[int] = []

    @backend.app.task(name="tests.flaky", retry=2)
    def flaky() -> None:
        runs.append(1)
        raise ConnectionError(f"try {len(runs)} failed")

    job_id = flaky.defer()
    await drain(backend.app)

    assert len(runs) == 3
    job = backend.app.job_manager.get_job(job_id)
    assert (job.status, job.attempts) == (FAILED, 3)
    events = backend.app.job_manager.get_job_history(job_id)
    assert [event.status for event in events] == [TODO, DOING, TODO, DOING, TODO, DOING, FAILED]
    errors = [event.error for event in events if event.error is not None]
    assert len(errors) == 3
    for attempt, error in enumerate(errors, start=1):
        assert f"ConnectionError: try {attempt} failed" in error


async def test_retry_with_a_wait_puts_the_job_back_in_the_queue_for_later(
    backend: Backend,
) -> None:
    @backend.app.task(name="tests.later", retry=RetryStrategy(max_attempts=2, wait=60))
    async def later() -> None:
        raise TimeoutError("not yet")

    job_id = await later.defer_async()
    before = datetime.datetime.now(UTC)
    await drain(backend.app)  # does not wait for the retry

    job = backend.app.job_manager.get_job(job_id)
    assert (job.status, job.attempts, job.worker_id, job.finished_at) == (TODO, 1, None, None)
    assert job.started_at is not None  # of the last run
    assert job.last_error is not None and "TimeoutError: not yet" in job.last_error
    assert job.scheduled_at is not None
    assert 55 < (job.scheduled_at - before).total_seconds() <= 65
    assert history(backend.app, job_id) == [TODO, DOING, TODO]


async def test_sync_task_can_defer_another_job_from_its_thread(backend: Backend) -> None:
    ran: list[str] = []

    @backend.app.task(name="tests.second")
    def second(parent: int) -> None:
        ran.append(f"second of {parent}")

    @backend.app.task(name="tests.first", pass_context=True)
    def first(context: sqla_jobs.JobContext) -> None:
        assert threading.current_thread() is not threading.main_thread()
        second.defer(parent=context.job.id)

    first_id = first.defer()
    await drain(backend.app)
    await drain(backend.app)  # a draining worker may stop before a job deferred by a job

    assert ran == [f"second of {first_id}"]
    assert set(statuses(backend.app).values()) == {SUCCEEDED}


async def test_delete_jobs_successful_deletes_succeeded_jobs_with_their_history(
    backend: Backend,
) -> None:
    @backend.app.task(name="tests.maybe")
    async def maybe(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    ok = await maybe.defer_async(fail=False)
    failed = await maybe.defer_async(fail=True)
    await drain(backend.app, delete_jobs="successful")

    assert statuses(backend.app) == {failed: FAILED}
    with pytest.raises(sqla_jobs.JobNotFound):
        backend.app.job_manager.get_job_history(ok)


# -- cancel, abort, retry, delete, prune -------------------------------------------------------


async def test_cancelled_job_never_runs_and_cancel_refuses_jobs_no_longer_waiting(
    backend: Backend,
) -> None:
    ran: list[int] = []

    @backend.app.task(name="tests.unwanted")
    async def unwanted() -> None:
        ran.append(1)

    manager = backend.app.job_manager
    job_id = await unwanted.defer_async()
    assert await manager.cancel_job_async(job_id) is True
    assert manager.cancel_job(job_id) is False
    await drain(backend.app)

    assert ran == []
    job = manager.get_job(job_id)
    assert job.status is CANCELLED and job.finished_at is not None
    assert history(backend.app, job_id) == [TODO, CANCELLED]
    with pytest.raises(sqla_jobs.JobNotFound, match="No job with id 424242"):
        manager.cancel_job(424242)


async def test_abort_cancels_a_waiting_job_and_leaves_a_finished_one(backend: Backend) -> None:
    @backend.app.task(name="tests.quick")
    async def quick() -> None:
        pass

    manager = backend.app.job_manager
    done = await quick.defer_async()
    await drain(backend.app)
    waiting = await quick.defer_async()

    assert manager.abort_job(waiting) is CANCELLED
    assert await manager.abort_job_async(done) is SUCCEEDED
    assert history(backend.app, waiting) == [TODO, CANCELLED]
    assert history(backend.app, done) == [TODO, DOING, SUCCEEDED]
    with pytest.raises(sqla_jobs.JobNotFound):
        await manager.abort_job_async(424242)


async def test_abort_of_a_running_job_reaches_its_worker_and_ends_aborted(
    backend: Backend,
) -> None:
    started = asyncio.Event()
    seen: list[str] = []

    @backend.app.task(name="tests.endless")
    async def endless() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    manager = backend.app.job_manager
    job_id = await endless.defer_async()
    async with running_worker(backend, concurrency=1):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert manager.cancel_job(job_id) is False
        assert await manager.delete_job_async(job_id) is False  # running: not deleted
        assert await manager.abort_job_async(job_id) is ABORTING
        assert manager.abort_job(job_id) is ABORTING  # already asked: unchanged
        await wait_for_status(backend.app, job_id, ABORTED)

    assert seen == ["cancelled"]
    job = manager.get_job(job_id)
    assert job.finished_at is not None
    assert job.last_error is not None and job.last_error.startswith("Aborted on request.")
    events = manager.get_job_history(job_id)
    assert [event.status for event in events] == [TODO, DOING, ABORTING, ABORTED]
    assert events[-1].error == job.last_error


async def test_retry_job_requeues_a_finished_job_with_fresh_attempts_and_refuses_the_others(
    backend: Backend,
) -> None:
    fixed = False

    @backend.app.task(name="tests.needs_fix")
    async def needs_fix() -> None:
        if not fixed:
            raise LookupError("missing row")

    manager = backend.app.job_manager
    job_id = await needs_fix.defer_async()
    waiting = await needs_fix.configure(schedule_in={"hours": 1}).defer_async()
    await drain(backend.app)
    assert manager.get_job(job_id).status is FAILED

    assert manager.retry_job(waiting) is False
    at = datetime.datetime.now(UTC) - datetime.timedelta(seconds=1)
    assert await manager.retry_job_async(job_id, schedule_at=at) is True
    job = manager.get_job(job_id)
    assert (job.status, job.attempts, job.scheduled_at) == (TODO, 0, at)
    assert (job.started_at, job.finished_at, job.worker_id) == (None, None, None)
    assert job.last_error is not None and "LookupError" in job.last_error  # kept

    fixed = True
    await drain(backend.app)
    assert (manager.get_job(job_id).status, manager.get_job(job_id).attempts) == (SUCCEEDED, 1)
    assert manager.retry_job(job_id) is False  # succeeded: nothing to retry
    assert history(backend.app, job_id) == [TODO, DOING, FAILED, TODO, DOING, SUCCEEDED]
    with pytest.raises(sqla_jobs.JobNotFound):
        manager.retry_job(424242)


async def test_delete_job_removes_a_job_that_is_not_running_with_its_history(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    job_id = await backend.app.configure_task("tests.x").defer_async()
    kept = await backend.app.configure_task("tests.x").defer_async()

    assert manager.delete_job(job_id) is True

    with pytest.raises(sqla_jobs.JobNotFound):
        manager.get_job(job_id)
    with pytest.raises(sqla_jobs.JobNotFound):
        await manager.get_job_history_async(job_id)
    with pytest.raises(sqla_jobs.JobNotFound):
        manager.delete_job(job_id)
    assert [job.id for job in manager.list_jobs()] == [kept]


async def test_prune_jobs_deletes_finished_jobs_older_than_asked_in_batches(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    deferrer = backend.app.configure_task("tests.old")
    old = deferrer.batch_defer(*({"n": n} for n in range(5)))
    recent = deferrer.batch_defer({"n": 5}, {"n": 6})
    waiting = deferrer.defer(n=7)
    for job_id in [*old, *recent]:
        manager.cancel_job(job_id)
    backend.set_finished_at(old, datetime.datetime.now(UTC) - datetime.timedelta(days=8))

    assert manager.prune_jobs(datetime.timedelta(days=7), statuses=["failed"]) == 0
    assert await manager.prune_jobs_async(datetime.timedelta(days=7), batch_size=2) == 5

    assert sorted(statuses(backend.app)) == sorted([*recent, waiting])
    with pytest.raises(sqla_jobs.JobNotFound):
        manager.get_job_history(old[0])
    # A waiting job is never pruned, however old.
    assert manager.prune_jobs(datetime.timedelta(0)) == 2
    assert list(statuses(backend.app)) == [waiting]


# -- counts, lists, workers --------------------------------------------------------------------


async def test_count_jobs_counts_each_queue_and_status(backend: Backend) -> None:
    manager = backend.app.job_manager
    assert manager.count_jobs() == {}
    mail = backend.app.configure_task("tests.a", queue="mail").batch_defer({}, {}, {})
    backend.app.configure_task("tests.b", queue="reports").defer()
    manager.cancel_job(mail[0])

    expected = {("mail", TODO): 2, ("mail", CANCELLED): 1, ("reports", TODO): 1}
    assert manager.count_jobs() == expected
    assert await manager.count_jobs_async() == expected


async def test_list_jobs_filters_and_pages_newest_first(backend: Backend) -> None:
    app = backend.app
    manager = app.job_manager
    first = app.configure_task("tests.a", queue="mail", lock="user-1").defer()
    second = app.configure_task("tests.b", queue="mail").defer()
    third = app.configure_task("tests.a", queue="reports").defer()
    manager.cancel_job(second)

    assert [job.id for job in manager.list_jobs()] == [third, second, first]
    assert [job.id for job in manager.list_jobs(queue="mail")] == [second, first]
    assert [job.id for job in manager.list_jobs(task_name="tests.a")] == [third, first]
    assert [job.id for job in manager.list_jobs(lock="user-1")] == [first]
    assert [job.id for job in manager.list_jobs(status="cancelled")] == [second]
    assert [job.id for job in manager.list_jobs(status=[TODO, CANCELLED])] == [third, second, first]
    assert [job.id for job in manager.list_jobs(queue="mail", status=TODO)] == [first]
    assert [job.id for job in manager.list_jobs(limit=1, offset=1)] == [second]
    assert [job.id for job in await manager.list_jobs_async(offset=2)] == [first]
    assert manager.list_jobs(queue="nowhere") == []
    assert manager.list_jobs(limit=0) == []


async def test_running_worker_is_listed_with_its_heartbeat_and_removed_once_stopped(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    assert manager.list_workers() == []

    async with running_worker(backend, name="w1", queues=["mail", "sms"], concurrency=3):
        [worker] = manager.list_workers()
        assert (worker["name"], worker["queues"], worker["concurrency"]) == (
            "w1",
            ["mail", "sms"],
            3,
        )
        assert isinstance(worker["pid"], int) and worker["hostname"]
        assert worker["started_at"] <= worker["last_heartbeat"]
        assert 0 <= worker["heartbeat_age"] < 5

    assert manager.list_workers() == []


async def test_waiting_worker_starts_a_newly_deferred_job_at_once_thanks_to_notify(
    backend: Backend,
) -> None:
    started = asyncio.Event()

    @backend.app.task(name="tests.urgent")
    async def urgent() -> None:
        started.set()

    async with running_worker(backend, polling_interval=30):  # a poll cannot find the job
        await asyncio.sleep(0.1)  # the first claim, which found nothing, is over
        deferred_at = time.monotonic()
        job_id = await urgent.defer_async()
        await asyncio.wait_for(started.wait(), timeout=2)
        assert time.monotonic() - deferred_at < 0.5
        await wait_for_status(backend.app, job_id, SUCCEEDED)

    assert not backend.listening(), "the worker stopped listening on stop"


async def test_job_interrupted_by_shutdown_goes_back_to_the_queue(backend: Backend) -> None:
    started = asyncio.Event()

    @backend.app.task(name="tests.slow")
    async def slow(n: int) -> None:
        started.set()
        await asyncio.sleep(30)

    ids = [await slow.defer_async(n=n) for n in range(2)]
    worker = sqla_jobs.Worker(
        backend.app,
        sqla_jobs.WorkerOptions(
            concurrency=1,
            prefetch=1,
            shutdown_timeout=0.1,
            polling_interval=0.05,
            install_signal_handlers=False,
        ),
    )
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), timeout=5)
    assert sorted(statuses(backend.app).values()) == [DOING, DOING]  # one runs, one claimed ahead

    worker.stop()
    await asyncio.wait_for(running, timeout=10)

    # The interrupted run counts as an attempt; the job claimed ahead never ran: it does not.
    for job_id, attempts in zip(ids, [1, 0], strict=True):
        job = backend.app.job_manager.get_job(job_id)
        assert (job.status, job.worker_id, job.started_at, job.finished_at) == (
            TODO,
            None,
            None,
            None,
        )
        assert job.attempts == attempts
        assert history(backend.app, job_id) == [TODO, DOING, TODO]


# -- stalled workers and periodic ticks: the manager's side ------------------------------------


async def test_jobs_of_a_worker_that_stopped_heartbeating_are_recovered_by_a_live_one(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    worker_db = WorkerDatabase(backend.app.connector)
    dead = await worker_db.register_worker(name="dead", queues=None, concurrency=2)
    live = await worker_db.register_worker(name="live", queues=None, concurrency=2)
    retried = await backend.app.configure_task("tests.known").defer_async()
    aborting = await backend.app.configure_task("tests.known").defer_async()
    assert len(await worker_db.claim(worker_id=dead, queues=None, limit=2)) == 2
    assert manager.abort_job(aborting) is ABORTING
    recover = functools.partial(
        worker_db.recover_stalled_jobs,
        worker_id=live,
        worker_name="live",
        stalled_timeout=60,
        strategies={"tests.known": RetryStrategy(max_attempts=3)},
    )

    assert await recover() == []  # its heartbeat is recent: not stalled
    backend.set_last_heartbeat(dead, datetime.datetime.now(UTC) - datetime.timedelta(minutes=5))
    recovered = await recover()

    assert {item.job.id: item.status for item in recovered} == {retried: TODO, aborting: ABORTED}
    assert {item.stalled.worker_name for item in recovered} == {"dead"}
    job = manager.get_job(retried)
    assert (job.status, job.attempts, job.worker_id, job.finished_at) == (TODO, 1, None, None)
    assert job.last_error is not None
    assert job.last_error.startswith("Recovered from a stalled worker: worker 'dead'")
    stopped = manager.get_job(aborting)
    assert (stopped.status, stopped.worker_id) == (ABORTED, dead)
    assert stopped.finished_at is not None
    assert history(backend.app, retried) == [TODO, DOING, TODO]
    assert history(backend.app, aborting) == [TODO, DOING, ABORTING, ABORTED]
    assert await recover() == []  # each job is recovered once

    gone = await worker_db.delete_stalled_workers(worker_id=live, stalled_timeout=60)
    assert [(worker["id"], worker["name"]) for worker in gone] == [(dead, "dead")]
    assert gone[0]["heartbeat_age"] > 250
    assert [worker["name"] for worker in manager.list_workers()] == ["live"]
    assert await worker_db.heartbeat(dead) is False
    assert await worker_db.reregister_worker(dead, name="dead", queues=None, concurrency=2)
    assert not await worker_db.reregister_worker(dead, name="dead", queues=None, concurrency=2)
    assert await worker_db.heartbeat(dead) is True
    assert sorted(worker["name"] for worker in manager.list_workers()) == ["dead", "live"]


async def test_a_running_job_whose_worker_is_not_registered_is_stalled_at_once(
    backend: Backend,
) -> None:
    worker_db = WorkerDatabase(backend.app.connector)
    live = await worker_db.register_worker(name="live", queues=None, concurrency=1)
    job_id = await backend.app.configure_task("tests.unknown_here").defer_async()
    await worker_db.claim(worker_id=live + 1000, queues=None, limit=1)

    [item] = await worker_db.recover_stalled_jobs(
        worker_id=live, worker_name="live", stalled_timeout=60, strategies={}
    )

    assert (item.job.id, item.status) == (job_id, TODO)
    assert (item.stalled.worker_id, item.stalled.worker_name) == (live + 1000, None)
    assert item.stalled.heartbeat_age is None


async def test_a_worker_finds_its_jobs_asked_to_abort(backend: Backend) -> None:
    manager = backend.app.job_manager
    worker_db = WorkerDatabase(backend.app.connector)
    worker = await worker_db.register_worker(name="w", queues=None, concurrency=3)
    ids = await backend.app.configure_task("tests.x").batch_defer_async({}, {}, {})
    await worker_db.claim(worker_id=worker, queues=None, limit=3)
    assert await worker_db.aborting_job_ids(worker) == []

    manager.abort_job(ids[1])

    assert await worker_db.aborting_job_ids(worker) == [ids[1]]


def tick(timestamp: int, *, periodic_id: str = "", queueing_lock: str | None = None) -> Any:
    spec = JobSpec(
        task_name="tests.every_minute",
        args={"timestamp": timestamp},
        queue="cron",
        queueing_lock=queueing_lock,
    )
    return PeriodicTick(spec, periodic_id, timestamp)


async def test_each_periodic_tick_is_deferred_once_however_often_it_is_sent(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    worker_db = WorkerDatabase(backend.app.connector)
    ticks = [tick(60), tick(120), tick(120, periodic_id="eu")]

    deferred = await worker_db.defer_periodic(ticks)

    assert set(deferred) == {
        ("tests.every_minute", "", 60),
        ("tests.every_minute", "", 120),
        ("tests.every_minute", "eu", 120),
    }
    jobs = {job.id: job for job in manager.list_jobs(queue="cron")}
    assert set(deferred.values()) == set(jobs)
    assert jobs[deferred[("tests.every_minute", "", 60)]].args == {"timestamp": 60}
    assert {job.status for job in jobs.values()} == {TODO}
    assert await worker_db.defer_periodic([*ticks, tick(180)]) == {
        ("tests.every_minute", "", 180): max(jobs) + 4  # every tick sent drew an id
    }


async def test_periodic_tick_whose_queueing_lock_is_taken_counts_as_done_without_a_job(
    backend: Backend,
) -> None:
    manager = backend.app.job_manager
    worker_db = WorkerDatabase(backend.app.connector)
    waiting = backend.app.configure_task("tests.x", queueing_lock="refresh").defer()

    assert await worker_db.defer_periodic(
        [tick(60, queueing_lock="refresh"), tick(120, queueing_lock="other")]
    ) == {("tests.every_minute", "", 60): None, ("tests.every_minute", "", 120): waiting + 2}
    assert await worker_db.defer_periodic([tick(60, queueing_lock="refresh")]) == {}
    assert len(manager.list_jobs()) == 2


async def test_prune_periodic_defers_keeps_the_newest_ticks_of_each_schedule(
    backend: Backend,
) -> None:
    worker_db = WorkerDatabase(backend.app.connector)
    await worker_db.defer_periodic([tick(60 * n) for n in range(1, 6)])
    await worker_db.defer_periodic([tick(60, periodic_id="eu")])

    assert await worker_db.prune_periodic_defers(keep=2, before=270) == 3  # 60, 120, 180
    assert await worker_db.prune_periodic_defers(keep=2, before=10_000) == 0
    # keep=0: every tick before 280 goes, 240 and the "eu" one.
    assert await worker_db.prune_periodic_defers(keep=0, before=280) == 2
    # Pruned ticks are not remembered: sent again, they are deferred again.
    assert set(await worker_db.defer_periodic([tick(60), tick(240), tick(300)])) == {
        ("tests.every_minute", "", 60),
        ("tests.every_minute", "", 240),
    }
