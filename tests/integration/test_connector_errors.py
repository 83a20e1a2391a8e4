"""Every connector's errors go through one translator: on a real PostgreSQL, the sqla_jobs error
carries the server's diagnostics, has the driver's error as its cause, and its class names the
fix. And the connectors behave alike where they used to drift apart: a connection that cannot
be had after open is a failed connect (not a lost statement), a close that comes during the open
leaves the connector closed, concurrent first uses open one pool, and both SQLAlchemy connectors
hand the application's pooled connection back as they found it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import aiopg
import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import psycopg2.pool
import psycopg_pool
import pytest
import sqlalchemy.exc
from helpers import dbname_of, end_other_connections, sqlalchemy_url
from psycopg import sql
from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sqla_jobs
from sqla_jobs import (
    BaseConnector,
    ConnectionFailed,
    ConnectorError,
    ConnectorNotOpen,
    SchemaNotFound,
    queries,
)
from sqla_jobs.connectors.bind import BindConnector
from sqla_jobs.queries import Query
from sqla_jobs.statuses import QUEUEING_LOCK_INDEX
from sqla_jobs.testing import TestServer

if TYPE_CHECKING:
    from conftest import Connectors, Database

TASK = "tests.errors"
PING = Query("ping", "SELECT 1")

#: The driver under each connector (and under its sync twin, for the async ones).
DRIVER_ERROR = {
    "psycopg": psycopg.Error,
    "sync_psycopg": psycopg.Error,
    "sqlalchemy_psycopg": psycopg.Error,
    "sqlalchemy_async": psycopg.Error,
    "psycopg2": psycopg2.Error,
    "aiopg": psycopg2.Error,
    "sqlalchemy": psycopg2.Error,  # SQLAlchemyPsycopg2Connector(dsn=...)
}
UNIQUE_VIOLATION = {
    psycopg.Error: psycopg.errors.UniqueViolation,
    psycopg2.Error: psycopg2.errors.UniqueViolation,
}
UNDEFINED_TABLE = {
    psycopg.Error: psycopg.errors.UndefinedTable,
    psycopg2.Error: psycopg2.errors.UndefinedTable,
}


def defer_params(queueing_lock: str | None = None) -> dict[str, Any]:
    return {
        "queue": "default",
        "task_name": TASK,
        "priority": 0,
        "lock": None,
        "queueing_lock": queueing_lock,
        "args": "{}",
        "scheduled_at": None,
        "trace_context": None,
        "tags": None,
        "meta": None,
        "unique_key": None,
        "unique_statuses": None,
    }


async def open_connector(connector: BaseConnector) -> BaseConnector:
    """Open an async connector as a user would; sync connectors open on first use."""
    if connector.can_run_worker:
        await connector.open_async()
    return connector


async def refusals(
    connector: BaseConnector, query: Query, params: dict[str, Any] | None
) -> list[ConnectorError]:
    """The errors of ``query`` run from async code and from sync code (through the sync twin,
    for an async connector)."""
    caught = []
    with pytest.raises(ConnectorError) as from_async:
        await connector.execute_async(query, params)
    caught.append(from_async.value)
    with pytest.raises(ConnectorError) as from_sync:
        await asyncio.to_thread(connector.execute, query, params)
    caught.append(from_sync.value)
    return caught


def driver_error_of(cause: BaseException | None) -> BaseException | None:
    """The driver's error, under SQLAlchemy's wrapper if there is one."""
    return cause.orig if isinstance(cause, sqlalchemy.exc.DBAPIError) else cause


# -- the server's diagnostics, the driver's error as the cause -----------------------------------


async def test_a_unique_violation_carries_the_servers_diagnostics_and_the_drivers_error(
    connector_kind: str, db_url: str, connectors: type[Connectors]
) -> None:
    connector = await open_connector(connectors.from_dsn(connector_kind, db_url))
    try:
        await connector.execute_async(queries.defer_job, defer_params("dup"))
        errors = await refusals(connector, queries.defer_job, defer_params("dup"))
    finally:
        await connector.close_async()

    for error in errors:
        assert type(error) is ConnectorError
        assert error.sqlstate == "23505"
        assert error.constraint_name == QUEUEING_LOCK_INDEX
        assert (error.schema_name, error.table_name, error.column_name) == (
            "public",
            "sqla_jobs_jobs",
            None,
        )
        assert error.detail is not None and "(queueing_lock)=(dup)" in error.detail
        assert isinstance(
            driver_error_of(error.__cause__), UNIQUE_VIOLATION[DRIVER_ERROR[connector_kind]]
        )
        assert "defer_job" in str(error) and "\n" not in str(error)


async def test_a_missing_table_is_schema_not_found_naming_the_fix_caused_by_the_drivers_error(
    connector_kind: str, empty_db_url: str, connectors: type[Connectors]
) -> None:
    connector = await open_connector(connectors.from_dsn(connector_kind, empty_db_url))
    try:
        errors = await refusals(connector, queries.defer_job, defer_params())
    finally:
        await connector.close_async()

    for error in errors:
        assert type(error) is SchemaNotFound
        assert error.sqlstate == "42P01"
        assert "`sqla-jobs schema upgrade`" in str(error)
        assert isinstance(
            driver_error_of(error.__cause__), UNDEFINED_TABLE[DRIVER_ERROR[connector_kind]]
        )


async def test_a_refused_connection_is_connection_failed_caused_by_the_drivers_error(
    connector_kind: str, connectors: type[Connectors]
) -> None:
    connector = connectors.from_dsn(connector_kind, connectors.DOWN_SERVER_URL)
    errors = []
    if connector.can_run_worker:
        with pytest.raises(ConnectionFailed) as caught:
            await connector.open_async()
        errors.append(caught.value)
    with pytest.raises(ConnectionFailed) as caught:
        await asyncio.to_thread(connector.execute, queries.defer_job, defer_params())
    errors.append(caught.value)
    await connector.close_async()

    for error in errors:
        assert "Could not connect to PostgreSQL" in str(error)
        assert error.sqlstate is None
        assert isinstance(driver_error_of(error.__cause__), DRIVER_ERROR[connector_kind])


def test_the_bind_connector_keeps_sqlalchemys_error_as_the_cause(db_url: str) -> None:
    engine = create_engine(sqlalchemy_url(db_url, "psycopg"))
    try:
        with Session(engine) as session:
            connector = BindConnector(session, savepoint=True)
            connector.execute(queries.defer_job, defer_params("dup"))
            with pytest.raises(ConnectorError) as caught:
                connector.execute(queries.defer_job, defer_params("dup"))
    finally:
        engine.dispose()

    assert (caught.value.sqlstate, caught.value.constraint_name) == ("23505", QUEUEING_LOCK_INDEX)
    assert isinstance(caught.value.__cause__, sqlalchemy.exc.IntegrityError)
    assert isinstance(caught.value.__cause__.orig, psycopg.errors.UniqueViolation)


@pytest.mark.parametrize("form", ["Session", "AsyncSession"])
async def test_a_session_that_cannot_connect_is_connection_failed_through_bind(
    form: str, connectors: type[Connectors]
) -> None:
    """A session's first statement opens its connection: a server that is down is our
    ConnectionFailed (naming where), with SQLAlchemy's error as the cause, like a statement's."""
    if form == "Session":
        engine = create_engine(sqlalchemy_url(connectors.DOWN_SERVER_URL, "psycopg"))
        try:
            with Session(engine) as session, pytest.raises(ConnectionFailed) as caught:
                BindConnector(session).execute(queries.defer_job, defer_params())
        finally:
            engine.dispose()
    else:
        async_engine = create_async_engine(sqlalchemy_url(connectors.DOWN_SERVER_URL, "psycopg"))
        try:
            async with AsyncSession(async_engine) as async_session:
                with pytest.raises(ConnectionFailed) as caught:
                    await BindConnector(async_session).execute_async(
                        queries.defer_job, defer_params()
                    )
        finally:
            await async_engine.dispose()

    assert "Could not connect to PostgreSQL" in str(caught.value)
    # The settings to check are the engine's, not a conninfo the caller never wrote.
    assert "connect_args of the SQLAlchemy engine" in str(caught.value)
    assert "conninfo" not in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlalchemy.exc.OperationalError)


# -- drifts: the connectors behave alike ---------------------------------------------------------


@pytest.fixture
def no_new_connections(
    database: Database, db_url: str, sqla_jobs_server: TestServer
) -> Iterator[Callable[[], None]]:
    """Call it to end every other connection to the test database and refuse new ones (as a
    server does that is going away); undone after the test."""
    name = sql.Identifier(dbname_of(db_url))
    # A database cannot refuse connections from a session of its own: ask from another one.
    admin = psycopg.connect(sqla_jobs_server.admin_url, autocommit=True)

    def refuse() -> None:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        end_other_connections(database.conn)

    try:
        yield refuse
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        admin.close()


async def test_a_connection_that_cannot_be_had_after_open_is_a_failed_connect_not_a_lost_one(
    connector_kind: str,
    db_url: str,
    database: Database,
    connectors: type[Connectors],
    no_new_connections: Callable[[], None],
) -> None:
    """Nothing was sent, so the error must not say that the statement may have taken effect
    (aiopg's and the async SQLAlchemy connector's said so)."""
    connector = await open_connector(connectors.from_dsn(connector_kind, db_url))
    try:
        await connector.execute_async(PING)  # a pooled connection, which the server then ends
        no_new_connections()

        with pytest.raises(ConnectionFailed) as caught:
            await connector.execute_async(queries.defer_job, defer_params())
    finally:
        await connector.close_async()

    assert "Could not connect to PostgreSQL" in str(caught.value)
    assert "may or may not have taken effect" not in str(caught.value)


async def test_a_close_that_comes_while_the_connector_opens_leaves_it_closed(
    async_connector_kind: str, db_url: str, database: Database, connectors: type[Connectors]
) -> None:
    """An app closed during its startup (a web server stopped at once) keeps no pool open:
    the close waits for the open, as the sync connectors' close does."""
    connector = connectors.from_dsn(async_connector_kind, db_url)
    opening = asyncio.create_task(connector.open_async())
    await asyncio.sleep(0)  # the open has started and waits for the server
    try:
        await connector.close_async()
        await opening

        with pytest.raises(ConnectorNotOpen):
            await connector.execute_async(PING)
        assert database.wait_until(lambda: database.backends() == 0), (
            f"{database.backends()} connections stay open"
        )
    finally:
        await connector.close_async()  # a pool left open would keep the event loop waiting


