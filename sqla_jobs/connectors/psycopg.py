"""psycopg 3 connectors: `PsycopgConnector` (async, runs the worker) and
`SyncPsycopgConnector` (sync, defers)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from psycopg.conninfo import make_conninfo

from ..queries import Query
from .base import (
    BaseAsyncConnector,
    BaseConnector,
    ListeningHandler,
    NotificationHandler,
    Params,
    Row,
    idle_connection_is_dead,
    not_open,
    redact,
)
from .dbapi import copy_rows, copy_rows_async, fetch_all, fetch_all_async
from .translate import translate_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

AsyncPoolFactory = Callable[..., psycopg_pool.AsyncConnectionPool[Any]]
SyncPoolFactory = Callable[..., psycopg_pool.ConnectionPool[Any]]


def _connection_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    # Every statement is its own transaction: autocommit saves a BEGIN and a COMMIT round trip.
    return {**(kwargs or {}), "autocommit": True}


def _describe(conninfo: str, kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k in ("host", "port", "dbname", "user")}
    try:
        return redact(make_conninfo(conninfo, **shown)) if shown else redact(conninfo)
    except psycopg.ProgrammingError:
        return "<invalid connection string>"


def _is_dead(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return conn.closed or idle_connection_is_dead(conn.fileno())


# While the server seems gone (a pooled connection found closed, or lost under a statement),
# a statement waits at most this long for the pool, which reconnects in the background after
# growing pauses (1, 2, 4 s...), then connects by itself: at once refused while the server is
# down, at once through when it is back.
_OUTAGE_POOL_WAIT = 0.2


class PsycopgConnector(BaseAsyncConnector):
    """Async connector on psycopg 3 and an ``psycopg_pool.AsyncConnectionPool``.

    Takes every ``AsyncConnectionPool`` argument (``conninfo``, ``kwargs``, ``min_size``,
    ``max_size``, ...). With no connection argument libpq's ``PG*`` environment variables
    apply. ``pool_factory`` builds the pool (``psycopg_pool.AsyncNullConnectionPool`` for
    PgBouncer setups).
    """

    def __init__(
        self,
        *,
        pool_factory: AsyncPoolFactory = psycopg_pool.AsyncConnectionPool,
        **pool_args: Any,
    ) -> None:
        super().__init__()
        self._pool_factory = pool_factory
        self._pool_args = pool_args
        self._conninfo: str = pool_args.get("conninfo", "")
        self._kwargs: dict[str, Any] = _connection_kwargs(pool_args.get("kwargs"))
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._open_lock = asyncio.Lock()
        self._outage = False  # the server seems gone: see _checkout
        self._target = _describe(self._conninfo, self._kwargs)

    def describe(self) -> str:
        return self._target

    def _make_sync_connector(self) -> BaseConnector:
        kwargs = {k: v for k, v in self._kwargs.items() if k != "autocommit"}
        factory = self._pool_factory
        if isinstance(factory, type) and issubclass(factory, psycopg_pool.AsyncNullConnectionPool):
            # No pooling asked for (PgBouncer): the sync twin keeps no connection open either.
            return SyncPsycopgConnector(
                conninfo=self._conninfo,
                kwargs=kwargs,
                pool_factory=psycopg_pool.NullConnectionPool,
            )
        return SyncPsycopgConnector(conninfo=self._conninfo, kwargs=kwargs, min_size=1)

    async def open_async(self) -> None:
        # Two tasks opening at once (a web app's startup and its first request) get one pool.
        async with self._open_lock:
            if self._pool is not None:
                return
            # One direct connection first: a wrong DSN or a down server fails now, with
            # libpq's own message, rather than after the pool's 30 s of retries.
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
            except psycopg.Error as exc:
                raise translate_error(exc, target=self._target, connecting=True) from exc
            await conn.close()
            pool = self._pool_factory(**{**self._pool_args, "kwargs": self._kwargs, "open": False})
            await pool.open()
            self._pool = pool

    async def close_async(self) -> None:
        # Under the lock: a close that comes while the pool opens waits for it, then closes it.
        async with self._open_lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
        self.close()  # the sync twin's pool

    async def _checkout(
        self, pool: psycopg_pool.AsyncConnectionPool[Any]
    ) -> tuple[psycopg.AsyncConnection[Any], bool]:
        """A connection the server has not closed (`idle_connection_is_dead`), and whether
        it is the pool's: a closed one is discarded, and the pool replaces it. While the
        server seems gone, a direct connection when the pool has none ready (see
        _OUTAGE_POOL_WAIT)."""
        conn: psycopg.AsyncConnection[Any]
        for _ in range(max(pool.max_size, 1)):
            try:
                conn = await pool.getconn(_OUTAGE_POOL_WAIT if self._outage else None)
            except psycopg_pool.PoolTimeout:
                if not self._outage:
                    raise
                break
            if not _is_dead(conn):
                self._outage = False
                return conn, True
            self._outage = True
            await conn.close()
            await pool.putconn(conn)
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs), False
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, connecting=True) from exc

    @staticmethod
    async def _checkin(
        pool: psycopg_pool.AsyncConnectionPool[Any],
        conn: psycopg.AsyncConnection[Any],
        pooled: bool,
    ) -> None:
        if pooled:
            await pool.putconn(conn)
        else:
            await conn.close()

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        pool = self._pool
        if pool is None:
            raise not_open(self)
        try:
            # getconn/putconn, not pool.connection(): the context manager adds a COMMIT check
            # under the connection's lock (a no-op in autocommit) and usage statistics, a
            # quarter of the checkout's cost. putconn still discards a broken connection, or
            # one returned mid-statement (cancelled), and the pool replaces it.
            conn, pooled = await self._checkout(pool)
            try:
                return await fetch_all_async(conn, query, params, prepare=query.prepared)
            finally:
                await self._checkin(pool, conn, pooled)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                self._outage = True  # the connection was lost, not the statement refused
            raise translate_error(exc, target=self._target, query=query) from exc

    supports_copy = True  # through the sync twin
    supports_copy_async = True

    async def copy_rows_async(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        pool = self._pool
        if pool is None:
            raise not_open(self)
        try:
            conn, pooled = await self._checkout(pool)
            try:
                await copy_rows_async(conn, table, columns, rows)
            finally:
                await self._checkin(pool, conn, pooled)
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target) from exc

    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, connecting=True) from exc
        try:
            for channel in channels:
                await conn.execute(f'LISTEN "{channel}"')
            if on_listening is not None:
                on_listening()
            async for notification in conn.notifies():
                result = on_notification(notification.channel, notification.payload)
                if result is not None:
                    await result
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target) from exc
        finally:
            await conn.close()


class SyncPsycopgConnector(BaseConnector):
    """Sync connector on psycopg 3 and a ``psycopg_pool.ConnectionPool``: defers jobs.

    Takes every ``ConnectionPool`` argument; ``pool_factory`` as for `PsycopgConnector`.
    """

    def __init__(
        self,
        *,
        pool_factory: SyncPoolFactory = psycopg_pool.ConnectionPool,
        **pool_args: Any,
    ) -> None:
        self._pool_factory = pool_factory
        self._pool_args = pool_args
        self._conninfo: str = pool_args.get("conninfo", "")
        self._kwargs: dict[str, Any] = _connection_kwargs(pool_args.get("kwargs"))
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._outage = False  # the server seems gone: see _checkout
        # Deferring opens the pool on first use, maybe from two threads at once: one pool.
        self._open_lock = threading.Lock()
        self._target = _describe(self._conninfo, self._kwargs)

    def describe(self) -> str:
        return self._target

    def open(self) -> None:
        self._open_pool()

    def _open_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        """The pool, opened now if it is not yet."""
        with self._open_lock:
            if self._pool is not None:
                return self._pool
            try:
                psycopg.Connection.connect(self._conninfo, **self._kwargs).close()
            except psycopg.Error as exc:
                raise translate_error(exc, target=self._target, connecting=True) from exc
            pool = self._pool_factory(**{**self._pool_args, "kwargs": self._kwargs, "open": False})
            pool.open()
            self._pool = pool
            return pool

    def close(self) -> None:
        with self._open_lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close()

    @contextlib.contextmanager
    def _connection(self, query: Query | None) -> Iterator[psycopg.Connection[Any]]:
        pool = self._pool or self._open_pool()
        try:
            conn, pooled = self._checkout(pool)
            try:
                yield conn
            finally:
                if pooled:
                    pool.putconn(conn)
                else:
                    conn.close()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                self._outage = True  # the connection was lost, not the statement refused
            raise translate_error(exc, target=self._target, query=query) from exc

    def _checkout(
        self, pool: psycopg_pool.ConnectionPool[Any]
    ) -> tuple[psycopg.Connection[Any], bool]:
        """`PsycopgConnector._checkout`, for a sync pool."""
        conn: psycopg.Connection[Any]
        for _ in range(max(pool.max_size, 1)):
            try:
                conn = pool.getconn(_OUTAGE_POOL_WAIT if self._outage else None)
            except psycopg_pool.PoolTimeout:
                if not self._outage:
                    raise
                break
            if not _is_dead(conn):
                self._outage = False
                return conn, True
            self._outage = True
            conn.close()
            pool.putconn(conn)
        try:
            return psycopg.Connection.connect(self._conninfo, **self._kwargs), False
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, connecting=True) from exc

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        with self._connection(query) as conn:
            return fetch_all(conn, query, params, prepare=query.prepared)

    supports_copy = True
    supports_copy_async = True  # in a thread

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        with self._connection(None) as conn:
            copy_rows(conn, table, columns, rows)

    def sqlalchemy_engine(self) -> Engine:
        kwargs = {k: v for k, v in self._kwargs.items() if k != "autocommit"}
        conninfo = self._conninfo

        def connect() -> psycopg.Connection[Any]:
            return psycopg.Connection.connect(conninfo, **kwargs)

        # Imported here: a worker that only sends our pre-rendered SQL never loads SQLAlchemy.
        from sqlalchemy import NullPool, create_engine

        return create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)
