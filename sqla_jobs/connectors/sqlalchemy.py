"""Sync connectors over the application's own SQLAlchemy `Engine`: `SQLAlchemyConnector` and
`SQLAlchemyPsycopg2Connector`. They defer jobs through the engine's pool, never a pool of
their own.

The helpers here (driver and argument checks) serve every SQLAlchemy-based connector: this
one, `SQLAlchemyAsyncConnector` and the ``bind=`` connector.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import JobsError
from ..queries import Query
from .base import (
    MAX_DEAD_CONNECTIONS,
    BaseConnector,
    Params,
    Row,
    idle_connection_is_dead,
    missing_driver,
)
from .dbapi import copy_rows, driver_errors, fetch_all, is_idle
from .translate import translate_error

#: SQLAlchemy drivers whose paramstyle is the ``%(name)s`` our rendered statements use.
SUPPORTED_DRIVERS = ("psycopg", "psycopg2")

#: What SQLAlchemy raises around a driver's error, or when its pool has no connection free.
SQLALCHEMY_ERRORS = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError)


def check_dialect(dialect: Dialect, *, what: str, want_async: bool | None = None) -> None:
    """Refuse, with the fix, an engine or connection that sqla_jobs cannot speak through.

    ``what`` names the thing in the message; ``want_async`` also checks that the driver is the
    async (True) or sync (False) form.
    """
    name, driver = dialect.name, dialect.driver
    if name != "postgresql" or driver not in SUPPORTED_DRIVERS:
        hint = (
            " For async code, create_async_engine('postgresql+psycopg://...') gives an async "
            "engine on psycopg 3."
            if driver == "asyncpg"
            else ""
        )
        raise JobsError(
            f"{what} uses the {name}+{driver} driver, which sqla_jobs does not support: it "
            "speaks to PostgreSQL through psycopg 3 (postgresql+psycopg://, sync or async) or "
            f"psycopg2 (postgresql+psycopg2://, sync). Build the engine on one of those URLs.{hint}"
        )
    if want_async is False and dialect.is_async:
        raise JobsError(
            f"{what} uses the async form of {driver}, which a sync engine cannot drive: build "
            f"it with create_engine('postgresql+{driver}://...'), or pass the AsyncEngine from "
            "create_async_engine() to sqla_jobs.SQLAlchemyAsyncConnector."
        )
    if want_async is True and not dialect.is_async:
        raise JobsError(
            f"{what} uses the sync form of {driver}: build it with "
            "create_async_engine('postgresql+psycopg://...')."
        )


def check_engine_arguments(
    owner: str, engine: object, dsn: str | None, engine_kwargs: dict[str, Any], *, want_async: bool
) -> None:
    """Refuse, with the fix, a SQLAlchemy connector given neither or both of ``engine=`` and
    ``dsn=``, engine arguments beside an engine, or an engine of the other kind."""
    if (engine is None) == (dsn is None):
        raise TypeError(f"{owner} takes either engine= or dsn=, not both and not neither")
    factory = "create_async_engine" if want_async else "create_engine"
    if engine is not None and engine_kwargs:
        raise TypeError(
            f"{owner}(engine=...) takes no {factory} arguments "
            f"({', '.join(sorted(engine_kwargs))}): configure the engine itself"
        )
    if want_async and isinstance(engine, Engine):
        raise TypeError(
            f"{owner} takes an AsyncEngine (create_async_engine()), not a sync Engine: for "
            "a sync engine use sqla_jobs.SQLAlchemyConnector(engine)"
        )
    if not want_async and isinstance(engine, AsyncEngine):
        raise TypeError(
            f"{owner} takes a sync Engine, not an AsyncEngine: for an engine made by "
            "create_async_engine(), use sqla_jobs.SQLAlchemyAsyncConnector(engine)"
        )
    wanted = AsyncEngine if want_async else Engine
    name = "an AsyncEngine" if want_async else "a sqlalchemy Engine"
    if engine is not None and not isinstance(engine, wanted):
        raise TypeError(f"{owner}(engine=...) takes {name}, not {type(engine).__name__}")


@functools.cache
def _connect_errors() -> tuple[type[Exception], ...]:
    """What getting a connection from an engine's pool raises: the pool lets the driver's
    connect errors through, unwrapped."""
    return (*driver_errors(), *SQLALCHEMY_ERRORS)


class SQLAlchemyConnector(BaseConnector):
    """Sync connector that borrows connections from the app's SQLAlchemy ``Engine`` and its
    pool (never a pool of its own): defers jobs, cannot run a worker.

    Pass ``engine=`` (the app's engine on ``postgresql+psycopg://`` or
    ``postgresql+psycopg2://``), or ``dsn=`` (a libpq URL or ``key=value`` string; ``""`` for
    libpq's ``PG*`` variables) plus any ``sqlalchemy.create_engine`` keyword arguments to
    build one: with ``dsn=`` this class uses psycopg 3. Each statement runs in autocommit
    mode on a connection checked out for it.
    """

    #: Driver used for a ``dsn=`` without one (``postgresql://``).
    default_driver = "psycopg"

    def __init__(
        self, engine: Engine | None = None, *, dsn: str | None = None, **engine_kwargs: Any
    ) -> None:
        cls = type(self).__name__
        check_engine_arguments(cls, engine, dsn, engine_kwargs, want_async=False)
        self._owns_engine = engine is None
        if engine is None:
            assert dsn is not None
            url, kwargs = engine_arguments(dsn, self.default_driver, engine_kwargs)
            try:
                engine = sqlalchemy.create_engine(url, **kwargs)
            except ModuleNotFoundError as exc:  # create_engine imports the driver
                if exc.name != "psycopg2":
                    raise
                raise missing_driver(cls, "psycopg2", "psycopg2") from exc
        check_dialect(engine.dialect, what=f"The engine given to {cls}", want_async=False)
        self.engine: Engine = engine
        self._target = engine.url.render_as_string(hide_password=True)

    def describe(self) -> str:
        return self._target

    def close(self) -> None:
        """Dispose of the engine if this connector built it (``dsn=``); an engine passed in
        belongs to the application and stays open."""
        if self._owns_engine:
            self.engine.dispose()

    def _raw_connection_alive(self) -> Any:
        """A pooled connection that the server has not closed (`idle_connection_is_dead`):
        closed ones are invalidated (the pool connects anew in their place)."""
        for _ in range(MAX_DEAD_CONNECTIONS):
            pooled = self.engine.raw_connection()
            driver_connection: Any = pooled.driver_connection
            if not driver_connection.closed and not idle_connection_is_dead(
                driver_connection.fileno()
            ):
                return pooled
            pooled.invalidate()
            pooled.close()
        return self.engine.raw_connection()

    @contextlib.contextmanager
    def _driver_connection(self, query: Query | None) -> Iterator[Any]:
        """A connection from the engine's pool as the bare driver connection, in autocommit
        mode for the statement: a third of the client time of a SQLAlchemy ``Connection``
        (whose per-call work costs more than PostgreSQL's insert). Engine events and
        ``echo`` do not see these statements; pool events do. `SQLAlchemyAsyncConnector`
        borrows its connections the same way."""
        try:
            pooled = self._raw_connection_alive()
        except _connect_errors() as exc:
            raise translate_error(exc, target=self._target, query=query, connecting=True) from exc
        driver_connection: Any = pooled.driver_connection
        try:
            was_autocommit = driver_connection.autocommit
            driver_connection.autocommit = True
            try:
                yield driver_connection
            finally:
                if is_idle(driver_connection):
                    driver_connection.autocommit = was_autocommit
                else:  # lost, or stopped mid-statement: the pool must not hand it out again
                    pooled.invalidate()
        except driver_errors() as exc:
            raise translate_error(exc, target=self._target, query=query) from exc
        finally:
            pooled.close()  # back to the pool

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        with self._driver_connection(query) as connection:
            return fetch_all(connection, query, params)

    supports_copy = True
    supports_copy_async = True  # in a thread

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        with self._driver_connection(None) as connection:
            copy_rows(connection, table, columns, rows)

    def sqlalchemy_engine(self) -> Engine:
        return self.engine


class SQLAlchemyPsycopg2Connector(SQLAlchemyConnector):
    """`SQLAlchemyConnector` under the name the connector spec gives it; ``dsn=`` builds a
    psycopg2 engine. An ``engine=`` may use either psycopg2 or psycopg 3."""

    default_driver = "psycopg2"


def with_driver(url: str, driver: str) -> str:
    """A libpq URL (``postgresql://`` or ``postgres://``) as SQLAlchemy's
    ``postgresql+<driver>://``; a URL that names its driver already is kept as it is."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return f"postgresql+{driver}://" + url[len(prefix) :]
    return url


def engine_arguments(
    dsn: str, driver: str, engine_kwargs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The URL and keyword arguments of ``create_engine`` for a libpq connection string: a
    URL, a ``key=value`` string, or ``""`` (libpq's ``PG*`` variables and defaults)."""
    if "://" in dsn:
        return with_driver(dsn, driver), engine_kwargs
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(
            f"dsn= is neither a URL nor a valid key=value connection string: {exc}. Pass e.g. "
            "'postgresql://user@host/dbname' or 'host=... dbname=...'."
        ) from exc
    # Both drivers take libpq's keywords as connect() arguments; explicit ones win.
    connect_args = {**params, **engine_kwargs.get("connect_args", {})}
    return f"postgresql+{driver}://", {**engine_kwargs, "connect_args": connect_args}
