"""The worker as supervised roles: a role that crashes is restarted and the worker runs on;
one that keeps crashing stops the worker loudly; a sync job whose thread outlives the stop is
not run again while that thread may still run."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Database


def worker_for(app: sqla_jobs.App, **options: Any) -> sqla_jobs.Worker:
    return sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(
            **{"install_signal_handlers": False, "polling_interval": 0.5, **options}
        ),
    )


def crashes_logged(caplog: pytest.LogCaptureFixture, role: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith(f"The worker's {role} failed") and record.exc_info
    ]


async def test_a_role_that_crashes_is_restarted_and_the_worker_runs_on(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat dies of a bug once: it is logged with its traceback and restarted; the
    worker keeps its job, heartbeats again, and records the job's success."""
    started = asyncio.Event()
    release = asyncio.Event()

    @async_app.task(name="tests.held")
    async def held() -> None:
        started.set()
        await release.wait()

    job_id = await held.defer_async()
    worker = worker_for(async_app, heartbeat_interval=0.1, stalled_timeout=5)
    looks = 0
    look_after_jobs = worker._heartbeat.look_after_jobs

    async def look_after_jobs_with_a_bug() -> None:
        nonlocal looks
        looks += 1
        if looks == 2:
            raise RuntimeError("a bug in the heartbeat")
        await look_after_jobs()

    worker._heartbeat.look_after_jobs = look_after_jobs_with_a_bug  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    assert await database.wait_until_async(lambda: looks >= 6, within=10), looks
    assert not task.done()
    [crash] = crashes_logged(caplog, "heartbeat")
    assert "restarting it in" in crash

    release.set()
    assert await database.wait_until_async(
        lambda: database.job(job_id)["status"] == "succeeded", within=10
    )
    worker.stop()
    await asyncio.wait_for(task, 10)  # no WorkerFailed: the role recovered


async def test_a_role_that_keeps_crashing_stops_the_worker_loudly(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat crashes at every beat: the worker does not run on half dead (running
    jobs while looking dead to the others); after a few restarts it stops, hands back its
    jobs, and run() raises WorkerFailed naming the role."""
    started = asyncio.Event()

    @async_app.task(name="tests.long")
    async def long() -> None:
        started.set()
        await asyncio.sleep(3600)

    job_id = await long.defer_async()
    worker = worker_for(async_app, heartbeat_interval=0.1, shutdown_timeout=0.2)
    look_after_jobs = worker._heartbeat.look_after_jobs
    looks = 0

    async def broken_look_after_jobs() -> None:
        nonlocal looks
        looks += 1
        if looks > 1:
            raise RuntimeError("a bug in the heartbeat")
        await look_after_jobs()

    worker._heartbeat.look_after_jobs = broken_look_after_jobs  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    with pytest.raises(sqla_jobs.WorkerFailed, match="heartbeat failed") as caught:
        await asyncio.wait_for(task, 15)
    assert isinstance(caught.value.__cause__, RuntimeError)
    crashes = crashes_logged(caplog, "heartbeat")
    assert len(crashes) == 5, crashes
    assert "stopping the worker" in crashes[-1]
    assert any(r.levelname == "CRITICAL" and r.exc_info for r in caplog.records)
    job = database.job(job_id)
    assert (job["status"], job["worker_id"]) == ("todo", None)
    assert database.rows("SELECT id FROM sqla_jobs_workers") == []


async def test_a_completer_that_crashes_is_restarted_and_loses_no_outcome(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    @async_app.task(name="tests.quick")
    async def quick(n: int) -> None:
        await asyncio.sleep(0.01)

    ids = await quick.batch_defer_async(*({"n": n} for n in range(200)))
    worker = worker_for(async_app, wait=False, concurrency=20)
    flush = worker._completer.flush
    flushes = 0

    async def flush_with_a_bug(*, until_closed: bool = False) -> None:
        nonlocal flushes
        # The completer role's first flush (until_closed), which every run has: not the stop's
        # final flush (a run whose flushes each wrote many outcomes had only two before it).
        if until_closed:
            flushes += 1
            if flushes == 1:
                raise RuntimeError("a bug in the completer")
        await flush(until_closed=until_closed)

    worker._completer.flush = flush_with_a_bug  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(), 30)
    assert len(crashes_logged(caplog, "completer")) == 1
    statuses = database.rows(
        "SELECT status, count(*) AS n FROM sqla_jobs_jobs WHERE id = ANY(%s) GROUP BY status",
        (ids,),
    )
    assert statuses == [{"status": "succeeded", "n": 200}]


async def test_a_sync_job_whose_thread_outlives_the_stop_is_not_run_again_meanwhile(
    async_app: sqla_jobs.App, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync task that ignores should_abort() cannot be interrupted: its job goes back to
    the queue (its worker stops), but runnable only stalled_timeout later, so that no other
    worker runs it while its thread may still run (a CLI worker's exit ends that thread)."""
    app = async_app
    runs: list[tuple[str, float]] = []
    release = threading.Event()

    @app.task(name="tests.stubborn")
    def stubborn() -> None:
        runs.append(("start", time.monotonic()))
        release.wait(30)  # never looks at should_abort()
        runs.append(("end", time.monotonic()))

    job_id = await stubborn.defer_async()
    stalled_timeout = 3.0
    first = worker_for(
        app, shutdown_timeout=0.2, heartbeat_interval=0.5, stalled_timeout=stalled_timeout
    )
    task = asyncio.create_task(first.run())
    assert await database.wait_until_async(lambda: len(runs) == 1, within=10)
    first.stop()
    await asyncio.wait_for(task, 10)
    stopped_at = time.monotonic()
    job = database.job(job_id)
    assert (job["status"], job["attempts"]) == ("todo", 1)
    assert any(
        f"Jobs [{job_id}] still run in their threads" in record.getMessage()
        for record in caplog.records
    )

    second = worker_for(app, shutdown_timeout=5, polling_interval=0.2)
    task = asyncio.create_task(second.run())
    try:
        await asyncio.sleep(1.0)
        assert [event for event, _ in runs] == ["start"], "run again while its thread ran"
        release.set()  # the first thread ends; the job runs again once its time comes
        assert await database.wait_until_async(lambda: len(runs) == 4, within=10), runs
        second_start = runs[2][1]
        assert runs[2][0] == "start" and second_start - stopped_at >= stalled_timeout - 0.5
    finally:
        release.set()
        second.stop()
        await asyncio.wait_for(task, 10)
    assert database.job(job_id)["status"] == "succeeded"
