"""`AiopgConnector`: an async connector on aiopg (psycopg2 under asyncio); runs the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..queries import Query
from .base import (
    BaseAsyncConnector,
    BaseConnector,
    ListeningHandler,
    NotificationHandler,
    Params,
    Row,
    always_params,
    idle_connection_is_dead,
    logger,
    missing_driver,
    not_open,
    rows_from_cursor,
)
from .psycopg2 import Psycopg2Connector, describe_psycopg2
from .translate import translate_error

# aiopg (and psycopg2 under it) comes with the aiopg extra: without it this module still
# imports, and building a connector says which extra to install.
try:
    import aiopg
    import psycopg2
except ImportError as exc:
    _missing_aiopg: ImportError | None = exc
else:
    _missing_aiopg = None

PoolFactory = Callable[..., Any]

# The bound on cancelling, on the server, a statement the caller gave up on (connecting
# included): a server that does not answer has no statement to cancel worth waiting for.
CANCEL_TIMEOUT = 5.0


class AiopgConnector(BaseAsyncConnector):
    """Async connector on an ``aiopg`` pool.

    ``dsn`` is a libpq connection string or URL; other keyword arguments go to
    ``aiopg.create_pool`` (``minsize``, ``maxsize``, ``timeout``, ...) and from there to
    libpq (``host``, ``dbname``, ...); with neither, libpq's ``PG*`` environment variables
    apply. ``pool_factory`` replaces ``aiopg.create_pool``.
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        pool_factory: PoolFactory | None = None,
        **pool_args: Any,
    ) -> None:
        if _missing_aiopg is not None:
            raise missing_driver(type(self).__name__, "aiopg", "aiopg") from _missing_aiopg
        super().__init__()
        self._dsn = dsn
        self._pool_args = pool_args
        self._pool_factory = pool_factory or aiopg.create_pool
        self._pool: Any = None
        self._open_lock = asyncio.Lock()
        self._cancels: set[asyncio.Task[None]] = set()
        self._connect_kwargs = {
            k: v
            for k, v in pool_args.items()
            if k
            not in (
                "minsize",
                "maxsize",
                "timeout",
                "pool_recycle",
                "enable_json",
                "enable_hstore",
                "enable_uuid",
                "echo",
                "on_connect",
            )
        }
        self._target = describe_psycopg2(dsn, self._connect_kwargs)

    def describe(self) -> str:
        return self._target

    supports_copy = True  # through the sync twin; aiopg itself has no COPY

    def _make_sync_connector(self) -> BaseConnector:
        return Psycopg2Connector(self._dsn, **self._connect_kwargs)

    async def open_async(self) -> None:
        # Two tasks opening at once (a web app's startup and its first request) get one pool.
        async with self._open_lock:
            if self._pool is not None:
                return
            args = {"enable_hstore": False, **self._pool_args}
            try:
                self._pool = await self._pool_factory(self._dsn, **args)
            except psycopg2.Error as exc:
                raise translate_error(exc, target=self._target, connecting=True) from exc

    async def close_async(self) -> None:
        # Under the lock: a close that comes while the pool opens waits for it, then closes it.
        async with self._open_lock:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.close()
                await pool.wait_closed()
        if self._cancels:
            await asyncio.wait(self._cancels, timeout=CANCEL_TIMEOUT)
        self.close()  # the sync twin's pool

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        if self._pool is None:
            raise not_open(self)
        pool = self._pool
        try:
            conn = await _acquire_alive(pool)
        except psycopg2.Error as exc:  # nothing was sent
            raise translate_error(exc, target=self._target, query=query, connecting=True) from exc
        backend = conn.raw.get_backend_pid()
        try:
            async with conn.cursor() as cursor:
                sql = query.message_sql if query.leading else query.sql
                await cursor.execute(sql, always_params(params))
                if cursor.description is None:
                    return []
                return rows_from_cursor(cursor.description, await cursor.fetchall())
        except psycopg2.Error as exc:
            raise translate_error(exc, target=self._target, query=query) from exc
        except asyncio.CancelledError as exc:
            cancelled_by_server = _cancelled_by_server(exc)
            if cancelled_by_server is not None:
                raise translate_error(
                    cancelled_by_server, target=self._target, query=query
                ) from cancelled_by_server
            if conn.closed:
                await self._cancel_on_server(backend)
            raise
        except TimeoutError:
            if conn.closed:
                await self._cancel_on_server(backend)
            raise
        finally:
            pool.release(conn)

    async def _cancel_on_server(self, backend: int) -> None:
        """Cancel the statement that ``backend`` runs for a caller that gave up on it.

        aiopg closes its connection when the caller is cancelled (or its own timeout
        passes) and refuses ``cancel()`` in async mode; the server, though, goes on with the
        statement until it next writes to the client: a claim blocked on a lock would commit
        later, leaving its jobs ``doing`` under a live worker that never runs them. psycopg 3
        cancels on the server by itself; here ``pg_cancel_backend`` does it, from a
        connection of its own (same role), within CANCEL_TIMEOUT. The caller waits for it
        unless cancelled again, in which case it goes on in the background."""
        task = asyncio.ensure_future(self._send_cancel(backend))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        await asyncio.wait({task})

    async def _send_cancel(self, backend: int) -> None:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                conn = await aiopg.connect(
                    self._dsn, enable_hstore=False, timeout=CANCEL_TIMEOUT, **self._connect_kwargs
                )
                try:
                    async with conn.cursor() as cursor:
                        await cursor.execute("SELECT pg_cancel_backend(%s)", (backend,))
                finally:
                    conn.close()
        except (psycopg2.Error, OSError, TimeoutError) as exc:
            # The server is down or unreachable: the statement died with its connection.
            logger.debug("Could not cancel a statement given up on %s: %s", self._target, exc)

    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        try:
            conn = await aiopg.connect(self._dsn, enable_hstore=False, **self._connect_kwargs)
        except psycopg2.Error as exc:
            raise translate_error(exc, target=self._target, connecting=True) from exc
        try:
            async with conn.cursor() as cursor:
                for channel in channels:
                    await cursor.execute(f'LISTEN "{channel}"')
            if on_listening is not None:
                on_listening()
            while True:
                notification = await conn.notifies.get()
                result = on_notification(notification.channel, notification.payload)
                if result is not None:
                    await result
        except psycopg2.Error as exc:
            raise translate_error(exc, target=self._target) from exc
        finally:
            conn.close()


def _cancelled_by_server(exc: asyncio.CancelledError) -> BaseException | None:
    """The server's ``QueryCanceledError`` (a ``statement_timeout``, a ``pg_cancel_backend``)
    that aiopg turned into ``exc``, unless this task was cancelled too: it is then a failed
    statement, not a cancellation (which would stop whoever awaits it, a worker's role)."""
    cause = exc.__context__
    task = asyncio.current_task()
    if (
        isinstance(cause, psycopg2.extensions.QueryCanceledError)
        and task is not None
        and not task.cancelling()
    ):
        return cause
    return None


async def _acquire_alive(pool: Any) -> Any:
    """A pooled connection that the server has not closed (`idle_connection_is_dead`):
    closed ones are dropped (aiopg connects anew in their place), at most the pool's size."""
    for _ in range(pool.maxsize or 1):
        conn = await pool.acquire()
        if not conn.closed and not idle_connection_is_dead(conn.raw.fileno()):
            return conn
        await conn.close()
        pool.release(conn)
    return await pool.acquire()
