"""Deferring jobs through the public API, once per connector: what a defer writes, batches that
are all or nothing, arguments that are not JSON, and the ways an app reaches its connector."""

from __future__ import annotations

import asyncio
import datetime
import math
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Connectors, Database

UTC = datetime.UTC


def register_tasks(app: sqla_jobs.App) -> sqla_jobs.Task:
    @app.task(name="tests.send_email")
    def send_email(**kwargs: Any) -> None:
        pass

    return send_email


# -- what one defer writes -----------------------------------------------------------------------


async def test_defer_writes_a_todo_job_with_the_task_defaults_and_returns_its_id(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = register_tasks(app).defer(to="ada@example.com")

    job = database.job(job_id)
    assert (job["task_name"], job["queue"], job["priority"], job["status"]) == (
        "tests.send_email",
        "default",
        0,
        "todo",
    )
    assert job["args"] == {"to": "ada@example.com"}
    assert (job["lock"], job["queueing_lock"], job["scheduled_at"], job["attempts"]) == (
        None,
        None,
        None,
        0,
    )


async def test_defer_async_writes_the_job_and_returns_its_id(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = await register_tasks(app).defer_async(to="ada@example.com")

    assert [(job["id"], job["args"], job["status"]) for job in database.jobs()] == [
        (job_id, {"to": "ada@example.com"}, "todo")
    ]


async def test_task_decorator_options_are_the_defaults_of_its_jobs(
    app: sqla_jobs.App, database: Database
) -> None:
    @app.task(name="tests.report", queue="reports", priority=7, lock="ledger", queueing_lock="q")
    def report() -> None:
        pass

    job = database.job(report.defer())

    assert (job["queue"], job["priority"], job["lock"], job["queueing_lock"]) == (
        "reports",
        7,
        "ledger",
        "q",
    )


async def test_configure_stores_queue_priority_lock_and_queueing_lock(
    app: sqla_jobs.App, database: Database
) -> None:
    task = register_tasks(app)

    job_id = task.configure(
        queue="mail", priority=-3, lock="user:1", queueing_lock="welcome:1"
    ).defer(to="x")
    async_id = await task.configure(
        queue="mail", priority=5, lock="user:2", queueing_lock="welcome:2"
    ).defer_async(to="y")

    stored = [
        (job["id"], job["queue"], job["priority"], job["lock"], job["queueing_lock"])
        for job in database.jobs()
    ]
    assert stored == [
        (job_id, "mail", -3, "user:1", "welcome:1"),
        (async_id, "mail", 5, "user:2", "welcome:2"),
    ]


async def test_configure_schedule_in_stores_that_much_time_from_now(
    app: sqla_jobs.App, database: Database
) -> None:
    before = datetime.datetime.now(UTC)
    job_id = register_tasks(app).configure(schedule_in={"minutes": 5}).defer()
    after = datetime.datetime.now(UTC)

    scheduled_at = database.job(job_id)["scheduled_at"]
    delay = datetime.timedelta(minutes=5)
    assert before + delay <= scheduled_at <= after + delay


async def test_configure_schedule_at_stores_that_exact_instant(
    app: sqla_jobs.App, database: Database
) -> None:
    when = datetime.datetime(
        2031, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
    )

    job_id = await register_tasks(app).configure(schedule_at=when).defer_async()

    assert database.job(job_id)["scheduled_at"] == when


def test_schedule_at_without_time_zone_is_refused_asking_for_an_aware_datetime(
    connectors: type[Connectors],
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn("psycopg2", connectors.DOWN_SERVER_URL))
    task = register_tasks(app)

    with pytest.raises(ValueError, match="no time zone"):
        task.configure(schedule_at=datetime.datetime(2031, 1, 1))
    with pytest.raises(ValueError, match="not both"):
        task.configure(schedule_at=datetime.datetime.now(UTC), schedule_in={"seconds": 1})


# -- queueing locks ------------------------------------------------------------------------------


async def test_second_defer_with_the_same_queueing_lock_is_refused_naming_the_lock(
    app: sqla_jobs.App, database: Database
) -> None:
    deferrer = register_tasks(app).configure(queueing_lock="digest:42")
    first = deferrer.defer()

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'digest:42'") as caught:
        await deferrer.defer_async()

    assert caught.value.queueing_lock == "digest:42"
    assert "tests.send_email" in str(caught.value)
    assert [job["id"] for job in database.jobs()] == [first]


async def test_same_queueing_lock_is_refused_from_sync_code_too(
    app: sqla_jobs.App, database: Database
) -> None:
    deferrer = register_tasks(app).configure(queueing_lock="digest:42")
    deferrer.defer()

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'digest:42'"):
        deferrer.defer()
    assert database.job_count() == 1


# -- batches -------------------------------------------------------------------------------------


@pytest.fixture(params=["insert", "copy"])
def batch_path(request: pytest.FixtureRequest, app: sqla_jobs.App) -> str:
    """Run a batch test twice: batches written by one INSERT, and (where the connector can
    COPY) by COPY, which the job manager uses from `JobManager.copy_threshold` jobs on."""
    app.job_manager.copy_threshold = 10**9 if request.param == "insert" else 1
    return str(request.param)


@pytest.mark.usefixtures("batch_path")
async def test_batch_defer_writes_every_job_in_one_statement_and_returns_ids_in_order(
    app: sqla_jobs.App, database: Database
) -> None:
    deferrer = register_tasks(app).configure(queue="bulk", priority=2)
    first = [{"n": n, "to": f"user{n}@example.com"} for n in range(50)]
    second = [{"n": n} for n in range(50, 80)]

    ids = deferrer.batch_defer(*first)
    async_ids = await deferrer.batch_defer_async(*second)

    jobs = database.jobs()
    assert ids + async_ids == [job["id"] for job in jobs]
    assert [job["args"] for job in jobs] == first + second
    assert {(job["queue"], job["priority"], job["status"]) for job in jobs} == {("bulk", 2, "todo")}
    # One statement per batch: each batch's rows share one transaction and one instant.
    batches = (jobs[:50], jobs[50:])
    assert [len({job["xmin"] for job in batch}) for batch in batches] == [1, 1]
    assert [len({job["created_at"] for job in batch}) for batch in batches] == [1, 1]
    assert jobs[0]["xmin"] != jobs[-1]["xmin"]


async def test_big_batch_goes_through_copy_with_every_column_and_its_history(
    app: sqla_jobs.App, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqla_jobs.jobs import JobSpec

    register_tasks(app)
    copies: list[str] = []
    copy_rows, copy_rows_async = app.connector.copy_rows, app.connector.copy_rows_async

    def spy(*args: Any) -> None:
        copies.append("sync")
        copy_rows(*args)

    async def spy_async(*args: Any) -> None:
        copies.append("async")
        await copy_rows_async(*args)

    monkeypatch.setattr(app.connector, "copy_rows", spy)
    monkeypatch.setattr(app.connector, "copy_rows_async", spy_async)
    at = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    size = app.job_manager.copy_threshold

    def batch(offset: int) -> list[JobSpec]:
        return [
            JobSpec(
                task_name="tests.send_email",
                args={"n": offset + n},
                queue=f"q{n % 3}",
                priority=n % 5,
                lock=f"lock:{n % 7}" if n % 2 else None,
                queueing_lock=f"once:{offset + n}" if n % 4 == 0 else None,
                scheduled_at=at if n % 10 == 0 else None,
            )
            for n in range(size)
        ]

    first, second = batch(0), batch(size)
    ids = app.job_manager.defer_many(first)
    copied_from_sync, copies[:] = copies[:], []
    ids += await app.job_manager.defer_many_async(second)

    # psycopg 3 connectors COPY from sync and async code; the others write one INSERT.
    assert copied_from_sync == (["sync"] if app.connector.supports_copy else [])
    assert ("async" in copies) is app.connector.supports_copy_async
    jobs = database.jobs()
    assert [job["id"] for job in jobs] == ids == sorted(ids)
    assert [
        (j["args"], j["queue"], j["priority"], j["lock"], j["queueing_lock"], j["scheduled_at"])
        for j in jobs
    ] == [
        (dict(s.args), s.queue, s.priority, s.lock, s.queueing_lock, s.scheduled_at)
        for s in first + second
    ]
    assert {(j["status"], j["attempts"]) for j in jobs} == {("todo", 0)}
    # Creation is each row's created_at: a batch writes no event row.
    assert database.scalar("SELECT count(*) FROM sqla_jobs_job_events") == 0
    assert database.events(ids[-1]) == [{"status": "todo", "error": None}]


@pytest.mark.usefixtures("batch_path")
async def test_task_batch_defer_uses_the_task_options(
    app: sqla_jobs.App, database: Database
) -> None:
    @app.task(name="tests.resize", queue="images", priority=4)
    def resize(**kwargs: Any) -> None:
        pass

    ids = resize.batch_defer({"size": 1}, {"size": 2})
    async_ids = await resize.batch_defer_async({"size": 3})

    jobs = database.jobs()
    assert [job["id"] for job in jobs] == ids + async_ids
    assert [(job["queue"], job["priority"], job["args"]) for job in jobs] == [
        ("images", 4, {"size": 1}),
        ("images", 4, {"size": 2}),
        ("images", 4, {"size": 3}),
    ]


async def test_empty_batch_defers_nothing(app: sqla_jobs.App, database: Database) -> None:
    task = register_tasks(app)

    assert task.batch_defer() == []
    assert await task.batch_defer_async() == []
    assert database.job_count() == 0


@pytest.mark.usefixtures("batch_path")
async def test_batch_clashing_with_a_waiting_queueing_lock_writes_no_job_of_the_batch(
    app: sqla_jobs.App, database: Database
) -> None:
    deferrer = register_tasks(app).configure(queueing_lock="nightly")
    waiting = deferrer.defer()

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'nightly'") as caught:
        deferrer.batch_defer({"n": 1}, {"n": 2}, {"n": 3})
    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'nightly'"):
        await deferrer.batch_defer_async({"n": 1}, {"n": 2}, {"n": 3})

    assert caught.value.queueing_lock == "nightly"
    assert "None of the 3 jobs of this batch were deferred" in str(caught.value)
    assert [job["id"] for job in database.jobs()] == [waiting]


@pytest.mark.usefixtures("batch_path")
async def test_batch_where_one_job_clashes_on_its_queueing_lock_writes_none_of_them(
    app: sqla_jobs.App, database: Database
) -> None:
    """Jobs with their own queueing locks in one batch (the job manager's batch, which the
    task API builds on): the one clash undoes the whole batch."""
    from sqla_jobs.jobs import JobSpec

    waiting = register_tasks(app).configure(queueing_lock="sync:7").defer()
    specs = [
        JobSpec(task_name="tests.send_email", args={"n": n}, queueing_lock=f"sync:{n}")
        for n in (5, 6, 7, 8)
    ]

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'sync:7'") as caught:
        app.job_manager.defer_many(specs)
    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'sync:7'"):
        await app.job_manager.defer_many_async(specs)

    assert caught.value.queueing_lock == "sync:7"
    assert "None of the 4 jobs of this batch were deferred" in str(caught.value)
    assert [job["id"] for job in database.jobs()] == [waiting]


@pytest.mark.usefixtures("batch_path")
async def test_batch_whose_jobs_share_a_queueing_lock_is_refused_whole(
    app: sqla_jobs.App, database: Database
) -> None:
    deferrer = register_tasks(app).configure(queueing_lock="nightly")

    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'nightly'"):
        deferrer.batch_defer({"n": 1}, {"n": 2}, {"n": 3})
    with pytest.raises(sqla_jobs.AlreadyEnqueued, match="'nightly'"):
        await deferrer.batch_defer_async({"n": 1}, {"n": 2}, {"n": 3})

    assert database.job_count() == 0


# -- arguments -----------------------------------------------------------------------------------

JSON_ARGUMENTS: dict[str, Any] = {
    "text": "héllo wörld ✓ 🎉",
    "quote": 'it\'s "quoted" \\ and %(not_a_placeholder)s and %s',
    "copy_text": "tab\there\nnew line\r\\N \\. end",
    "int": 42,
    "big": 2**62,
    "negative": -7,
    "float": 3.25,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", [3.0], {"four": 4}],
    "nested": {"a": {"b": {"c": []}}, "empty": {}},
}


@pytest.mark.usefixtures("batch_path")
async def test_arguments_round_trip_as_json(app: sqla_jobs.App, database: Database) -> None:
    task = register_tasks(app)

    task.defer(**JSON_ARGUMENTS)
    await task.defer_async(**JSON_ARGUMENTS)
    task.batch_defer(JSON_ARGUMENTS, JSON_ARGUMENTS)
    await task.batch_defer_async(JSON_ARGUMENTS)

    jobs = database.jobs()
    assert [job["args"] for job in jobs] == [JSON_ARGUMENTS] * 5
    assert app.job_manager.get_job(jobs[0]["id"]).args == JSON_ARGUMENTS


class Customer:
    pass


NOT_JSON = [
    pytest.param(Customer(), id="object"),
    pytest.param(datetime.date(2030, 1, 1), id="date"),
    pytest.param({1, 2}, id="set"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param([1, object()], id="object_in_a_list"),
    # Python's json writes these, but they are not JSON and PostgreSQL refuses them.
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="infinity"),
    # Valid JSON that jsonb cannot store.
    pytest.param("nul \x00 char", id="nul_character"),
]


async def assert_refused_naming_the_argument(app: sqla_jobs.App, value: Any) -> None:
    task = register_tasks(app)

    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'customer'") as caught:
        task.defer(to="x", customer=value)
    assert "tests.send_email" in str(caught.value)
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'customer'"):
        await task.defer_async(customer=value)
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'customer'"):
        task.batch_defer({"customer": 1}, {"customer": value})
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'customer'"):
        await task.batch_defer_async({"customer": 1}, {"customer": value})


async def test_argument_that_is_not_json_is_refused_naming_it_and_nothing_is_written(
    app: sqla_jobs.App, database: Database
) -> None:
    await assert_refused_naming_the_argument(app, Customer())

    assert database.job_count() == 0


@pytest.mark.parametrize("connector_kind", ["sync_psycopg"])
@pytest.mark.parametrize("value", NOT_JSON)
async def test_every_kind_of_value_json_cannot_hold_is_refused_naming_the_argument(
    app: sqla_jobs.App, database: Database, value: Any
) -> None:
    """The check happens before any connector is involved: one connector suffices."""
    await assert_refused_naming_the_argument(app, value)

    assert database.job_count() == 0


# -- how an app reaches its connector ------------------------------------------------------------


def test_app_on_an_async_connector_defers_from_sync_code(
    async_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(async_connector_kind, db_url))
    task = register_tasks(app)

    job_id = task.defer(to="sync")
    batch_ids = task.batch_defer({"to": "a"}, {"to": "b"})

    assert [job["id"] for job in database.jobs()] == [job_id, *batch_ids]
    app.close()


async def test_open_async_app_defers_from_sync_code_running_in_a_thread(
    async_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    """A web view in a thread pool of an async app: sync defer while the loop runs."""
    async with sqla_jobs.App(
        connector=connectors.from_dsn(async_connector_kind, db_url)
    ).open_async() as app:
        task = register_tasks(app)
        ids = await asyncio.gather(
            *(asyncio.to_thread(task.defer, n=n) for n in range(5)), task.defer_async(n=5)
        )

    assert sorted(ids) == [job["id"] for job in database.jobs()]
    assert sorted(job["args"]["n"] for job in database.jobs()) == list(range(6))


async def test_with_connector_defers_through_the_new_connector_and_leaves_the_app_alone(
    sync_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    # The original app's connector points at no server: a defer through it would fail.
    original = sqla_jobs.App(connector=connectors.from_dsn("psycopg", connectors.DOWN_SERVER_URL))
    register_tasks(original)
    sync_connector = connectors.from_dsn(sync_connector_kind, db_url)

    web_app = original.with_connector(sync_connector)
    job_id = web_app.tasks["tests.send_email"].defer(to="x")

    assert database.job(job_id)["args"] == {"to": "x"}
    assert web_app.connector is sync_connector
    assert web_app.tasks["tests.send_email"].app is web_app
    assert original.connector is not sync_connector
    assert original.tasks["tests.send_email"].app is original
    with pytest.raises(sqla_jobs.ConnectorNotOpen):
        await original.tasks["tests.send_email"].defer_async(to="y")
    assert database.job_count() == 1
    web_app.close()


async def test_unopened_async_connector_refuses_to_defer_saying_how_to_open_it(
    async_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(async_connector_kind, db_url))
    task = register_tasks(app)

    with pytest.raises(sqla_jobs.ConnectorNotOpen) as caught:
        await task.defer_async(to="x")
    with pytest.raises(sqla_jobs.ConnectorNotOpen):
        await task.batch_defer_async({"to": "x"})

    message = str(caught.value)
    assert connectors.CLASS_NAMES[async_connector_kind] in message
    assert "open_async()" in message
    assert database.job_count() == 0


async def test_sync_connector_opens_on_first_defer(
    sync_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(sync_connector_kind, db_url))
    task = register_tasks(app)

    ids = [await task.defer_async(to="a"), task.defer(to="b")]

    assert [job["id"] for job in database.jobs()] == ids
    await app.close_async()


async def test_configure_task_defers_by_name_without_the_function(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = app.configure_task("billing.charge", queue="billing", priority=3).defer(amount=10)

    job = database.job(job_id)
    assert (job["task_name"], job["queue"], job["priority"], job["args"]) == (
        "billing.charge",
        "billing",
        3,
        {"amount": 10},
    )
