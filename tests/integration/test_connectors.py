"""Every connector, built every documented way, reaches the database; its pool is the one asked
for; connection and schema problems come back as sqla_jobs errors that name the fix."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiopg
import psycopg2.pool
import psycopg_pool
import pytest
import sqlalchemy
from helpers import end_other_connections, sqlalchemy_url, with_dbname
from psycopg.conninfo import make_conninfo

import sqla_jobs
from sqla_jobs import BaseConnector

if TYPE_CHECKING:
    from conftest import Connectors, Database

TASK = "tests.construction"


async def open_app(app: sqla_jobs.App) -> sqla_jobs.App:
    """Open an async connector's pool as a user would; sync connectors open on first use."""
    if app.connector.can_run_worker:
        await app.open_async()
    return app


async def defer_both_ways(app: sqla_jobs.App) -> list[int]:
    """Defer one job from sync code and one from async code; returns their ids."""
    await open_app(app)
    task = app.configure_task(TASK)
    try:
        return [task.defer(way="sync"), await task.defer_async(way="async")]
    finally:
        await app.close_async()


def assert_jobs_stored(database: Database, ids: list[int]) -> None:
    assert [(job["id"], job["task_name"], job["args"]) for job in database.jobs()] == [
        (ids[0], TASK, {"way": "sync"}),
        (ids[1], TASK, {"way": "async"}),
    ]


# -- construction forms (connectors.md) ----------------------------------------------------------


async def test_connector_built_from_libpq_environment_defers_to_that_database(
    connector_kind: str,
    db_url: str,
    database: Database,
    connectors: type[Connectors],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "PGOPTIONS"):
        monkeypatch.delenv(name, raising=False)
    params = connectors.libpq_params(db_url)
    for key, variable in (
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
        ("password", "PGPASSWORD"),
    ):
        if key in params:
            monkeypatch.setenv(variable, params[key])
        else:
            monkeypatch.delenv(variable, raising=False)

    ids = await defer_both_ways(
        sqla_jobs.App(connector=connectors.from_environment(connector_kind))
    )

    assert_jobs_stored(database, ids)


@pytest.mark.parametrize("dsn_form", ["url", "key_value"])
async def test_connector_built_from_a_dsn_defers_to_that_database(
    connector_kind: str,
    dsn_form: str,
    db_url: str,
    database: Database,
    connectors: type[Connectors],
    request: pytest.FixtureRequest,
) -> None:
    dsn = db_url if dsn_form == "url" else make_conninfo(**connectors.libpq_params(db_url))

    ids = await defer_both_ways(sqla_jobs.App(connector=connectors.from_dsn(connector_kind, dsn)))

    assert_jobs_stored(database, ids)


