"""`SQLAlchemyAsyncConnector`: defers and runs the worker through the application's own
SQLAlchemy `AsyncEngine` (``postgresql+psycopg://``) and its pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..queries import Query
from .base import (
    MAX_DEAD_CONNECTIONS,
    BaseAsyncConnector,
    BaseConnector,
    ListeningHandler,
    NotificationHandler,
    Params,
    Row,
    idle_connection_is_dead,
    not_open,
)
from .dbapi import copy_rows_async, fetch_all_async, is_idle
from .sqlalchemy import (
    SQLALCHEMY_ERRORS,
    SQLAlchemyConnector,
    check_dialect,
    check_engine_arguments,
    engine_arguments,
)
from .translate import translate_error

#: Pool of the sync engine built for deferring from sync code: one kept connection, a few
#: more under load (closed when returned).
_SYNC_TWIN_POOL = {"pool_size": 1, "max_overflow": 4}


class SQLAlchemyAsyncConnector(BaseAsyncConnector):
    """Async connector over the app's SQLAlchemy ``AsyncEngine`` on psycopg 3
    (``create_async_engine("postgresql+psycopg://...")``): defers jobs and runs the worker,
    with every statement on a connection from the engine's own pool.

    The worker's LISTEN holds one of the pool's connections for as long as the worker runs
    (and closes it at the end, rather than hand a listening connection back to the pool).

    Pass ``engine=``, or ``dsn=`` (a libpq URL or ``key=value`` string) plus any
    ``create_async_engine`` keyword arguments to build one.

    Deferring from sync code goes through ``sync_engine=`` when given (e.g. the app's sync
    engine on the same database), else through a small sync psycopg engine built on first use
    from the async engine's URL (and ``connect_args``, for an engine built from ``dsn=``; an
    engine passed in keeps its ``connect_args`` to itself: give ``sync_engine=`` if the
    connection needs them).
    """

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        dsn: str | None = None,
        sync_engine: Engine | None = None,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__()
        cls = type(self).__name__
        check_engine_arguments(cls, engine, dsn, engine_kwargs, want_async=True)
        self._owns_engine = engine is None
        self._connect_args: dict[str, Any] = {}
        if engine is None:
            assert dsn is not None
            url, kwargs = engine_arguments(dsn, "psycopg", engine_kwargs)
            engine = create_async_engine(url, **kwargs)
            self._connect_args = kwargs.get("connect_args", {})
        check_dialect(engine.dialect, what=f"The engine given to {cls}", want_async=True)
        if sync_engine is not None:
            check_dialect(sync_engine.dialect, what=f"{cls}'s sync_engine", want_async=False)
        self.engine: AsyncEngine = engine
        self._sync_engine = sync_engine
        self._target = engine.url.render_as_string(hide_password=True)
        self._open = False
        self._open_lock = asyncio.Lock()

    def describe(self) -> str:
        return self._target

    def _make_sync_connector(self) -> BaseConnector:
        if self._sync_engine is not None:
            return SQLAlchemyConnector(self._sync_engine)
        url = self.engine.url.set(drivername="postgresql+psycopg")
        twin = SQLAlchemyConnector(
            sqlalchemy.create_engine(url, connect_args=self._connect_args, **_SYNC_TWIN_POOL)
        )
        twin._owns_engine = True  # built here: disposed with this connector
        return twin

    async def open_async(self) -> None:
        """Check that the database answers, so that a wrong URL or a down server fails here
        rather than at the first defer. Like every async connector, this one must be opened
        before it defers or runs a worker (the engine's pool itself needs no opening)."""
        async with self._open_lock:
            if self._open:
                return
            try:
                async with self.engine.connect():
                    pass
            except SQLALCHEMY_ERRORS as exc:
                raise translate_error(exc, target=self._target, connecting=True) from exc
            self._open = True

    async def close_async(self) -> None:
        """Close the sync twin; dispose of the engine only if this connector built it."""
        # Under the lock: a close that comes while the check runs waits for it, then closes.
        async with self._open_lock:
            self._open = False
            if self._owns_engine:
                await self.engine.dispose()
        self.close()

    async def _connect_alive(self) -> tuple[AsyncConnection, psycopg.AsyncConnection[Any]]:
        """A pooled connection that the server has not closed (`idle_connection_is_dead`),
        and its driver connection: closed ones are invalidated (the pool connects anew in
        their place)."""
        for _ in range(MAX_DEAD_CONNECTIONS):
            conn = await self.engine.connect()
            driver_connection = await _driver_connection_of(conn)
            if not driver_connection.closed and not idle_connection_is_dead(
                driver_connection.fileno()
            ):
                return conn, driver_connection
            await conn.invalidate()
            await conn.close()
        conn = await self.engine.connect()
        return conn, await _driver_connection_of(conn)

    @contextlib.asynccontextmanager
    async def _driver_connection(
        self, query: Query | None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """`SQLAlchemyConnector._driver_connection` for the async engine: the bare psycopg
        connection of one of the pool's connections, in autocommit mode for the statement."""
        if not self._open:
            raise not_open(self)
        try:
            conn, driver_connection = await self._connect_alive()
        except (*SQLALCHEMY_ERRORS, psycopg.Error) as exc:
            raise translate_error(exc, target=self._target, query=query, connecting=True) from exc
        try:
            was_autocommit = driver_connection.autocommit
            await driver_connection.set_autocommit(True)
            try:
                yield driver_connection
            finally:
                if is_idle(driver_connection):
                    await driver_connection.set_autocommit(was_autocommit)
                else:  # lost, or cancelled mid-statement: the pool must not hand it out again
                    await conn.invalidate()
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, query=query) from exc
        finally:
            await conn.close()  # back to the pool

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        async with self._driver_connection(query) as connection:
            # Prepared or not as the application's engine decides (its prepare_threshold).
            return await fetch_all_async(connection, query, params)

    supports_copy = True  # through the sync twin
    supports_copy_async = True

    async def copy_rows_async(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        async with self._driver_connection(None) as connection:
            await copy_rows_async(connection, table, columns, rows)

    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        if not self._open:
            raise not_open(self)
        try:
            conn = await self.engine.connect()
            driver_connection = await _driver_connection_of(conn)
        except (*SQLALCHEMY_ERRORS, psycopg.Error) as exc:
            raise translate_error(exc, target=self._target, connecting=True) from exc
        try:
            await driver_connection.set_autocommit(True)
            for channel in channels:
                await driver_connection.execute(f'LISTEN "{channel}"')
            if on_listening is not None:
                on_listening()
            async with contextlib.aclosing(driver_connection.notifies()) as notifications:
                async for notification in notifications:
                    result = on_notification(notification.channel, notification.payload)
                    if result is not None:
                        await result
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target) from exc
        finally:
            # A connection that listened must not go back to the pool: it would keep
            # collecting notifications for whoever borrows it next.
            await conn.invalidate()
            await conn.close()


async def _driver_connection_of(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    raw = await conn.get_raw_connection()
    driver_connection = raw.driver_connection
    assert isinstance(driver_connection, psycopg.AsyncConnection)  # check_dialect saw to it
    return driver_connection
