"""`Psycopg2Connector`: a sync, defer-only connector on a psycopg2 connection pool."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ..queries import Query
from .base import BaseConnector, Params, Row, idle_connection_is_dead, missing_driver, redact
from .dbapi import copy_rows, fetch_all
from .translate import translate_error

# psycopg2 comes with the psycopg2 (or aiopg) extra: without it this module still imports,
# and building a connector says which extra to install.
try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.pool
except ImportError as exc:
    _missing_psycopg2: ImportError | None = exc
else:
    _missing_psycopg2 = None

PoolFactory = Callable[..., "psycopg2.pool.AbstractConnectionPool"]


def describe_psycopg2(dsn: str, kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k in ("host", "port", "dbname", "user")}
    try:
        return redact(psycopg2.extensions.make_dsn(dsn or None, **shown))
    except psycopg2.ProgrammingError:
        return "<invalid connection string>"


class Psycopg2Connector(BaseConnector):
    """Sync connector on psycopg2: defers jobs from sync code.

    ``dsn`` is a libpq connection string or URL; other keyword arguments are libpq connection
    parameters (``host``, ``dbname``, ...); with neither, libpq's ``PG*`` environment variables
    apply. ``minconn`` / ``maxconn`` size the pool, built by ``pool_factory`` (default
    ``psycopg2.pool.ThreadedConnectionPool``).
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        minconn: int = 1,
        maxconn: int = 10,
        pool_factory: PoolFactory | None = None,
        **kwargs: Any,
    ) -> None:
        if _missing_psycopg2 is not None:
            raise missing_driver(type(self).__name__, "psycopg2", "psycopg2") from _missing_psycopg2
        self._dsn = dsn
        self._kwargs = kwargs
        self._minconn = minconn
        self._maxconn = maxconn
        self._pool_factory = pool_factory or psycopg2.pool.ThreadedConnectionPool
        self._pool: psycopg2.pool.AbstractConnectionPool | None = None
        # psycopg2's pools raise when exhausted; this makes callers wait for a connection.
        self._slots = threading.BoundedSemaphore(maxconn)
        self._open_lock = threading.Lock()
        self._target = describe_psycopg2(dsn, kwargs)

    def describe(self) -> str:
        return self._target

    def open(self) -> None:
        self._open_pool()

    def _open_pool(self) -> psycopg2.pool.AbstractConnectionPool:
        """The pool, opened now if it is not yet."""
        with self._open_lock:
            if self._pool is None:
                try:
                    self._pool = self._pool_factory(
                        self._minconn, self._maxconn, self._dsn or None, **self._kwargs
                    )
                except psycopg2.Error as exc:
                    raise translate_error(exc, target=self._target, connecting=True) from exc
            return self._pool

    def close(self) -> None:
        with self._open_lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.closeall()

    @contextlib.contextmanager
    def _connection(self, query: Query | None) -> Iterator[Any]:
        pool = self._pool or self._open_pool()
        with self._slots:
            try:
                conn = self._getconn_alive(pool)
            except psycopg2.Error as exc:
                raise translate_error(
                    exc, target=self._target, query=query, connecting=True
                ) from exc
            broken = False
            try:
                conn.autocommit = True
                yield conn
            except psycopg2.Error as exc:
                broken = bool(conn.closed)
                raise translate_error(exc, target=self._target, query=query) from exc
            finally:
                pool.putconn(conn, close=broken)

    def _getconn_alive(self, pool: psycopg2.pool.AbstractConnectionPool) -> Any:
        """A pooled connection that the server has not closed (`idle_connection_is_dead`):
        closed ones are dropped (a new one is made in their place), at most the pool's size."""
        for _ in range(self._maxconn):
            conn = pool.getconn()
            if not conn.closed and not idle_connection_is_dead(conn.fileno()):
                return conn
            pool.putconn(conn, close=True)
        return pool.getconn()

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        with self._connection(query) as conn:
            return fetch_all(conn, query, params)

    supports_copy = True
    supports_copy_async = True  # in a thread

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        with self._connection(None) as conn:
            copy_rows(conn, table, columns, rows)

    def sqlalchemy_engine(self) -> Engine:
        dsn, kwargs = self._dsn or None, self._kwargs

        def connect() -> Any:
            return psycopg2.connect(dsn, **kwargs)

        return create_engine("postgresql+psycopg2://", creator=connect, poolclass=NullPool)