async def test_connector_built_from_keyword_arguments_defers_to_that_database(
    connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    connector = connectors.from_kwargs(connector_kind, connectors.libpq_params(db_url))

    ids = await defer_both_ways(sqla_jobs.App(connector=connector))

    assert_jobs_stored(database, ids)


# -- pool parameters and pool_factory ------------------------------------------------------------


def recording(factory: Callable[..., Any], pools: list[Any]) -> Callable[..., Any]:
    """``factory``, keeping every pool it builds in ``pools``."""

    def build(*args: Any, **kwargs: Any) -> Any:
        pool = factory(*args, **kwargs)
        pools.append(pool)
        return pool

    return build


def recording_aiopg(pools: list[Any]) -> Callable[..., Any]:
    async def build(*args: Any, **kwargs: Any) -> Any:
        pool = await aiopg.create_pool(*args, **kwargs)
        pools.append(pool)
        return pool

    return build


def connector_with_pool_sizes_2_to_3(kind: str, dsn: str, pools: list[Any]) -> BaseConnector:
    """``kind``'s connector with a pool of 2 to 3 connections, in that connector's words."""
    if kind == "psycopg":
        return sqla_jobs.PsycopgConnector(
            conninfo=dsn,
            min_size=2,
            max_size=3,
            pool_factory=recording(psycopg_pool.AsyncConnectionPool, pools),
        )
    if kind == "aiopg":
        return sqla_jobs.AiopgConnector(
            dsn, minsize=2, maxsize=3, pool_factory=recording_aiopg(pools)
        )
    if kind == "sync_psycopg":
        return sqla_jobs.SyncPsycopgConnector(
            conninfo=dsn,
            min_size=2,
            max_size=3,
            pool_factory=recording(psycopg_pool.ConnectionPool, pools),
        )
    if kind == "psycopg2":
        return sqla_jobs.Psycopg2Connector(
            dsn,
            minconn=2,
            maxconn=3,
            pool_factory=recording(psycopg2.pool.ThreadedConnectionPool, pools),
        )
    if kind == "sqlalchemy_async":
        async_connector = sqla_jobs.SQLAlchemyAsyncConnector(dsn=dsn, pool_size=2, max_overflow=1)
        pools.append(async_connector.engine.pool)
        return async_connector
    cls = {
        "sqlalchemy": sqla_jobs.SQLAlchemyPsycopg2Connector,
        "sqlalchemy_psycopg": sqla_jobs.SQLAlchemyConnector,
    }[kind]
    connector = cls(dsn=dsn, pool_size=2, max_overflow=1)
    pools.append(connector.sqlalchemy_engine().pool)
    return connector


def pool_sizes(pool: Any) -> tuple[int, int]:
    """(fewest, most) connections a pool of any of the drivers keeps."""
    if isinstance(pool, psycopg_pool.AsyncConnectionPool | psycopg_pool.ConnectionPool):
        return pool.min_size, pool.max_size
    if isinstance(pool, aiopg.Pool):
        return pool.minsize, pool.maxsize
    if isinstance(pool, psycopg2.pool.AbstractConnectionPool):
        return pool.minconn, pool.maxconn
    assert isinstance(pool, sqlalchemy.pool.QueuePool)
    return pool.size(), pool.size() + pool._max_overflow


async def test_pool_parameters_reach_the_pool(
    connector_kind: str, db_url: str, database: Database
) -> None:
    pools: list[Any] = []
    app = sqla_jobs.App(connector=connector_with_pool_sizes_2_to_3(connector_kind, db_url, pools))
    await open_app(app)
    try:
        await app.configure_task(TASK).defer_async()

        assert [pool_sizes(pool) for pool in pools] == [(2, 3)]
        if not connector_kind.startswith("sqlalchemy"):  # a QueuePool connects on demand
            # min: the pool keeps 2 connections though one defer needed one; max: a psycopg
            # pool may grow while a request waits for its first connection, never past 3.
            assert database.wait_until(lambda: database.backends() >= 2), (
                f"expected the pool's 2 connections on the server, found {database.backends()}"
            )
            assert database.backends() <= 3
    finally:
        await app.close_async()
    assert database.job_count() == 1


def connector_with_custom_pool(kind: str, dsn: str) -> tuple[BaseConnector, Callable[[], bool]]:
    """``kind``'s connector with a ``pool_factory`` of ours, and a check that it served a defer."""
    pools: list[Any] = []
    if kind in ("psycopg", "sync_psycopg"):
        null_pool: Any = (
            psycopg_pool.AsyncNullConnectionPool
            if kind == "psycopg"
            else psycopg_pool.NullConnectionPool
        )
        factory = recording(null_pool, pools)
        connector: BaseConnector = (
            sqla_jobs.PsycopgConnector(conninfo=dsn, pool_factory=factory)
            if kind == "psycopg"
            else sqla_jobs.SyncPsycopgConnector(conninfo=dsn, pool_factory=factory)
        )

        def null_pool_served() -> bool:
            (pool,) = pools
            return type(pool) is null_pool and pool.get_stats()["requests_num"] >= 1

        return connector, null_pool_served
    if kind == "aiopg":
        connections: list[Any] = []

        async def on_connect(connection: Any) -> None:
            connections.append(connection)

        async def factory(dsn: str, **kwargs: Any) -> Any:
            # minsize=0: the pool connects only when a connection is asked of it.
            return await aiopg.create_pool(
                dsn, **{**kwargs, "minsize": 0, "on_connect": on_connect}
            )

        return sqla_jobs.AiopgConnector(dsn, pool_factory=factory), lambda: len(connections) >= 1
    if kind == "psycopg2":
        checkouts: list[Any] = []

        class CountingPool(psycopg2.pool.ThreadedConnectionPool):  # type: ignore[misc]
            def getconn(self, key: Any = None) -> Any:
                checkouts.append(key)
                return super().getconn(key)

        return sqla_jobs.Psycopg2Connector(dsn, pool_factory=CountingPool), lambda: bool(checkouts)
    raise AssertionError(kind)


@pytest.mark.parametrize("connector_kind", ["psycopg", "aiopg", "sync_psycopg", "psycopg2"])
async def test_pool_factory_builds_the_pool_that_serves_defers(
    connector_kind: str, db_url: str, database: Database
) -> None:
    connector, pool_served = connector_with_custom_pool(connector_kind, db_url)
    app = await open_app(sqla_jobs.App(connector=connector))
    try:
        await app.configure_task(TASK).defer_async()
        assert pool_served()
    finally:
        await app.close_async()
    assert database.job_count() == 1


async def test_null_pool_factory_keeps_no_connection_open_between_defers(
    db_url: str, database: Database
) -> None:
    app = sqla_jobs.App(
        connector=sqla_jobs.PsycopgConnector(
            conninfo=db_url, pool_factory=psycopg_pool.AsyncNullConnectionPool
        )
    )
    await app.open_async()
    try:
        await app.configure_task(TASK).defer_async()
        assert database.wait_until(lambda: database.backends() == 0)
    finally:
        await app.close_async()


async def test_null_pool_factory_keeps_no_connection_open_after_a_defer_from_sync_code(
    db_url: str, database: Database
) -> None:
    app = sqla_jobs.App(
        connector=sqla_jobs.PsycopgConnector(
            conninfo=db_url, pool_factory=psycopg_pool.AsyncNullConnectionPool
        )
    )
    await app.open_async()
    try:
        app.configure_task(TASK).defer()
        assert database.wait_until(lambda: database.backends() == 0, timeout=1.0), (
            f"{database.backends()} connections stay open"
        )
    finally:
        await app.close_async()


# -- SQLAlchemyPsycopg2Connector shares the application's engine ---------------------------------


async def test_sqlalchemy_connector_borrows_every_connection_from_the_apps_engine(
    db_url: str, database: Database
) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(db_url), pool_size=1, max_overflow=0)
    checkouts: list[object] = []
    dbapi_connects: list[object] = []
    sqlalchemy.event.listen(engine, "checkout", lambda *args: checkouts.append(args[0]))
    sqlalchemy.event.listen(engine, "connect", lambda *args: dbapi_connects.append(args[0]))
    app = sqla_jobs.App(connector=sqla_jobs.SQLAlchemyPsycopg2Connector(engine=engine))
    task = app.configure_task(TASK)

    task.defer(n=1)
    await task.defer_async(n=2)
    task.batch_defer({"n": 3}, {"n": 4})

    assert len(checkouts) == 3, "each defer checks one connection out of the engine's pool"
    assert len(dbapi_connects) == 1, "the engine's single pooled connection served them all"
    assert app.connector.sqlalchemy_engine() is engine
    assert database.backends() == 1, "no connection but the engine's own"
    assert [job["args"]["n"] for job in database.jobs()] == [1, 2, 3, 4]

    app.close()
    assert engine.pool.checkedin() == 1, "closing the app leaves the app's engine alone"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


