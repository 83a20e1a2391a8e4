"""Job results through the public API, with real workers: what a task returns is stored with its
job and read by ``get_result``; ``wait_for`` returns the finished job, woken by NOTIFY (async
connectors) or by reading with backoff, and always within its timeout.

Reading (``get_result``, ``wait_for``) runs once per connector; the jobs are run by a worker
on psycopg 3 sharing the app's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

import sqla_jobs
from sqla_jobs import JobStatus
from sqla_jobs.jobs import MAX_RESULT_BYTES
from sqla_jobs.results import LISTENING_RECHECK
from sqla_jobs.statuses import FINISHED_CHANNEL

if TYPE_CHECKING:
    from conftest import Database

RESULT = {"total": 12.5, "lines": [1, "two", None, True], "name": "ünïcode"}


class Invoice:
    """Not JSON."""


def register(app: sqla_jobs.App) -> dict[str, sqla_jobs.Task]:
    @app.task(name="tests.results.compute")
    def compute(value: Any = None) -> Any:
        return value

    @app.task(name="tests.results.compute_async")
    async def compute_async(value: Any = None) -> Any:
        return value

    @app.task(name="tests.results.not_json")
    def not_json() -> Any:
        return Invoice()

    @app.task(name="tests.results.oversize")
    def oversize() -> Any:
        return "x" * MAX_RESULT_BYTES

    @app.task(name="tests.results.unstored", store_result=False)
    def unstored() -> Any:
        return RESULT

    @app.task(name="tests.results.fails")
    def fails() -> Any:
        raise ValueError("no result for you")

    @app.task(name="tests.results.slow")
    async def slow(seconds: float) -> Any:
        await asyncio.sleep(seconds)
        return {"ended": time.monotonic()}

    return {
        "compute": compute,
        "compute_async": compute_async,
        "not_json": not_json,
        "oversize": oversize,
        "unstored": unstored,
        "fails": fails,
        "slow": slow,
    }


def tasks_of(app: sqla_jobs.App) -> dict[str, sqla_jobs.Task]:
    """The tasks `register` gave ``app``, by short name."""
    prefix = "tests.results."
    return {name.removeprefix(prefix): task for name, task in app.tasks.items()}


@pytest.fixture
async def worker_app(app: sqla_jobs.App, db_url: str) -> AsyncIterator[sqla_jobs.App]:
    """``app`` with the tasks of `register` (`tasks_of`), and the same tasks on an async
    connector that runs workers."""
    register(app)
    worker_app = app.with_connector(sqla_jobs.PsycopgConnector(conninfo=db_url))
    await worker_app.open_async()
    yield worker_app
    await worker_app.close_async()


async def drain(app: sqla_jobs.App) -> None:
    """Run a worker until no runnable job is left."""
    await asyncio.wait_for(
        app.run_worker_async(wait=False, install_signal_handlers=False, polling_interval=0.05),
        timeout=20,
    )


@contextlib.asynccontextmanager
async def running_worker(app: sqla_jobs.App) -> AsyncIterator[sqla_jobs.Worker]:
    worker = sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(wait=True, polling_interval=5, install_signal_handlers=False),
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)


# -- stored and read ---------------------------------------------------------------------------


async def test_a_returned_value_is_stored_and_read_back_through_every_connector(
    app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    tasks = register(app)
    sync_id = tasks["compute"].defer(value=RESULT)
    async_id = tasks["compute_async"].defer(value=[1, 2.5, "x"])
    scalar_id = tasks["compute"].defer(value=0)
    async with app.with_connector(sqla_jobs.PsycopgConnector(conninfo=db_url)).open_async() as w:
        await drain(w)

    manager = app.job_manager
    assert database.job(sync_id)["result"] == RESULT
    assert manager.get_result(sync_id) == RESULT
    assert await manager.get_result_async(async_id) == [1, 2.5, "x"]
    assert manager.get_result(scalar_id) == 0
    job = manager.wait_for(sync_id, timeout=5)
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, RESULT)
    job = await manager.wait_for_async(async_id, timeout=5)
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, [1, 2.5, "x"])
    assert manager.get_job(sync_id).result == RESULT


async def test_tasks_returning_none_store_nothing_even_in_a_batch_with_results(
    app: sqla_jobs.App, worker_app: sqla_jobs.App, database: Database
) -> None:
    tasks = tasks_of(app)
    ids = tasks["compute"].batch_defer({"value": None}, {"value": {"n": 1}}, {}, {"value": "s"})

    await drain(worker_app)

    assert [database.job(job_id)["status"] for job_id in ids] == ["succeeded"] * 4
    assert [database.job(job_id)["result"] for job_id in ids] == [None, {"n": 1}, None, "s"]
    assert [app.job_manager.get_result(job_id) for job_id in ids] == [None, {"n": 1}, None, "s"]


async def test_a_task_declared_with_store_result_false_stores_nothing_and_says_so(
    app: sqla_jobs.App, worker_app: sqla_jobs.App, database: Database
) -> None:
    job_id = tasks_of(app)["unstored"].defer()

    await drain(worker_app)

    assert database.job(job_id)["status"] == "succeeded"
    assert database.job(job_id)["result"] is None
    with pytest.raises(sqla_jobs.ResultUnavailable, match="store_result=False"):
        app.job_manager.get_result(job_id)


async def test_a_result_that_is_not_json_or_too_big_fails_the_job_and_the_worker_goes_on(
    app: sqla_jobs.App, worker_app: sqla_jobs.App, database: Database
) -> None:
    tasks = tasks_of(app)
    not_json = tasks["not_json"].defer()
    oversize = tasks["oversize"].defer()
    fine = tasks["compute"].defer(value={"ok": True})

    await drain(worker_app)

    for job_id, problem in [(not_json, "Invoice"), (oversize, "1,048,578 bytes")]:
        row = database.job(job_id)
        assert row["status"] == "failed"
        assert row["result"] is None
        assert "sqla_jobs.errors.InvalidJobResult" in row["last_error"]
        assert problem in row["last_error"]
        assert "store_result=False" in row["last_error"]
        with pytest.raises(sqla_jobs.ResultUnavailable, match="InvalidJobResult"):
            app.job_manager.get_result(job_id)
    assert database.job(fine)["result"] == {"ok": True}


# -- why there is no result --------------------------------------------------------------------


async def test_get_result_says_why_a_job_has_no_result(
    app: sqla_jobs.App, worker_app: sqla_jobs.App
) -> None:
    tasks = tasks_of(app)
    failed = tasks["fails"].defer()
    await drain(worker_app)
    waiting = tasks["compute"].defer(value=1)
    cancelled = tasks["compute"].defer(value=2)
    app.job_manager.cancel_job(cancelled)
    manager = app.job_manager

    with pytest.raises(sqla_jobs.ResultUnavailable, match=r"not finished yet .status todo"):
        manager.get_result(waiting)
    with pytest.raises(sqla_jobs.ResultUnavailable, match="failed: ValueError: no result") as e:
        await manager.get_result_async(failed)
    assert e.value.job is not None and e.value.job.status is JobStatus.FAILED
    with pytest.raises(sqla_jobs.ResultUnavailable, match="was cancelled"):
        manager.get_result(cancelled)
    with pytest.raises(sqla_jobs.ResultUnavailable, match="No job with id 999999"):
        manager.get_result(999_999)


async def test_a_pruned_job_takes_its_result_with_it(
    app: sqla_jobs.App, worker_app: sqla_jobs.App, database: Database
) -> None:
    job_id = tasks_of(app)["compute"].defer(value=RESULT)
    await drain(worker_app)
    assert app.job_manager.get_result(job_id) == RESULT

    assert app.job_manager.prune_jobs(datetime.timedelta(0)) == 1

    assert database.job_count() == 0
    with pytest.raises(sqla_jobs.ResultUnavailable, match="deleted with its result"):
        app.job_manager.get_result(job_id)


# -- waiting -----------------------------------------------------------------------------------


async def test_wait_for_returns_failed_and_cancelled_jobs_as_they_ended(
    app: sqla_jobs.App, worker_app: sqla_jobs.App
) -> None:
    tasks = tasks_of(app)
    failed = tasks["fails"].defer()
    await drain(worker_app)
    cancelled = tasks["compute"].defer()
    app.job_manager.cancel_job(cancelled)

    job = app.job_manager.wait_for(failed, timeout=5)
    assert job.status is JobStatus.FAILED and "no result for you" in (job.last_error or "")
    job = await app.job_manager.wait_for_async(cancelled, timeout=5)
    assert job.status is JobStatus.CANCELLED


async def test_wait_for_a_job_that_does_not_finish_gives_up_at_its_timeout(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = register(app)["compute"].defer(value=1)

    started = time.monotonic()
    with pytest.raises(sqla_jobs.WaitTimeout, match=rf"Job {job_id} .* within 0.3 s") as e:
        await app.job_manager.wait_for_async(job_id, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert isinstance(e.value, TimeoutError) and e.value.job.status is JobStatus.TODO

    started = time.monotonic()
    with pytest.raises(sqla_jobs.WaitTimeout):
        app.job_manager.wait_for(job_id, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    # The waiter's listening connection is gone with it.
    assert await database.wait_until_async(lambda: not database.listening(), within=2)


async def test_wait_for_a_job_that_does_not_exist_says_so(app: sqla_jobs.App) -> None:
    with pytest.raises(sqla_jobs.JobNotFound):
        await app.job_manager.wait_for_async(999_999, timeout=1)
    with pytest.raises(sqla_jobs.JobNotFound):
        app.job_manager.wait_for(999_999, timeout=1)


async def test_wait_for_a_running_job_returns_it_once_finished_through_every_connector(
    app: sqla_jobs.App, worker_app: sqla_jobs.App
) -> None:
    job_id = await tasks_of(app)["slow"].defer_async(seconds=0.3)

    async with running_worker(worker_app):
        job = await app.job_manager.wait_for_async(job_id, timeout=10)
        assert job.status is JobStatus.SUCCEEDED
        assert set(job.result) == {"ended"}
        other = await tasks_of(app)["slow"].defer_async(seconds=0.3)
        job = await asyncio.to_thread(app.job_manager.wait_for, other, timeout=10)
        assert job.status is JobStatus.SUCCEEDED


async def test_wait_for_async_is_woken_by_notify_as_soon_as_the_job_finishes(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """The job ends 0.8 s into the wait; reading again would come only at 2 s
    (`LISTENING_RECHECK`): the NOTIFY wakes the waiter within a few milliseconds."""
    assert LISTENING_RECHECK >= 2
    job_id = await register(async_app)["slow"].defer_async(seconds=0.8)

    async with running_worker(async_app):
        job = await async_app.job_manager.wait_for_async(job_id, timeout=10)
        woke = time.monotonic()

    assert job.status is JobStatus.SUCCEEDED
    assert woke - job.result["ended"] < 0.3
    assert database.job(job_id)["awaited"] is True


async def test_overlapping_waits_share_one_listening_connection(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """50 waits at once (a web app's requests, a gather) listen on one connection, each is
    woken by its own job's finish, and the connection closes when the last wait ends."""
    compute = register(async_app)["compute"]
    job_ids = await compute.batch_defer_async(*({"value": i} for i in range(50)))
    manager = async_app.job_manager
    waits = [asyncio.create_task(manager.wait_for_async(i, timeout=20)) for i in job_ids]

    def listening_connections() -> int:
        return int(
            database.scalar(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query ILIKE 'LISTEN%%'"
            )
        )

    assert await database.wait_until_async(lambda: listening_connections() == 1, within=5)
    await asyncio.sleep(0.3)  # every wait has joined and marked its job
    assert listening_connections() == 1
    # Half the jobs end: their waits return, the others go on waiting.
    assert await manager.cancel_job_async(job_ids[0])
    for job_id in job_ids[1:25]:
        assert await manager.cancel_job_async(job_id)
    done, pending = await asyncio.wait(waits, timeout=5)
    assert {t.result().id for t in done} == set(job_ids[:25]) and len(pending) == 25
    assert listening_connections() == 1

    for job_id in job_ids[25:]:
        assert await manager.cancel_job_async(job_id)
    jobs = await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
    assert [job.status for job in jobs] == [JobStatus.CANCELLED] * 50
    assert await database.wait_until_async(lambda: not database.listening(), within=2)


async def test_a_job_cancelled_while_waited_for_wakes_its_waiter_at_once(
    async_app: sqla_jobs.App,
) -> None:
    job_id = await register(async_app)["compute"].defer_async(value=1)
    manager = async_app.job_manager
    waiting = asyncio.create_task(manager.wait_for_async(job_id, timeout=10))
    await asyncio.sleep(0.5)  # listening, and the job marked

    cancelled_at = time.monotonic()
    assert await manager.cancel_job_async(job_id)
    job = await asyncio.wait_for(waiting, timeout=10)

    assert job.status is JobStatus.CANCELLED
    assert time.monotonic() - cancelled_at < 0.3


async def test_a_job_deleted_while_waited_for_ends_the_wait_at_once(
    async_app: sqla_jobs.App,
) -> None:
    job_id = await register(async_app)["compute"].defer_async(value=1)
    manager = async_app.job_manager
    waiting = asyncio.create_task(manager.wait_for_async(job_id, timeout=10))
    await asyncio.sleep(0.5)

    deleted_at = time.monotonic()
    assert await manager.delete_job_async(job_id)
    with pytest.raises(sqla_jobs.JobNotFound):
        await asyncio.wait_for(waiting, timeout=10)
    assert time.monotonic() - deleted_at < 0.3


async def test_only_the_finish_of_a_job_someone_waits_for_is_notified(
    async_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    """Finishes nobody waits for send nothing (nor mark anything); one waited for sends one
    notification, with its id."""
    app = async_app
    tasks = register(app)
    plain = tasks["compute"].batch_defer(*({"value": n} for n in range(20)))
    waited = tasks["compute"].defer(value="w")
    with psycopg.Connection.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {FINISHED_CHANNEL}")
        waiter = asyncio.create_task(app.job_manager.wait_for_async(waited, timeout=20))
        assert await database.wait_until_async(lambda: database.job(waited)["awaited"])

        await drain(app)
        job = await asyncio.wait_for(waiter, timeout=20)
        received = [n.payload for n in listener.notifies(timeout=0.5, stop_after=10)]

    assert job.result == "w"
    assert received == [str(waited)]
    assert [database.job(job_id)["awaited"] for job_id in plain] == [None] * 20


# -- shown -------------------------------------------------------------------------------------


async def test_the_dashboard_job_page_and_jobs_show_print_the_result(
    async_app: sqla_jobs.App,
) -> None:
    from sqla_jobs.cli.jobs import job_details
    from sqla_jobs.dashboard import create_asgi_app

    job_id = await register(async_app)["compute"].defer_async(value={"answer": "ünï 42"})
    await drain(async_app)

    transport = httpx.ASGITransport(app=create_asgi_app(async_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = (await client.get(f"/jobs/{job_id}")).text
    assert "<h2>Result</h2>" in page
    assert "&#34;answer&#34;: &#34;ünï 42&#34;" in page or "&quot;answer&quot;" in page
    manager = async_app.job_manager
    job = await manager.get_job_async(job_id)
    shown = job_details(job, await manager.get_job_history_async(job_id))
    assert 'result         {"answer": "ünï 42"}' in shown
