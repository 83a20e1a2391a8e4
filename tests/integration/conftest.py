"""Connector fixtures: one behaviour suite for the five connectors (STYLE.md).

A test that takes ``app`` (or ``connector_kind``) runs once per connector; ``async_app`` /
``async_connector_kind`` once per connector that can run a worker; ``sync_connector_kind`` once
per defer-only connector. `Connectors` (fixture ``connectors``) builds each connector every way
connectors.md documents: DSN, keyword arguments, libpq environment. Test modules reach these
helpers through fixtures, never by importing this file.

``database`` is an independent psycopg connection to the same database: assertions read the
rows with it, never through the connector under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

import sqla_jobs
from sqla_jobs import BaseConnector, queries

ASYNC_CONNECTORS = ("psycopg", "aiopg", "sqlalchemy_async")
SYNC_CONNECTORS = ("sync_psycopg", "psycopg2", "sqlalchemy", "sqlalchemy_psycopg")
CONNECTORS = ASYNC_CONNECTORS + SYNC_CONNECTORS

CLASS_NAMES = {
    "psycopg": "PsycopgConnector",
    "aiopg": "AiopgConnector",
    "sync_psycopg": "SyncPsycopgConnector",
    "psycopg2": "Psycopg2Connector",
    "sqlalchemy": "SQLAlchemyPsycopg2Connector",
    "sqlalchemy_async": "SQLAlchemyAsyncConnector",
    "sqlalchemy_psycopg": "SQLAlchemyConnector",
}


class Connectors:
    """Builds any of the five connectors, by kind, each way connectors.md documents.

    Handed to tests by the ``connectors`` fixture (test modules never import conftest).
    """

    ALL = CONNECTORS
    ASYNC = ASYNC_CONNECTORS
    SYNC = SYNC_CONNECTORS
    CLASS_NAMES = CLASS_NAMES
    #: A server that is certainly not there: nothing listens on port 1.
    DOWN_SERVER_URL = "postgresql://postgres:s3cret-pw@127.0.0.1:1/sqla_jobs_nowhere"

    @staticmethod
    def libpq_params(url: str) -> dict[str, str]:
        """The libpq keyword parameters a URL stands for (host may be a socket directory)."""
        return {k: v for k, v in conninfo_to_dict(url).items() if v not in (None, "")}

    @staticmethod
    def from_dsn(kind: str, dsn: str, **options: Any) -> BaseConnector:
        """``kind``'s connector built from a libpq URL or key=value string."""
        if kind == "psycopg":
            return sqla_jobs.PsycopgConnector(conninfo=dsn, **options)
        if kind == "aiopg":
            return sqla_jobs.AiopgConnector(dsn, **options)
        if kind == "sync_psycopg":
            return sqla_jobs.SyncPsycopgConnector(conninfo=dsn, **options)
        if kind == "psycopg2":
            return sqla_jobs.Psycopg2Connector(dsn, **options)
        if kind == "sqlalchemy":
            return sqla_jobs.SQLAlchemyPsycopg2Connector(dsn=dsn, **options)
        if kind == "sqlalchemy_async":
            return sqla_jobs.SQLAlchemyAsyncConnector(dsn=dsn, **options)
        if kind == "sqlalchemy_psycopg":
            return sqla_jobs.SQLAlchemyConnector(dsn=dsn, **options)
        raise AssertionError(kind)

    @staticmethod
    def from_kwargs(kind: str, params: dict[str, str]) -> BaseConnector:
        """``kind``'s connector built from libpq keyword arguments, in its driver's form."""
        if kind == "psycopg":
            return sqla_jobs.PsycopgConnector(kwargs=params)
        if kind == "aiopg":
            return sqla_jobs.AiopgConnector(**params)
        if kind == "sync_psycopg":
            return sqla_jobs.SyncPsycopgConnector(kwargs=params)
        if kind == "psycopg2":
            return sqla_jobs.Psycopg2Connector(**params)
        if kind == "sqlalchemy":
            # create_engine's own keyword argument for the driver's connection parameters.
            return sqla_jobs.SQLAlchemyPsycopg2Connector(dsn="postgresql://", connect_args=params)
        if kind == "sqlalchemy_async":
            return sqla_jobs.SQLAlchemyAsyncConnector(dsn="postgresql://", connect_args=params)
        if kind == "sqlalchemy_psycopg":
            return sqla_jobs.SQLAlchemyConnector(dsn="postgresql://", connect_args=params)
        raise AssertionError(kind)

    @staticmethod
    def from_environment(kind: str) -> BaseConnector:
        """``kind``'s connector built with no connection argument: libpq's PG* variables
        apply."""
        if kind == "psycopg":
            return sqla_jobs.PsycopgConnector()
        if kind == "aiopg":
            return sqla_jobs.AiopgConnector()
        if kind == "sync_psycopg":
            return sqla_jobs.SyncPsycopgConnector()
        if kind == "psycopg2":
            return sqla_jobs.Psycopg2Connector()
        if kind == "sqlalchemy":
            return sqla_jobs.SQLAlchemyPsycopg2Connector(dsn="postgresql://")
        if kind == "sqlalchemy_async":
            return sqla_jobs.SQLAlchemyAsyncConnector(dsn="postgresql://")
        if kind == "sqlalchemy_psycopg":
            return sqla_jobs.SQLAlchemyConnector(dsn="postgresql://")
        raise AssertionError(kind)


