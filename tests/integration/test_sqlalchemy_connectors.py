"""The SQLAlchemy connectors: `SQLAlchemyConnector` / `SQLAlchemyPsycopg2Connector` (sync, on
psycopg 3 or psycopg2 engines) and `SQLAlchemyAsyncConnector` (an async psycopg 3 engine: defers
and runs the worker). Each borrows connections from the application's engine and its pool, and
the tests prove it by counting that pool's checkouts and by naming the pool's connections.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from helpers import end_other_connections, sqlalchemy_url
from psycopg.rows import dict_row
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sqla_jobs
from sqla_jobs import (
    AlreadyEnqueued,
    App,
    ConnectionFailed,
    JobsError,
    JobStatus,
    SchemaNotFound,
    SQLAlchemyAsyncConnector,
    SQLAlchemyConnector,
    SQLAlchemyPsycopg2Connector,
)

APPLICATION_NAME = "host_app_pool"


class Checkouts:
    """Counts the checkouts and new connections of one engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.checkouts = 0
        self.connects = 0
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "connect", self._connect)

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def _connect(self, *args: Any) -> None:
        self.connects += 1


def other_backends(url: str) -> list[dict[str, Any]]:
    """The connections to the database other than the one asking."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT application_name, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()


def job_statuses(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status::text FROM sqla_jobs_jobs ORDER BY id").fetchall()
    return [r[0] for r in rows]


@pytest.fixture(params=["psycopg", "psycopg2"])
def sync_engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    engine = create_engine(
        sqlalchemy_url(db_url, request.param),
        connect_args={"application_name": APPLICATION_NAME},
    )
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        sqlalchemy_url(db_url, "psycopg"),
        connect_args={"application_name": APPLICATION_NAME},
    )
    yield engine
    await engine.dispose()


# -- sync ------------------------------------------------------------------------------------


@pytest.mark.parametrize("connector_class", [SQLAlchemyConnector, SQLAlchemyPsycopg2Connector])
def test_sync_connector_defers_through_the_engines_own_pool(
    connector_class: type[SQLAlchemyConnector], sync_engine: Engine, db_url: str
) -> None:
    """Both names take psycopg 3 and psycopg2 engines alike."""
    counter = Checkouts(sync_engine)
    app = App(connector=connector_class(sync_engine))

    @app.task(name="ping")
    def ping(n: int) -> None: ...

    with app.open():
        ids = [ping.defer(n=i) for i in range(3)] + ping.batch_defer({"n": 3}, {"n": 4})
        assert app.job_manager.get_job(ids[0]).args == {"n": 0}
    assert counter.checkouts == 5  # four defers and a look-up
    assert counter.connects == 1  # one pooled connection served every statement
    assert sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert job_statuses(db_url) == ["todo"] * 5
    # An engine passed in belongs to the application: closing the app leaves it usable.
    with sync_engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def test_sync_connector_leaves_the_pooled_connection_as_the_application_expects(
    sync_engine: Engine,
) -> None:
    """Statements run in autocommit, but the application's next transaction on the same
    pooled connection is an ordinary one that can roll back."""
    connector = SQLAlchemyConnector(sync_engine)
    App(connector=connector).configure_task("ping").defer()
    with sync_engine.connect() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE scratch (x int)")
        conn.rollback()
        assert conn.exec_driver_sql("SELECT to_regclass('pg_temp.scratch')").scalar() is None


def test_a_pooled_connection_the_server_closed_is_replaced_before_the_next_defer(
    sync_engine: Engine, db_url: str
) -> None:
    """The server ends the pooled connection (a restart, pg_terminate_backend): the next
    defer finds it closed before sending anything, and goes through on a new one."""
    app = App(connector=SQLAlchemyConnector(sync_engine))
    ping = app.configure_task("ping")
    ping.defer()
    with psycopg.connect(db_url, autocommit=True) as admin:
        end_other_connections(admin)

    ping.defer()

    assert job_statuses(db_url) == ["todo"] * 2
    assert sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_dsn_builds_an_engine_on_the_named_driver(db_url: str) -> None:
    psycopg3 = SQLAlchemyConnector(dsn=db_url, pool_size=2)
    psycopg2 = SQLAlchemyPsycopg2Connector(dsn=db_url)
    try:
        assert psycopg3.engine.dialect.driver == "psycopg"
        assert psycopg3.engine.pool.size() == 2  # type: ignore[attr-defined]
        assert psycopg2.engine.dialect.driver == "psycopg2"
        for connector in (psycopg3, psycopg2):
            App(connector=connector).configure_task("ping").defer()
    finally:
        psycopg3.close()
        psycopg2.close()
    assert job_statuses(db_url) == ["todo", "todo"]


def test_sync_connector_cannot_run_a_worker(sync_engine: Engine) -> None:
    app = App(connector=SQLAlchemyConnector(sync_engine))
    with pytest.raises(sqla_jobs.SyncConnectorCannotRunWorker):
        app.run_worker(wait=False, install_signal_handlers=False)


def test_sync_connector_reports_missing_schema_with_the_fix(empty_db_url: str) -> None:
    engine = create_engine(sqlalchemy_url(empty_db_url, "psycopg"))
    try:
        app = App(connector=SQLAlchemyConnector(engine))
        with pytest.raises(SchemaNotFound, match="sqla-jobs schema upgrade"):
            app.configure_task("ping").defer()
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_connector_reports_an_unreachable_server(driver: str) -> None:
    engine = create_engine(f"postgresql+{driver}://postgres:pw-not-shown@127.0.0.1:1/nowhere")
    app = App(connector=SQLAlchemyConnector(engine))
    with pytest.raises(ConnectionFailed) as caught:
        app.configure_task("ping").defer()
    assert "Could not connect" in str(caught.value)
    assert "pw-not-shown" not in str(caught.value)


# -- refusals ----------------------------------------------------------------------------------


def test_engines_on_other_databases_or_drivers_are_refused_naming_the_supported_ones() -> None:
    with pytest.raises(JobsError) as caught:
        SQLAlchemyConnector(create_engine("sqlite://"))
    assert "sqlite+pysqlite" in str(caught.value)
    assert "postgresql+psycopg://" in str(caught.value)
    # An asyncpg engine, built without the asyncpg package (which is never installed).
    asyncpg_engine = create_async_engine(
        "postgresql+asyncpg://u@h/db", module=types.SimpleNamespace(paramstyle="numeric_dollar")
    )
    with pytest.raises(JobsError) as caught:
        SQLAlchemyAsyncConnector(asyncpg_engine)
    assert "postgresql+asyncpg" in str(caught.value)
    assert "create_async_engine('postgresql+psycopg://...')" in str(caught.value)


def test_sync_and_async_engines_are_each_pointed_at_their_connector() -> None:
    async_engine = create_async_engine("postgresql+psycopg://u@h/db")
    sync = create_engine("postgresql+psycopg://u@h/db")
    with pytest.raises(TypeError, match="SQLAlchemyAsyncConnector"):
        SQLAlchemyConnector(async_engine)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SQLAlchemyConnector"):
        SQLAlchemyAsyncConnector(sync)  # type: ignore[arg-type]
    with pytest.raises(JobsError, match="SQLAlchemyAsyncConnector"):
        SQLAlchemyConnector(create_engine("postgresql+psycopg_async://u@h/db"))
    with pytest.raises(TypeError, match="either engine= or dsn="):
        SQLAlchemyConnector()
    with pytest.raises(TypeError, match="configure the engine itself"):
        SQLAlchemyConnector(sync, pool_size=3)


# -- async -------------------------------------------------------------------------------------


async def test_async_connector_defers_and_runs_the_worker_through_the_engines_pool(
    async_engine: AsyncEngine, db_url: str
) -> None:
    counter = Checkouts(async_engine.sync_engine)
    app = App(connector=SQLAlchemyAsyncConnector(async_engine))
    seen: list[int] = []

    @app.task(name="record")
    async def record(n: int) -> None:
        seen.append(n)

    @app.task(name="record_sync")
    def record_sync(n: int) -> None:
        seen.append(-n)

    async with app.open_async():
        await record.batch_defer_async(*({"n": i} for i in range(20)))
        await record_sync.defer_async(n=1)
        await app.run_worker_async(wait=False, concurrency=5, install_signal_handlers=False)
        assert (await app.job_manager.count_jobs_async()) == {("default", JobStatus.SUCCEEDED): 21}
    assert sorted(seen) == [-1, *range(20)]
    assert counter.checkouts >= 5  # open, defers, register, claims, finishes, unregister
    assert counter.connects <= async_engine.pool.size()  # type: ignore[attr-defined]
    assert async_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_listening_worker_wakes_on_notify_and_only_uses_the_engines_connections(
    async_engine: AsyncEngine, db_url: str
) -> None:
    counter = Checkouts(async_engine.sync_engine)
    app = App(connector=SQLAlchemyAsyncConnector(async_engine))
    done = asyncio.Event()

    @app.task(name="wake")
    async def wake() -> None:
        done.set()

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(polling_interval=60, install_signal_handlers=False)
        )
        deadline = time.monotonic() + 5
        while not any(b["query"].startswith("LISTEN") for b in other_backends(db_url)):
            assert time.monotonic() < deadline, "the worker never listened"
            await asyncio.sleep(0.02)
        # Every connection to the database is one of the engine's (none of a pool of ours).
        assert {b["application_name"] for b in other_backends(db_url)} == {APPLICATION_NAME}
        await wake.defer_async()
        # Polling every 60 s: only the NOTIFY can wake the worker this fast.
        await asyncio.wait_for(done.wait(), timeout=5)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert counter.checkouts > 0
    # The listening connection was closed, not handed back to the pool still listening.
    assert not any(b["query"].startswith("LISTEN") for b in other_backends(db_url))
    async with async_engine.connect() as conn:
        channels = await conn.exec_driver_sql("SELECT pg_listening_channels()")
        assert channels.all() == []


async def test_async_connector_translates_errors(
    async_engine: AsyncEngine, empty_db_url: str
) -> None:
    app = App(connector=SQLAlchemyAsyncConnector(async_engine))
    async with app.open_async():
        await app.configure_task("ping", queueing_lock="one").defer_async()
        with pytest.raises(AlreadyEnqueued):
            await app.configure_task("ping", queueing_lock="one").defer_async()
    missing = SQLAlchemyAsyncConnector(dsn=empty_db_url)
    try:
        await missing.open_async()
        with pytest.raises(SchemaNotFound, match="sqla-jobs schema upgrade"):
            await App(connector=missing).configure_task("ping").defer_async()
    finally:
        await missing.close_async()
    down = SQLAlchemyAsyncConnector(dsn="postgresql://postgres:pw-not-shown@127.0.0.1:1/nowhere")
    with pytest.raises(ConnectionFailed) as caught:
        await down.open_async()
    assert "pw-not-shown" not in str(caught.value)
    await down.close_async()


async def test_async_connector_defers_from_sync_code_through_the_given_sync_engine(
    async_engine: AsyncEngine, sync_engine: Engine, db_url: str
) -> None:
    counter = Checkouts(sync_engine)
    app = App(connector=SQLAlchemyAsyncConnector(async_engine, sync_engine=sync_engine))
    await asyncio.to_thread(app.configure_task("ping").defer)
    assert counter.checkouts == 1
    assert app.connector.sqlalchemy_engine() is sync_engine
    await app.close_async()
    assert job_statuses(db_url) == ["todo"]


async def test_async_connector_defers_from_sync_code_on_the_same_url(
    async_engine: AsyncEngine, db_url: str
) -> None:
    connector = SQLAlchemyAsyncConnector(async_engine)
    app = App(connector=connector)
    job_id = await asyncio.to_thread(app.configure_task("ping").defer, n=1)
    twin = connector.sqlalchemy_engine()
    assert twin.dialect.driver == "psycopg" and not twin.dialect.is_async
    assert twin.url == async_engine.url.set(drivername="postgresql+psycopg")
    async with app.open_async():
        assert (await app.job_manager.get_job_async(job_id)).args == {"n": 1}
    assert twin.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_unopened_async_connector_says_to_open_it(async_engine: AsyncEngine) -> None:
    """Like every async connector; the engine's pool needs no opening, the check does."""
    app = App(connector=SQLAlchemyAsyncConnector(async_engine))
    with pytest.raises(sqla_jobs.ConnectorNotOpen, match="open_async"):
        await app.configure_task("ping").defer_async()
    with pytest.raises(sqla_jobs.ConnectorNotOpen, match="open_async"):
        await app.run_worker_async(wait=False, install_signal_handlers=False)
