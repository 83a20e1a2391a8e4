"""Execution controls (`sqla_jobs.controls`), enforced by the claim across workers: paused
queues and tasks, concurrency limits, rate limits. Through the public API, on real
PostgreSQL; the claims race from several connections at once, as several workers' do."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs.controls import Control, Limits, Rate
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Database


def worker_for(app: sqla_jobs.App, **options: Any) -> sqla_jobs.Worker:
    return sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(
            **{"install_signal_handlers": False, "polling_interval": 0.5, **options}
        ),
    )


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=10)


def statuses(database: Database, queue: str) -> dict[str, int]:
    rows = database.rows(
        "SELECT status::text AS status, count(*) AS n FROM sqla_jobs_jobs WHERE queue = %s "
        "GROUP BY 1",
        (queue,),
    )
    return {row["status"]: row["n"] for row in rows}


async def test_a_paused_queue_starts_nothing_defers_go_on_and_a_resume_wakes_the_workers(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ran: list[str] = []

    @async_app.task(name="tests.mail", queue="emails")
    async def mail(n: int) -> None:
        ran.append(f"mail{n}")

    @async_app.task(name="tests.report", queue="reports")
    async def report(n: int) -> None:
        ran.append(f"report{n}")

    manager = async_app.job_manager
    await manager.pause_queue_async("emails")
    for n in range(3):
        await mail.defer_async(n=n)
        await report.defer_async(n=n)
    # Two workers; neither starts the paused queue's jobs.
    workers = [worker_for(async_app) for _ in range(2)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        assert await database.wait_until_async(lambda: len(ran) == 3, within=10), ran
        await asyncio.sleep(0.5)
        assert sorted(ran) == ["report0", "report1", "report2"]
        assert statuses(database, "emails") == {"todo": 3}
        await mail.defer_async(n=3)  # deferring still works
        assert statuses(database, "emails") == {"todo": 4}
        # A resume wakes them by NOTIFY, well before their 0.5 s poll would.
        resumed = time.monotonic()
        await manager.resume_queue_async("emails")
        assert await database.wait_until_async(lambda: len(ran) == 7, within=10), ran
        assert time.monotonic() - resumed < 2
    finally:
        await stop(*tasks)
    controls = await manager.list_controls_async()
    assert controls == [Control("queue", "emails", False, Limits(), controls[0].updated_at)]


async def test_a_pause_outlives_the_workers_and_pauses_a_running_worker_too(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ran: list[int] = []

    @async_app.task(name="tests.job", queue="q")
    async def job(n: int) -> None:
        ran.append(n)

    worker = worker_for(async_app)
    task = asyncio.create_task(worker.run())
    try:
        await job.defer_async(n=1)
        assert await database.wait_until_async(lambda: ran == [1], within=10)
        await async_app.job_manager.pause_queue_async("q")
        await asyncio.sleep(0.3)  # the NOTIFY reaches the worker
        await job.defer_async(n=2)
        await asyncio.sleep(1.0)
        assert ran == [1]
    finally:
        await stop(task)
    # A new worker (a restart) finds the queue paused still.
    task = asyncio.create_task(worker_for(async_app).run())
    try:
        await asyncio.sleep(1.0)
        assert ran == [1]
        await async_app.job_manager.resume_queue_async("q")
        assert await database.wait_until_async(lambda: ran == [1, 2], within=10)
    finally:
        await stop(task)


async def test_a_paused_task_waits_in_any_queue(
    async_app: sqla_jobs.App, database: Database
) -> None:
    ran: list[str] = []

    @async_app.task(name="tests.slow_api", queue="a")
    async def slow_api() -> None:
        ran.append("slow_api")

    @async_app.task(name="tests.other", queue="a")
    async def other() -> None:
        ran.append("other")

    await async_app.job_manager.pause_task_async("tests.slow_api")
    await slow_api.defer_async()
    await async_app.configure_task("tests.slow_api", queue="b").defer_async()
    await other.defer_async()
    task = asyncio.create_task(worker_for(async_app).run())
    try:
        assert await database.wait_until_async(lambda: ran == ["other"], within=10)
        await asyncio.sleep(0.5)
        assert ran == ["other"]
        await async_app.job_manager.resume_task_async("tests.slow_api")
        assert await database.wait_until_async(lambda: len(ran) == 3, within=10), ran
    finally:
        await stop(task)


async def claim_race(
    app: sqla_jobs.App,
    database: Database,
    *,
    claimers: int,
    seconds: float,
    hold: float,
    queues: list[str] | None = None,
) -> list[list[int]]:
    """``claimers`` claim in loops for ``seconds``, each on its own connection, through the
    controlled claim, and finish what they claimed after ``hold`` seconds (the jobs "run").
    Returns, per claim, the ids claimed."""
    jobs = WorkerDatabase(app.connector, app.statements)
    worker_id = await jobs.register_worker(name="race", queues=queues, concurrency=100)
    claims: list[list[int]] = []
    deadline = time.monotonic() + seconds

    async def claimer() -> None:
        while time.monotonic() < deadline:
            claimed = await jobs.claim(worker_id=worker_id, queues=queues, limit=5, controlled=True)
            claims.append([job.id for job in claimed])
            if claimed:
                await asyncio.sleep(hold)
                await jobs.finish_succeeded(
                    worker_id,
                    [job.id for job in claimed],
                    [job.attempts for job in claimed],
                    delete=False,
                )
            else:
                await asyncio.sleep(0.01)

    await asyncio.gather(*(claimer() for _ in range(claimers)))
    return claims


async def test_a_concurrency_limit_holds_however_many_claim_at_once(
    async_app: sqla_jobs.App, database: Database
) -> None:
    limited = async_app.configure_task("tests.limited", queue="limited")
    free = async_app.configure_task("tests.free", queue="free")
    for n in range(300):
        await limited.defer_async(n=n)
        await free.defer_async(n=n)
    await async_app.job_manager.set_queue_limits_async("limited", concurrency_limit=3)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            running = statuses(database, "limited").get("doing", 0)
            peak = max(peak, running)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        claims = await claim_race(async_app, database, claimers=8, seconds=2, hold=0.05)
    finally:
        watcher.cancel()
    done = statuses(database, "limited").get("succeeded", 0)
    assert 0 < peak <= 3, peak
    # The limit lets jobs through, 3 at a time: at most 3 per 0.05 s (some 120 in 2 s), while
    # the free queue, claimed by the same claimers, is not held back.
    assert 20 <= done <= 130, done
    assert statuses(database, "free").get("succeeded", 0) > done
    assert all(len(ids) == len(set(ids)) for ids in claims)


async def test_a_task_concurrency_limit_holds_across_queues(
    async_app: sqla_jobs.App, database: Database
) -> None:
    for n in range(100):
        deferrer = async_app.configure_task("tests.api_call", queue=f"q{n % 4}")
        await deferrer.defer_async(n=n)
    await async_app.job_manager.set_task_limits_async("tests.api_call", concurrency_limit=2)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(
                peak,
                database.scalar(
                    "SELECT count(*) FROM sqla_jobs_jobs WHERE task_name = 'tests.api_call' "
                    "AND status = 'doing'"
                ),
            )
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        await claim_race(async_app, database, claimers=6, seconds=2, hold=0.02)
    finally:
        watcher.cancel()
    succeeded = database.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'succeeded'")
    assert 0 < peak <= 2, peak
    assert succeeded >= 10, succeeded


async def test_a_rate_limit_holds_across_claimers_and_jobs_wait_not_fail(
    async_app: sqla_jobs.App, database: Database
) -> None:
    limited = async_app.configure_task("tests.rated", queue="rated")
    for n in range(400):
        await limited.defer_async(n=n)
    await async_app.job_manager.set_queue_limits_async("rated", rate_limit="20/0.5s")
    began = database.scalar("SELECT clock_timestamp()")
    await claim_race(async_app, database, claimers=6, seconds=2.5, hold=0.0)
    starts = [
        row["started_at"]
        for row in database.rows(
            "SELECT started_at FROM sqla_jobs_jobs WHERE queue = 'rated' AND started_at IS "
            "NOT NULL ORDER BY started_at"
        )
    ]
    # A full bucket (20) at first, then 20 per 0.5 s: by any instant t, at most
    # 20 + 40 * (t - start) jobs started.
    assert starts, "nothing started"
    for index, started in enumerate(starts, 1):
        allowed = 20 + 40 * (started - began).total_seconds()
        assert index <= allowed + 1, (index, allowed)
    # It let jobs through at about its rate: 20 + 40 * 2.5 = 120 at most.
    assert 60 <= len(starts) <= 121, len(starts)
    assert statuses(database, "rated").get("failed", 0) == 0


async def test_workers_keep_to_a_limit_declared_in_code(
    async_app: sqla_jobs.App, database: Database
) -> None:
    running = 0
    peak = 0
    ran = 0

    @async_app.task(name="tests.declared", queue="declared")
    async def declared() -> None:
        nonlocal running, peak, ran
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        ran += 1

    async_app.configure_queue("declared", concurrency_limit=2)
    for _ in range(30):
        await declared.defer_async()
    workers = [worker_for(async_app, concurrency=5) for _ in range(3)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        assert await database.wait_until_async(lambda: ran == 30, within=20), ran
    finally:
        await stop(*tasks)
    assert peak == 2, peak
    controls = await async_app.job_manager.list_controls_async()
    assert [(c.scope, c.name, c.limits) for c in controls] == [
        ("queue", "declared", Limits(concurrency_limit=2))
    ]


async def test_workers_keep_to_a_task_limit_declared_on_the_task(
    async_app: sqla_jobs.App, database: Database
) -> None:
    running = 0
    peak = 0
    ran = 0

    @async_app.task(name="tests.partner_call", concurrency_limit=1, rate_limit="1000/s")
    async def partner_call() -> None:
        nonlocal running, peak, ran
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        ran += 1

    for n in range(12):
        await async_app.configure_task("tests.partner_call", queue=f"q{n % 3}").defer_async()
    workers = [worker_for(async_app, concurrency=4) for _ in range(2)]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        assert await database.wait_until_async(lambda: ran == 12, within=20), ran
    finally:
        await stop(*tasks)
    assert peak == 1, peak
    controls = await async_app.job_manager.list_controls_async()
    assert [(c.scope, c.name, c.limits) for c in controls] == [
        ("task", "tests.partner_call", Limits(1, Rate(1000, 1.0)))
    ]


def test_limits_declared_on_a_task_are_checked_where_it_is_declared() -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=""))
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="concurrency_limit"):

        @app.task(name="bad", concurrency_limit=0)
        def bad() -> None: ...

    with pytest.raises(sqla_jobs.InvalidJobOptions, match="rate_limit"):

        @app.task(name="bad_rate", rate_limit="often")
        def bad_rate() -> None: ...

    @app.task(name="good", rate_limit="5/m")
    def good() -> None: ...

    app.configure_queue("q", concurrency_limit=3)
    assert app.declared_limits == {
        ("queue", "q"): Limits(3),
        ("task", "good"): Limits(None, Rate(5, 60.0)),
    }
    assert app.with_connector(app.connector).declared_limits == app.declared_limits


def test_bad_limits_are_refused_with_a_clear_error(app: sqla_jobs.App) -> None:
    manager = app.job_manager
    for bad in (0, -1, "3", 2.5, True, 2**31):
        with pytest.raises(sqla_jobs.InvalidJobOptions, match="concurrency_limit"):
            manager.set_queue_limits("q", concurrency_limit=bad)  # type: ignore[arg-type]
    for rate in ("", "fast", "10", "0/s", "10/x", "10/0s", "-1/s", (5, 0), (0, 1), 7):
        with pytest.raises(sqla_jobs.InvalidJobOptions, match="rate_limit"):
            manager.set_queue_limits("q", rate_limit=rate)  # type: ignore[arg-type]
    for name in ("", None, "a\x00b"):
        with pytest.raises(sqla_jobs.InvalidJobOptions):
            manager.pause_queue(name)  # type: ignore[arg-type]
    assert manager.list_controls() == []
    manager.set_queue_limits("q", concurrency_limit=4, rate_limit="30/5s")
    (control,) = manager.list_controls()
    assert control.limits == Limits(4, Rate(30, 5.0))
    assert str(control.limits.rate_limit) == "30/5s"
    manager.set_queue_limits("q")  # both removed
    assert manager.list_controls()[0].controls_something is False


def test_rates_read_as_written() -> None:
    from sqla_jobs.controls import parse_rate

    assert parse_rate("100/s") == Rate(100, 1.0)
    assert parse_rate("10/m") == Rate(10, 60.0)
    assert parse_rate(" 5 / h ") == Rate(5, 3600.0)
    assert parse_rate("1/d") == Rate(1, 86400.0)
    assert parse_rate("30/5s") == Rate(30, 5.0)
    assert parse_rate("3/0.5s") == Rate(3, 0.5)
    assert parse_rate((7, 2)) == Rate(7, 2.0)
    assert str(Rate(10, 60.0)) == "10/m" and str(Rate(3, 0.5)) == "3/0.5s"
    assert datetime.timedelta  # the module's import is used by the rate tests above
