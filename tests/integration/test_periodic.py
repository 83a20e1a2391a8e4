"""Periodic tasks against a real PostgreSQL: the worker defers each tick once, however many
workers run (a unique key, not timing), the job gets the tick's timestamp, and a restart defers
the tick it just missed but no older one."""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

import sqla_jobs
from sqla_jobs import queries
from sqla_jobs.worker.database import WorkerDatabase, periodic_params
from sqla_jobs.worker.periodic import PeriodicDeferrer

if TYPE_CHECKING:
    from conftest import Database

EVERY_SECOND = "* * * * * *"


def ts(*args: int) -> int:
    """Unix seconds of a UTC date and time."""
    return int(datetime.datetime(*args, tzinfo=datetime.UTC).timestamp())  # type: ignore[misc]


def worker_for(app: sqla_jobs.App, **options: Any) -> sqla_jobs.Worker:
    return sqla_jobs.Worker(
        app,
        sqla_jobs.WorkerOptions(polling_interval=0.05, install_signal_handlers=False, **options),
    )


async def stop_all(*running: tuple[sqla_jobs.Worker, asyncio.Task[None]]) -> None:
    for worker, _ in running:
        worker.stop()
    await asyncio.wait_for(asyncio.gather(*(task for _, task in running)), timeout=15)


@pytest.fixture
async def psycopg_app(db_url: str) -> AsyncIterator[sqla_jobs.App]:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    await app.open_async()
    yield app
    await app.close_async()


def defers(database: Database) -> list[dict[str, Any]]:
    return database.rows(
        "SELECT task_name, periodic_id, defer_timestamp, job_id "
        "FROM sqla_jobs_periodic_defers ORDER BY task_name, periodic_id, defer_timestamp"
    )


# -- the worker defers and runs them ------------------------------------------------------------


async def test_a_per_second_periodic_task_is_deferred_each_tick_and_runs_with_its_timestamp(
    async_app: sqla_jobs.App, database: Database
) -> None:
    seen: list[int] = []

    @async_app.periodic(cron=EVERY_SECOND, kwargs={"label": "x"})
    @async_app.task(name="tests.every_second")
    async def every_second(label: str, timestamp: int) -> None:
        assert label == "x"
        seen.append(timestamp)

    started = time.time()
    worker = worker_for(async_app)
    running = asyncio.create_task(worker.run())
    try:
        assert await database.wait_until_async(lambda: len(seen) >= 3, within=8), seen
    finally:
        await stop_all((worker, running))
    stopped = time.time()

    assert all(isinstance(t, int) for t in seen)
    assert sorted(seen) == list(range(min(seen), max(seen) + 1)), "no tick lost or repeated"
    assert started - 1 <= min(seen) and max(seen) <= stopped
    rows = defers(database)
    jobs = {job["id"]: job for job in database.jobs()}
    assert len(rows) == len(jobs)
    for row in rows:
        assert (row["task_name"], row["periodic_id"]) == ("tests.every_second", "")
        job = jobs[row["job_id"]]
        assert job["task_name"] == "tests.every_second"
        assert job["args"] == {"label": "x", "timestamp": row["defer_timestamp"]}
    assert set(seen) <= {row["defer_timestamp"] for row in rows}


async def test_two_workers_defer_each_tick_exactly_once(
    psycopg_app: sqla_jobs.App, database: Database, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqla_jobs.periodic")
    runs: collections.Counter[int] = collections.Counter()

    @psycopg_app.periodic(cron=EVERY_SECOND)
    @psycopg_app.task(name="tests.once")
    async def once(timestamp: int) -> None:
        runs[timestamp] += 1

    # Two apps with their own pools: as two worker processes would be.
    other_app = psycopg_app.with_connector(sqla_jobs.PsycopgConnector(conninfo=db_url))
    await other_app.open_async()
    try:
        workers = [worker_for(psycopg_app), worker_for(other_app)]
        running = [(w, asyncio.create_task(w.run())) for w in workers]
        try:
            assert await database.wait_until_async(lambda: len(runs) >= 4, within=10)
        finally:
            await stop_all(*running)
    finally:
        await other_app.close_async()

    per_tick = database.rows(
        "SELECT (args->>'timestamp')::bigint AS tick, count(*) AS jobs FROM sqla_jobs_jobs "
        "GROUP BY 1 ORDER BY 1"
    )
    ticks = [row["tick"] for row in per_tick]
    assert all(row["jobs"] == 1 for row in per_tick), per_tick
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), "no tick lost"
    assert len(defers(database)) == len(per_tick)
    assert set(runs.values()) == {1}, "no tick ran twice"
    # Both workers sent the ticks: the losers' statements found the tick taken.
    assert any("deferred already" in record.getMessage() for record in caplog.records)