def counting_async_opens(kind: str, dsn: str) -> tuple[BaseConnector, Callable[[], int]]:
    """``kind``'s async connector, and how many times it has opened (built a pool, or checked
    the database for the SQLAlchemy one, whose engine's pool needs no opening)."""
    opens: list[object] = []
    if kind == "psycopg":

        def pool(**kwargs: Any) -> Any:
            opens.append(kwargs)
            return psycopg_pool.AsyncConnectionPool(**kwargs)

        return sqla_jobs.PsycopgConnector(conninfo=dsn, pool_factory=pool), lambda: len(opens)
    if kind == "aiopg":

        async def create_pool(dsn: str, **kwargs: Any) -> Any:
            opens.append(kwargs)
            return await aiopg.create_pool(dsn, **kwargs)

        return sqla_jobs.AiopgConnector(dsn, pool_factory=create_pool), lambda: len(opens)
    if kind == "sqlalchemy_async":
        connector = sqla_jobs.SQLAlchemyAsyncConnector(dsn=dsn)
        event.listen(connector.engine.sync_engine, "checkout", lambda *_: opens.append(_))
        return connector, lambda: len(opens)
    raise AssertionError(kind)


async def test_concurrent_opens_of_an_async_connector_open_it_once(
    async_connector_kind: str, db_url: str
) -> None:
    connector, opens = counting_async_opens(async_connector_kind, db_url)
    try:
        await asyncio.gather(*(connector.open_async() for _ in range(8)))
        assert opens() == 1
    finally:
        await connector.close_async()