class Database:
    """Reads (and, for set-ups, writes) the test database directly, bypassing sqla_jobs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def close(self) -> None:
        self.conn.close()

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return next(iter(row.values()))

    def jobs(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT *, status::text AS status, xmin::text AS xmin FROM sqla_jobs_jobs ORDER BY id"
        )

    def job(self, job_id: int) -> dict[str, Any]:
        rows = self.rows(
            "SELECT *, status::text AS status FROM sqla_jobs_jobs WHERE id = %s", (job_id,)
        )
        assert rows, f"job {job_id} is not in the database"
        return rows[0]

    def job_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM sqla_jobs_jobs"))

    def events(self, job_id: int) -> list[dict[str, Any]]:
        """The job's history (status, error), oldest first, as the library reads it."""
        rows = self.rows(queries.job_history.sql, {"job_id": job_id})
        return [{"status": str(row["status"]), "error": row["error"]} for row in rows]

    def backends(self) -> int:
        """Connections to this database other than this one."""
        return int(
            self.scalar(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``condition`` until true or ``timeout`` seconds pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    @staticmethod
    async def wait_until_async(condition: Callable[[], bool], within: float = 5.0) -> bool:
        """`wait_until` without blocking the event loop."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def listening(self) -> bool:
        """Whether some connection to this database has issued LISTEN."""
        return bool(
            self.scalar(
                "SELECT count(*) > 0 FROM pg_stat_activity "
                "WHERE datname = current_database() AND query ILIKE 'LISTEN%%'"
            )
        )


@pytest.fixture
def connectors() -> type[Connectors]:
    """The connector builders (see `Connectors`)."""
    return Connectors


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.close()


@pytest.fixture(params=CONNECTORS)
def connector_kind(request: pytest.FixtureRequest) -> str:
    """Each of the five connectors in turn."""
    return str(request.param)


@pytest.fixture(params=ASYNC_CONNECTORS)
def async_connector_kind(request: pytest.FixtureRequest) -> str:
    """Each connector that can run a worker."""
    return str(request.param)


@pytest.fixture(params=SYNC_CONNECTORS)
def sync_connector_kind(request: pytest.FixtureRequest) -> str:
    """Each defer-only connector."""
    return str(request.param)


@pytest.fixture
async def app(connector_kind: str, db_url: str) -> AsyncIterator[sqla_jobs.App]:
    """An app on ``connector_kind``'s connector to the test database, ready to defer."""
    app = sqla_jobs.App(connector=Connectors.from_dsn(connector_kind, db_url))
    if app.connector.can_run_worker:
        await app.open_async()  # sync connectors open on first use
    yield app
    await app.close_async()


@pytest.fixture
async def async_app(async_connector_kind: str, db_url: str) -> AsyncIterator[sqla_jobs.App]:
    """An app on an opened async connector to the test database, ready to run a worker."""
    app = sqla_jobs.App(connector=Connectors.from_dsn(async_connector_kind, db_url))
    await app.open_async()
    yield app
    await app.close_async()
