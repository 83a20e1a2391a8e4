"""Cancelling the task that runs a worker stops it, always, promptly and cleanly.

That is how an application hosting the worker in its own event loop stops it (a FastAPI
lifespan, an ``asyncio.TaskGroup``). Each test checks, after every cancellation, that the
worker's task ended within the bound with `CancelledError`, that no job is left ``doing``, that
the worker's row is gone and that no backend still listens.

``SQLA_JOBS_CANCEL_ROUNDS`` sets the number of random cancellations per connector (default 80;
the closing note of issue 18 reports a run with 500).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import sqla_jobs
from sqla_jobs._aio import within
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Database

# With a healthy server a cancelled worker stops in milliseconds; the bound leaves room for a
# loaded CI machine.
STOP_BOUND = 5.0
ROUNDS = int(os.environ.get("SQLA_JOBS_CANCEL_ROUNDS", "80"))


def worker_for(app: sqla_jobs.App, **options: Any) -> sqla_jobs.Worker:
    return sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(
            **{"install_signal_handlers": False, "polling_interval": 0.5, **options}
        ),
    )


async def cancel_and_check(
    worker: sqla_jobs.Worker, task: asyncio.Task[None], database: Database, what: str
) -> float:
    """Cancel ``task`` (running ``worker``), check that it stopped cleanly; seconds it took."""
    cancelled_at = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_BOUND)
    took = time.monotonic() - cancelled_at
    if not done:
        task.print_stack()
    assert done, f"{what}: the worker still ran {STOP_BOUND} s after its cancellation"
    assert task.cancelled(), f"{what}: run() ended without re-raising CancelledError"
    doing = database.rows(
        "SELECT id, worker_id FROM sqla_jobs_jobs WHERE status IN ('doing', 'aborting')"
    )
    assert doing == [], f"{what}: jobs left running after the worker stopped: {doing}"
    if worker.worker_id:
        rows = database.rows("SELECT id FROM sqla_jobs_workers WHERE id = %s", (worker.worker_id,))
        assert rows == [], f"{what}: the worker's row is still there"
    # The server ends a closed connection's backend a moment after the client closes it.
    assert await database.wait_until_async(lambda: not database.listening(), within=2), (
        f"{what}: a backend still listens after the worker stopped"
    )
    return took


async def test_cancelled_right_after_a_job_ends_the_worker_stops(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """The moment that lost cancellations on Python 3.11: the worker's wait for news
    completes (a job just ended) in the same loop turn as the cancellation arrives. The
    cancellation is sent 0 to 11 loop turns after the job ends, to land on that turn."""
    loop = asyncio.get_running_loop()
    current: dict[str, Any] = {}

    def cancel_after(turns: int) -> None:
        if turns == 0:
            current["task"].cancel()
        else:
            loop.call_soon(cancel_after, turns - 1)

    @async_app.task(name="tests.cancel_the_worker")
    async def cancel_the_worker(turns: int) -> None:
        cancel_after(turns)

    for turns in range(12):
        worker = worker_for(async_app, polling_interval=60)
        task = asyncio.create_task(worker.run())
        current["task"] = task
        assert await database.wait_until_async(database.listening), "the worker never listened"
        await cancel_the_worker.defer_async(turns=turns)
        done, _ = await asyncio.wait({task}, timeout=STOP_BOUND)
        assert done, f"the worker ignored a cancellation {turns} loop turns after a job ended"
        await cancel_and_check(worker, task, database, f"{turns} turns after a job")
    assert database.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'succeeded'") == 12


@pytest.mark.timeout(60 + ROUNDS)
async def test_cancelled_at_random_moments_the_worker_always_stops_cleanly(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """Hundreds of cancellations at random offsets from the start (during start-up, LISTEN,
    claims, running jobs, flushes, heartbeats), half of them with jobs flowing."""
    rng = random.Random(int(os.environ.get("SQLA_JOBS_CANCEL_SEED", "18")))

    @async_app.task(name="tests.quick")
    async def quick() -> None:
        pass

    @async_app.task(name="tests.slow")
    async def slow() -> None:
        await asyncio.sleep(0.02)

    @async_app.task(name="tests.blocking")
    def blocking() -> None:
        time.sleep(0.005)

    times = []
    for round_ in range(ROUNDS):
        flowing = round_ % 2 == 0
        if flowing:
            await quick.batch_defer_async(*({} for _ in range(150)))
            await slow.batch_defer_async(*({} for _ in range(30)))
            await blocking.batch_defer_async(*({} for _ in range(20)))
        worker = worker_for(
            async_app,
            concurrency=rng.choice((1, 10, 50)),
            heartbeat_interval=rng.choice((0.05, 10.0)),
            stalled_timeout=60,
        )
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(rng.uniform(0, 0.3))
        what = f"round {round_} ({'jobs flowing' if flowing else 'no jobs'})"
        times.append(await cancel_and_check(worker, task, database, what))
    times.sort()
    print(
        f"{ROUNDS} cancellations: stopped in {times[len(times) // 2] * 1000:.1f} ms median, "
        f"{times[-1] * 1000:.1f} ms at most"
    )
    # Every job ran or went back to the queue: none lost, none running.
    statuses = {
        row["status"]
        for row in database.rows("SELECT DISTINCT status::text AS status FROM sqla_jobs_jobs")
    }
    assert set(statuses) <= {"todo", "succeeded"}, statuses


@pytest.mark.parametrize("wait", [True, False], ids=["waiting", "draining"])
async def test_cancelled_worker_hands_back_its_running_jobs_and_reraises(
    async_app: sqla_jobs.App, database: Database, wait: bool
) -> None:
    started = asyncio.Event()

    @async_app.task(name="tests.endless")
    async def endless() -> None:
        started.set()
        await asyncio.sleep(3600)

    job_id = await endless.defer_async()
    worker = worker_for(async_app, wait=wait, shutdown_timeout=3600)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    took = await cancel_and_check(worker, task, database, "a running endless job")
    assert took < 2, "a cancelled worker waited for its running job (shutdown_timeout is 1 h)"
    job = database.job(job_id)
    assert (job["status"], job["worker_id"]) == ("todo", None)


async def test_a_claim_given_up_is_cancelled_on_the_server_and_its_jobs_stay_waiting(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """A claim blocked on a lock and given up (database_timeout passed, or the worker was
    cancelled) must not run later: its jobs would go ``doing`` under a live worker that never
    runs them. Each connector cancels the statement on the server: once the caller gave up,
    no backend waits on the lock any longer, and the job, once the lock is gone, still waits."""

    @async_app.task(name="tests.waits")
    def waits() -> None:
        pass

    job_id = await waits.defer_async()
    jobs = WorkerDatabase(async_app.connector, async_app.statements)
    worker_id = await jobs.register_worker(name="given-up", queues=None, concurrency=1)
    blocker = await psycopg.AsyncConnection.connect(database.url)
    try:
        await blocker.execute("LOCK TABLE sqla_jobs_jobs IN ACCESS EXCLUSIVE MODE")
        blocker_pid = blocker.info.backend_pid

        def waiting_on_the_lock() -> int:
            return int(
                database.scalar(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    " AND pid <> %s",
                    (blocker_pid,),
                )
            )

        for give_up in ("timeout", "cancel"):
            claim = jobs.claim(worker_id=worker_id, queues=None, limit=10)
            if give_up == "timeout":
                with pytest.raises(TimeoutError):
                    await within(0.5, claim)
            else:
                task = asyncio.ensure_future(claim)
                assert await database.wait_until_async(lambda: waiting_on_the_lock() == 1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await database.wait_until_async(lambda: waiting_on_the_lock() == 0), (
                f"the claim given up ({give_up}) still runs on the server"
            )
        await blocker.rollback()
        await asyncio.sleep(0.2)
        assert (database.job(job_id)["status"], database.job(job_id)["worker_id"]) == (
            "todo",
            None,
        )
    finally:
        await blocker.close()
        await jobs.unregister_worker(worker_id)


async def test_a_statement_that_hangs_is_given_up_after_database_timeout_and_retried(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement that gets no answer (here: the table is locked by another session) is
    given up after database_timeout, logged, and tried again: at start-up the worker fails
    at once saying so; running, it rides the hang out and runs the next job once the server
    answers. The worker never hangs on the network."""
    runs: list[int] = []

    @async_app.task(name="tests.after_the_hang")
    async def after_the_hang(n: int) -> None:
        runs.append(n)

    blocker = await psycopg.AsyncConnection.connect(database.url)
    await blocker.execute("LOCK TABLE sqla_jobs_jobs IN ACCESS EXCLUSIVE MODE")
    started = time.monotonic()
    with pytest.raises(sqla_jobs.ConnectionFailed, match="did not answer"):
        await asyncio.wait_for(worker_for(async_app, database_timeout=0.5).run(), 5)
    assert time.monotonic() - started < 3
    await blocker.rollback()

    worker = worker_for(async_app, database_timeout=0.5)
    task = asyncio.create_task(worker.run())
    assert await database.wait_until_async(database.listening), "the worker never listened"
    await blocker.execute("LOCK TABLE sqla_jobs_jobs IN ACCESS EXCLUSIVE MODE")
    # Polling every 0.5 s: each claim runs into the lock, and is given up.
    await asyncio.sleep(1.5)
    await blocker.rollback()
    await blocker.close()
    await after_the_hang.defer_async(n=1)
    assert await database.wait_until_async(lambda: runs == [1], within=10), runs
    assert any("no answer within 0.5 s" in record.getMessage() for record in caplog.records)
    await cancel_and_check(worker, task, database, "after the hang")