# -- the statement: one job per tick, by the unique key ----------------------------------------


async def test_a_tick_sent_while_another_transaction_holds_it_defers_nothing(
    psycopg_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.raced")
    def raced(timestamp: int) -> None: ...

    tick = psycopg_app.periodic_tasks[("tests.raced", "")].tick(ts(2030, 1, 1, 10, 0))
    with psycopg.connect(db_url) as first:  # a transaction left open
        rows = first.execute(queries.defer_periodic_jobs.sql, periodic_params([tick])).fetchall()
        assert len(rows) == 1
        second = asyncio.create_task(WorkerDatabase(psycopg_app.connector).defer_periodic([tick]))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second statement waits for the first's tick row"
        first.commit()
        assert await asyncio.wait_for(second, timeout=5) == {}
    assert database.job_count() == 1
    assert len(defers(database)) == 1


async def test_a_tick_whose_first_transaction_rolls_back_is_deferred_by_the_second(
    psycopg_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.raced")
    def raced(timestamp: int) -> None: ...

    tick = psycopg_app.periodic_tasks[("tests.raced", "")].tick(ts(2030, 1, 1, 10, 0))
    with psycopg.connect(db_url) as first:
        first.execute(queries.defer_periodic_jobs.sql, periodic_params([tick]))
        second = asyncio.create_task(WorkerDatabase(psycopg_app.connector).defer_periodic([tick]))
        await asyncio.sleep(0.3)
        first.rollback()
        deferred = await asyncio.wait_for(second, timeout=5)
    (job,) = database.jobs()
    assert deferred == {tick.key: job["id"]}, "the tick is not lost"
    assert defers(database)[0]["job_id"] == job["id"]


async def test_many_connections_sending_the_same_ticks_at_once_defer_one_job_each(
    psycopg_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.crowd")
    def crowd(timestamp: int) -> None: ...

    periodic = psycopg_app.periodic_tasks[("tests.crowd", "")]
    ticks = [periodic.tick(ts(2030, 1, 1, 10, minute)) for minute in range(5)]
    connectors = [sqla_jobs.PsycopgConnector(conninfo=db_url) for _ in range(6)]
    managers = [WorkerDatabase(c) for c in connectors]
    for connector in connectors:
        await connector.open_async()
    try:
        results = await asyncio.gather(*(m.defer_periodic(ticks) for m in managers))
    finally:
        for connector in connectors:
            await connector.close_async()

    winners = collections.Counter(key for result in results for key in result)
    assert winners == {tick.key: 1 for tick in ticks}
    assert database.job_count() == 5


async def test_a_tick_whose_queueing_lock_is_taken_is_recorded_without_a_job(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.locked", queueing_lock="only-one")
    def locked(timestamp: int) -> None: ...

    periodic = psycopg_app.periodic_tasks[("tests.locked", "")]
    first, second = periodic.tick(ts(2030, 1, 1, 10, 0)), periodic.tick(ts(2030, 1, 1, 10, 1))
    deferred = await WorkerDatabase(psycopg_app.connector).defer_periodic([first])
    assert deferred[first.key] is not None
    assert await WorkerDatabase(psycopg_app.connector).defer_periodic([second]) == {
        second.key: None
    }
    assert database.job_count() == 1, "the waiting job kept its queueing lock"
    assert len(defers(database)) == 2, "the second tick counts as done"


# -- restarts: the last missed tick, not a backlog ----------------------------------------------


async def run_deferrer_once(app: sqla_jobs.App, now: float) -> None:
    """Start a deferrer whose clock reads ``now``, let it do its first round, stop it."""
    deferrer = PeriodicDeferrer(
        WorkerDatabase(app.connector), app.periodic_tasks.values(), clock=lambda: now
    )
    stop = asyncio.Event()
    running = asyncio.create_task(deferrer.run(stop))
    try:
        deadline = time.monotonic() + 5
        while deferrer.rounds < 1:
            assert time.monotonic() < deadline, "the deferrer did no round in 5 s"
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_a_restart_defers_the_tick_just_missed_but_no_older_one(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.every_minute")
    def every_minute(timestamp: int) -> None: ...

    @psycopg_app.periodic(cron="0 * * * *")
    @psycopg_app.task(name="tests.hourly")
    def hourly(timestamp: int) -> None: ...

    def deferred() -> list[tuple[str, int]]:
        return [(j["task_name"], j["args"]["timestamp"]) for j in database.jobs()]

    # Down since 9:00; starts at 10:30:30. The minute's tick (30 s ago) is deferred, not the
    # 10:29 tick nor any before it; the hour's (30 min ago, past the 10 min limit) is not.
    await run_deferrer_once(psycopg_app, ts(2030, 1, 1, 10, 30, 30))
    assert deferred() == [("tests.every_minute", ts(2030, 1, 1, 10, 30))]

    # Restarted within the same minute: that tick is deferred already.
    await run_deferrer_once(psycopg_app, ts(2030, 1, 1, 10, 30, 50))
    assert len(deferred()) == 1

    # Down five minutes, restarted 9 min 59 s after the hour: the latest minute's tick and
    # the hour's, which is still within the 10 min limit.
    await run_deferrer_once(psycopg_app, ts(2030, 1, 1, 11, 9, 59))
    assert sorted(deferred()[1:]) == [
        ("tests.every_minute", ts(2030, 1, 1, 11, 9)),
        ("tests.hourly", ts(2030, 1, 1, 11, 0)),
    ]


async def test_the_deferrer_prunes_old_tick_records_but_keeps_recent_and_the_last_few(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.pruned")
    def pruned(timestamp: int) -> None: ...

    now = ts(2030, 1, 1, 12, 0, 30)
    old = [ts(2030, 1, 1, 0, 0) + 60 * i for i in range(15)]  # twelve hours before now
    recent = [now - 60 * i for i in range(1, 13)]  # the last twelve minutes
    rows = [("tests.pruned", "", t) for t in old] + [("tests.gone", "", t) for t in old[:3]]
    rows += [("tests.busy", "", t) for t in recent]
    with database.conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sqla_jobs_periodic_defers (task_name, periodic_id, defer_timestamp) "
            "VALUES (%s, %s, %s)",
            rows,
        )

    await run_deferrer_once(psycopg_app, now)

    kept = collections.defaultdict(list)
    for row in defers(database):
        kept[row["task_name"]].append(row["defer_timestamp"])
    # The ten newest of a task: the new tick and the nine newest old ones.
    assert kept["tests.pruned"] == [*old[-9:], ts(2030, 1, 1, 12, 0)]
    assert kept["tests.gone"] == old[:3], "a task no longer declared keeps its last few"
    assert kept["tests.busy"] == sorted(recent), "recent ticks are kept, however many"


# -- when the worker does not defer -----------------------------------------------------------


async def test_a_worker_with_periodic_false_or_not_waiting_defers_no_tick(
    psycopg_app: sqla_jobs.App, database: Database
) -> None:
    @psycopg_app.periodic(cron=EVERY_SECOND)
    @psycopg_app.task(name="tests.every_second")
    def every_second(timestamp: int) -> None: ...

    worker = worker_for(psycopg_app, periodic=False)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(1.5)
    await stop_all((worker, running))
    await asyncio.wait_for(
        psycopg_app.run_worker_async(wait=False, install_signal_handlers=False), timeout=10
    )
    assert database.job_count() == 0
    assert defers(database) == []


async def test_a_hung_defer_is_given_up_after_the_database_timeout_and_tried_again(
    psycopg_app: sqla_jobs.App, database: Database, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The tick's statement waits behind a lock nobody releases (a hung server, to the
    client): the deferrer gives up on it after database_timeout instead of hanging (and
    holding up the worker's stop), and defers the tick once the server answers again."""

    @psycopg_app.periodic(cron="* * * * *")
    @psycopg_app.task(name="tests.every_minute")
    def every_minute(timestamp: int) -> None: ...

    now = float(ts(2030, 1, 1, 10, 0, 30))
    deferrer = PeriodicDeferrer(
        WorkerDatabase(psycopg_app.connector),
        psycopg_app.periodic_tasks.values(),
        clock=lambda: now,
        database_timeout=0.3,
    )
    stop = asyncio.Event()
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE sqla_jobs_periodic_defers IN ACCESS EXCLUSIVE MODE")
        running = asyncio.create_task(deferrer.run(stop))
        try:
            assert await database.wait_until_async(
                lambda: any("no answer within 0.3 s" in r.getMessage() for r in caplog.records),
                within=5,
            )
            assert deferrer.rounds == 0 and database.job_count() == 0
        except BaseException:
            stop.set()
            raise
        blocker.rollback()
    try:
        assert await database.wait_until_async(lambda: deferrer.rounds >= 1, within=5)
        assert [job["args"]["timestamp"] for job in database.jobs()] == [ts(2030, 1, 1, 10, 0)]
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)
