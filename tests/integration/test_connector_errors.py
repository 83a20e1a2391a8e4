"""Every connector's errors go through one translator: on a real PostgreSQL, the sqla_jobs error
carries the server's diagnostics, has the driver's error as its cause, and its class names the
fix.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import psycopg2.pool
import pytest
import sqlalchemy.exc
from helpers import sqlalchemy_url
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from sqla_jobs import (
    BaseConnector,
    ConnectionFailed,
    ConnectorError,
    SchemaNotFound,
    queries,
)
from sqla_jobs.connectors.bind import BindConnector
from sqla_jobs.queries import Query
from sqla_jobs.statuses import QUEUEING_LOCK_INDEX

if TYPE_CHECKING:
    from conftest import Connectors

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
