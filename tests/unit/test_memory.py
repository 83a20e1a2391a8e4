"""What is particular to `InMemoryConnector` (no database involved): every query has an
implementation and an unknown one fails loudly, the tables an app's tests read, ``reset``,
opening, threads, notifications, and the documented way to use it in an app's tests.

Its queue behaviour (the same as PostgreSQL's) is proved by tests/integration/test_behaviour.py.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import threading
from typing import Any

import pytest

import sqla_jobs
from sqla_jobs import JobStatus, queries
from sqla_jobs.connectors.memory import ABORT_CHANNEL, InMemoryConnector
from sqla_jobs.connectors.memory_queries import implemented_queries
from sqla_jobs.manager import JobManager
from sqla_jobs.schema import NOTIFY_CHANNEL
from sqla_jobs.statuses import QUEUEING_LOCK_INDEX
from sqla_jobs.worker import ABORT_CHANNEL as WORKER_ABORT_CHANNEL

UTC = datetime.UTC


@pytest.fixture
def connector() -> InMemoryConnector:
    return InMemoryConnector()


@pytest.fixture
def app(connector: InMemoryConnector) -> sqla_jobs.App:
    return sqla_jobs.App(connector=connector)


# -- every statement, by name ------------------------------------------------------------------


def test_every_query_the_manager_sends_has_an_in_memory_implementation() -> None:
    missing = sorted({query.name for query in queries.ALL} - implemented_queries())
    assert missing == [], f"add these to sqla_jobs/connectors/memory_queries.py: {missing}"


def test_a_query_without_an_implementation_fails_naming_it(connector: InMemoryConnector) -> None:
    brand_new = queries.Query("frobnicate_jobs", "UPDATE sqla_jobs_jobs SET frob = true")

    with pytest.raises(
        NotImplementedError, match=r"'frobnicate_jobs'.*connectors/memory_queries\.py"
    ):
        connector.fetch_all(brand_new)


def test_a_missing_parameter_is_refused_naming_it(connector: InMemoryConnector) -> None:
    with pytest.raises(sqla_jobs.ConnectorError, match="parameter missing: job_id"):
        connector.fetch_one(queries.get_job, {})


def test_the_abort_channel_is_the_one_the_worker_listens_on() -> None:
    assert ABORT_CHANNEL == WORKER_ABORT_CHANNEL


def test_a_queueing_lock_clash_raises_what_a_postgresql_connector_raises(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    app.configure_task("tests.x", queueing_lock="q").defer()
    params = {
        "queue": "default",
        "task_name": "tests.x",
        "priority": 0,
        "lock": None,
        "queueing_lock": "q",
        "args": "{}",
        "scheduled_at": None,
    }

    with pytest.raises(sqla_jobs.ConnectorError) as raised:
        connector.fetch_one(queries.defer_job, params)

    assert type(raised.value) is sqla_jobs.ConnectorError
    assert (raised.value.sqlstate, raised.value.constraint_name) == ("23505", QUEUEING_LOCK_INDEX)
    assert "Key (queueing_lock)=(q) already exists" in str(raised.value)


# -- the tables an app's tests read ------------------------------------------------------------


def test_jobs_holds_each_job_row_by_id_and_job_events_what_rows_no_longer_show(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    job_id = app.configure_task("myapp.send_email", queue="mail").defer(to="ada@example.com")

    row = connector.jobs[job_id]
    assert (row["task_name"], row["queue"], row["args"], row["status"]) == (
        "myapp.send_email",
        "mail",
        {"to": "ada@example.com"},
        "todo",
    )
    assert row["status"] == JobStatus.TODO
    # The creation is the row's created_at, as in PostgreSQL: no event yet.
    assert connector.job_events == []
    [created] = app.job_manager.get_job_history(job_id)
    assert (created.status, created.at) == (JobStatus.TODO, row["created_at"])

    app.job_manager.cancel_job(job_id)
    app.job_manager.retry_job(job_id)

    # The retry by hand made the row forget its cancellation: that is an event now.
    assert [(event["job_id"], event["status"]) for event in connector.job_events] == [
        (job_id, "cancelled"),
        (job_id, "todo"),
    ]
    assert [event.status for event in app.job_manager.get_job_history(job_id)] == [
        JobStatus.TODO,
        JobStatus.CANCELLED,
        JobStatus.TODO,
    ]


def test_rows_handed_out_are_copies(connector: InMemoryConnector, app: sqla_jobs.App) -> None:
    job_id = app.configure_task("tests.x").defer(items=[1, 2])

    app.job_manager.get_job(job_id).args["items"].append(3)

    assert connector.jobs[job_id]["args"] == {"items": [1, 2]}


def test_reset_empties_every_table_and_restarts_ids(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    first = app.configure_task("tests.x").batch_defer({}, {})[0]
    app.job_manager.cancel_job(first)

    connector.reset()

    assert (connector.jobs, connector.job_events, connector.workers) == ({}, [], {})
    assert app.job_manager.count_jobs() == {}
    assert app.configure_task("tests.x").defer() == first == 1


def test_each_connector_has_tables_of_its_own() -> None:
    one, other = InMemoryConnector(), InMemoryConnector()

    sqla_jobs.App(connector=one).configure_task("tests.x").defer()

    assert len(one.jobs) == 1 and other.jobs == {}


def test_tables_outlive_close_as_a_database_would(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    async def defer_then_close() -> int:
        async with app.open_async():
            return await app.configure_task("tests.x").defer_async()

    job_id = asyncio.run(defer_then_close())

    assert app.job_manager.get_job(job_id).status is JobStatus.TODO


# -- opening, engines, threads -----------------------------------------------------------------


def test_async_use_before_open_async_is_refused_as_with_postgresql(app: sqla_jobs.App) -> None:
    with pytest.raises(sqla_jobs.ConnectorNotOpen, match="open_async"):
        asyncio.run(app.configure_task("tests.x").defer_async())


def test_sync_use_needs_no_open(app: sqla_jobs.App) -> None:
    assert app.configure_task("tests.x").defer() == 1


def test_there_is_no_sqlalchemy_engine_and_the_error_says_what_needs_postgresql(
    connector: InMemoryConnector,
) -> None:
    with pytest.raises(sqla_jobs.ConnectorError, match=r"no SQLAlchemy engine.*PsycopgConnector"):
        connector.sqlalchemy_engine()


def test_it_runs_workers_and_has_no_copy(connector: InMemoryConnector) -> None:
    assert connector.can_run_worker
    assert not connector.supports_copy


def test_defers_from_many_threads_at_once_get_distinct_ids(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    deferrer = app.configure_task("tests.x")
    ids: list[int] = []
    lock = threading.Lock()

    def defer_many() -> None:
        for _ in range(200):
            job_id = deferrer.defer()
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=defer_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(ids) == list(range(1, 801))
    assert len(connector.jobs) == 800


# -- notifications -----------------------------------------------------------------------------


async def test_listeners_hear_new_jobs_and_aborts_even_from_other_threads(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    heard: list[tuple[str, str]] = []

    def on_notification(channel: str, payload: str) -> None:
        heard.append((channel, payload))

    listening = asyncio.create_task(connector.listen([NOTIFY_CHANNEL], on_notification))
    await asyncio.sleep(0)
    assert connector.listening

    await asyncio.to_thread(app.configure_task("tests.x", queue="mail").batch_defer, {}, {})
    app.configure_task("tests.x", queue="sms").defer()
    await asyncio.sleep(0.05)
    listening.cancel()
    await asyncio.gather(listening, return_exceptions=True)

    assert heard == [(NOTIFY_CHANNEL, "mail"), (NOTIFY_CHANNEL, "sms")]  # one per statement
    assert not connector.listening


# -- in an app's tests, as docs/testing.md shows -----------------------------------------------


def test_an_apps_sync_test_can_defer_then_run_the_worker_until_the_queue_is_drained(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    sent: list[str] = []

    @app.task(name="myapp.send_email", retry=1)
    def send_email(to: str) -> None:
        if to == "nobody":
            raise ValueError("no such address")
        sent.append(to)

    ok = send_email.defer(to="ada@example.com")
    bad = send_email.defer(to="nobody")
    later = send_email.configure(schedule_in={"hours": 1}).defer(to="bob@example.com")

    app.run_worker(wait=False, install_signal_handlers=False)

    assert sent == ["ada@example.com"]
    assert {job_id: row["status"] for job_id, row in connector.jobs.items()} == {
        ok: "succeeded",
        bad: "failed",
        later: "todo",
    }
    assert connector.jobs[bad]["attempts"] == 2
    assert "ValueError: no such address" in connector.jobs[bad]["last_error"]


def test_the_connector_loads_on_first_use_and_is_public() -> None:
    code = (
        "import sys, sqla_jobs; "
        "assert 'sqla_jobs.connectors.memory' not in sys.modules; "
        "sqla_jobs.InMemoryConnector; "
        "assert 'sqla_jobs.connectors.memory' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "InMemoryConnector" in sqla_jobs.__all__
    assert sqla_jobs.InMemoryConnector is InMemoryConnector
    assert sqla_jobs.connectors.InMemoryConnector is InMemoryConnector


def test_naive_and_foreign_time_zones_are_stored_as_utc_instants(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    when = datetime.datetime(2031, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    job_id = app.configure_task("tests.x", schedule_at=when).defer()

    stored: Any = connector.jobs[job_id]["scheduled_at"]
    assert stored == when and stored.tzinfo is UTC


def test_the_documented_fixture_points_an_apps_module_level_tasks_at_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/testing.md: a module-level app on PostgreSQL, its tasks deferred by the app's code,
    redirected to an in-memory connector by a fixture; no database is ever reached."""
    app = sqla_jobs.App(
        connector=sqla_jobs.PsycopgConnector(conninfo="postgresql://nobody@127.0.0.1:1/none")
    )
    welcomed: list[int] = []

    @app.task(retry=2)
    def send_welcome(user_id: int) -> None:
        welcomed.append(user_id)

    jobs = InMemoryConnector()
    monkeypatch.setattr(app, "connector", jobs)
    monkeypatch.setattr(app, "job_manager", JobManager(jobs))

    send_welcome.defer(user_id=7)  # what the app's own code does
    [job] = jobs.jobs.values()
    assert (job["task_name"], job["args"]) == (send_welcome.name, {"user_id": 7})
    app.run_worker(wait=False, install_signal_handlers=False)

    assert welcomed == [7]
    assert jobs.jobs[job["id"]]["status"] == "succeeded"


async def test_an_apps_async_test_opens_the_app_then_drains_the_queue(
    connector: InMemoryConnector, app: sqla_jobs.App
) -> None:
    @app.task(name="myapp.send_email")
    async def send_email(to: str) -> None:
        pass

    async with app.open_async():
        job_id = await send_email.defer_async(to="ada@example.com")
        await app.run_worker_async(wait=False, install_signal_handlers=False)

    assert [row["status"] for row in connector.jobs.values()] == ["succeeded"]
    assert app.job_manager.get_job(job_id).attempts == 1