async def test_sqlalchemy_connector_built_from_a_dsn_disposes_its_engine_on_close(
    db_url: str, database: Database
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.SQLAlchemyPsycopg2Connector(dsn=db_url, pool_size=1))
    app.configure_task(TASK).defer()
    assert database.backends() == 1

    app.close()

    assert database.wait_until(lambda: database.backends() == 0)
    assert database.job_count() == 1


def test_sqlalchemy_connector_wants_exactly_one_of_engine_and_dsn(
    connectors: type[Connectors],
) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(connectors.DOWN_SERVER_URL))
    with pytest.raises(TypeError, match="engine= or dsn="):
        sqla_jobs.SQLAlchemyPsycopg2Connector(engine=engine, dsn=connectors.DOWN_SERVER_URL)
    with pytest.raises(TypeError, match="engine= or dsn="):
        sqla_jobs.SQLAlchemyPsycopg2Connector()
    engine.dispose()


# -- errors name the problem and the fix ---------------------------------------------------------


async def first_defer(app: sqla_jobs.App) -> None:
    """Open the app as a user would and defer one job."""
    await open_app(app)
    try:
        await app.configure_task(TASK).defer_async()
    finally:
        await app.close_async()


async def test_down_server_raises_connection_failed_in_one_line_without_the_password(
    connector_kind: str, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, connectors.DOWN_SERVER_URL))

    with pytest.raises(sqla_jobs.ConnectionFailed) as caught:
        await first_defer(app)

    message = str(caught.value)
    assert "\n" not in message
    assert "127.0.0.1" in message
    assert "refused" in message.lower()
    assert "s3cret-pw" not in message
    assert "Check the connection settings" in message