THREADS = 12


def in_threads_at_once(work: Callable[[], object]) -> None:
    """Run ``work`` in THREADS threads, all released at the same moment."""
    start = threading.Barrier(THREADS)

    def run(_: int) -> object:
        start.wait()
        return work()

    with ThreadPoolExecutor(THREADS) as threads:
        list(threads.map(run, range(THREADS)))


def slowly(build: Callable[..., Any], built: list[Any]) -> Callable[..., Any]:
    """``build``, slower (the race between first users is wide open), recording what it built."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        made = build(*args, **kwargs)
        built.append(made)
        return made

    return slow


@pytest.mark.parametrize("connector_kind", ["sync_psycopg", "psycopg2"])
def test_concurrent_first_defers_from_many_threads_open_one_pool(
    connector_kind: str, db_url: str, database: Database
) -> None:
    pools: list[Any] = []
    connector: BaseConnector = (
        sqla_jobs.SyncPsycopgConnector(
            conninfo=db_url, pool_factory=slowly(psycopg_pool.ConnectionPool, pools)
        )
        if connector_kind == "sync_psycopg"
        else sqla_jobs.Psycopg2Connector(
            db_url, pool_factory=slowly(psycopg2.pool.ThreadedConnectionPool, pools)
        )
    )
    try:
        in_threads_at_once(lambda: connector.execute(queries.defer_job, defer_params()))
    finally:
        connector.close()

    assert len(pools) == 1
    assert database.job_count() == THREADS


async def test_concurrent_first_sync_defers_through_an_async_connector_build_one_twin(
    async_connector_kind: str,
    db_url: str,
    database: Database,
    connectors: type[Connectors],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector = await open_connector(connectors.from_dsn(async_connector_kind, db_url))
    assert isinstance(connector, sqla_jobs.BaseAsyncConnector)
    twins: list[Any] = []
    make_twin = slowly(connector._make_sync_connector, twins)
    monkeypatch.setattr(connector, "_make_sync_connector", make_twin)
    try:
        await asyncio.to_thread(
            in_threads_at_once, lambda: connector.execute(queries.defer_job, defer_params())
        )
    finally:
        await connector.close_async()

    assert len(twins) == 1
    assert database.job_count() == THREADS


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_both_sqlalchemy_connectors_hand_the_pooled_connection_back_as_they_found_it(
    flavour: str, db_url: str
) -> None:
    """Each statement runs in autocommit on the bare driver connection (engine events do not
    see it); the application's next transaction on that connection is its usual one."""
    url = sqlalchemy_url(db_url, "psycopg")
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "pool_size": 1}
    sync_engine = create_engine(url, **options) if flavour == "sync" else None
    async_engine = create_async_engine(url, **options) if flavour == "async" else None
    engine = sync_engine if async_engine is None else async_engine.sync_engine
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        if sync_engine is not None:
            with sync_engine.connect():  # SQLAlchemy's own first-connect queries: not ours
                pass
            event.listen(engine, "before_cursor_execute", seen)
            sqla_jobs.SQLAlchemyConnector(sync_engine).execute(queries.defer_job, defer_params())
            event.remove(engine, "before_cursor_execute", seen)
            with sync_engine.connect() as conn:
                isolation = conn.exec_driver_sql("SHOW transaction_isolation").scalar()
                conn.exec_driver_sql("CREATE TEMP TABLE scratch (x int)")
                conn.rollback()
                rolled_back = conn.exec_driver_sql("SELECT to_regclass('pg_temp.scratch')")
                left = rolled_back.scalar()
        else:
            assert async_engine is not None
            connector = sqla_jobs.SQLAlchemyAsyncConnector(async_engine)
            await connector.open_async()
            event.listen(engine, "before_cursor_execute", seen)
            await connector.execute_async(queries.defer_job, defer_params())
            event.remove(engine, "before_cursor_execute", seen)
            async with async_engine.connect() as aconn:
                isolation = (await aconn.exec_driver_sql("SHOW transaction_isolation")).scalar()
                await aconn.exec_driver_sql("CREATE TEMP TABLE scratch (x int)")
                await aconn.rollback()
                rolled_back = await aconn.exec_driver_sql("SELECT to_regclass('pg_temp.scratch')")
                left = rolled_back.scalar()
            await connector.close_async()
    finally:
        if sync_engine is not None:
            sync_engine.dispose()
        if async_engine is not None:
            await async_engine.dispose()

    assert statements == []
    assert isolation == "repeatable read"
    assert left is None  # the temp table went with the rollback: an ordinary transaction