def test_down_server_raises_connection_failed_when_deferring_from_sync_code(
    connector_kind: str, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, connectors.DOWN_SERVER_URL))

    with pytest.raises(sqla_jobs.ConnectionFailed) as caught:
        app.configure_task(TASK).defer()

    assert "\n" not in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    app.close()


async def test_missing_database_raises_connection_failed_naming_it(
    connector_kind: str, db_url: str, connectors: type[Connectors]
) -> None:
    url = with_dbname(db_url, "sqla_jobs_no_such_database")
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, url))

    with pytest.raises(sqla_jobs.ConnectionFailed, match="sqla_jobs_no_such_database") as caught:
        await first_defer(app)

    assert "\n" not in str(caught.value)


async def test_database_without_the_schema_raises_schema_not_found_naming_the_upgrade_command(
    connector_kind: str, empty_db_url: str, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, empty_db_url))

    with pytest.raises(sqla_jobs.SchemaNotFound) as caught:
        await first_defer(app)

    assert "sqla-jobs schema upgrade" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_database_without_the_schema_raises_schema_not_found_when_deferring_from_sync_code(
    connector_kind: str, empty_db_url: str, connectors: type[Connectors]
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, empty_db_url))

    with pytest.raises(sqla_jobs.SchemaNotFound, match="sqla-jobs schema upgrade"):
        app.configure_task(TASK).defer()
    app.close()


async def test_pooled_connections_the_server_closed_cost_no_failed_defer(
    app: sqla_jobs.App, database: Database
) -> None:
    """After a restart or pg_terminate_backend, every pooled connection is dead: the next
    defers, from sync and async code, find them closed before sending anything and go through
    on new ones (a Flask app answers no 500 after a failover)."""
    task = app.configure_task(TASK)
    # Fill the pools (the sync twin's and the async one) with connections that were used.
    await asyncio.gather(*(task.defer_async(way="warm") for _ in range(4)))
    for _ in range(4):
        task.defer(way="warm")
    end_other_connections(database.conn)

    for _ in range(3):
        task.defer(way="sync")
        await task.defer_async(way="async")

    ways = [job["args"]["way"] for job in database.jobs()]
    assert ways == ["warm"] * 8 + ["sync", "async"] * 3


def test_every_connector_is_in_the_suite(connectors: type[Connectors]) -> None:
    """A sixth connector must join CONNECTORS (and pass this suite) to be done."""
    exported = {
        name
        for name in sqla_jobs.__all__
        if name.endswith("Connector") and not name.startswith("Base")
    }
    assert {connectors.CLASS_NAMES[kind] for kind in connectors.ALL} == exported
