"""The connector interface: the only place sqla_jobs meets a database driver.

A connector runs one statement at a time, each in its own transaction (autocommit), with
``%(name)s`` parameters, and returns rows as dicts. It holds no queue logic: that lives in
`sqla_jobs.manager`. Async connectors can also listen for notifications, which is what a
worker needs; sync connectors can only defer.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import select
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConnectorNotOpen, SyncConnectorCannotRunWorker
from ..queries import Query

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger("sqla_jobs.connectors")

Params = Mapping[str, Any]
Row = dict[str, Any]
#: Called with (channel, payload) for each notification received.
NotificationHandler = Callable[[str, str], Awaitable[None] | None]
#: Called once LISTEN is in place on every channel: notifications sent from then on arrive.
ListeningHandler = Callable[[], None]


class BaseConnector(abc.ABC):
    """Synchronous side of every connector: enough to defer jobs and manage them."""

    #: False for defer-only connectors.
    can_run_worker = False

    def open(self) -> None:  # noqa: B027 (optional for connectors without a pool)
        """Create the pool. Deferring opens it on first use when this is not called."""

    def close(self) -> None:  # noqa: B027
        """Close the pool."""

    @abc.abstractmethod
    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        """Run one statement in its own transaction; its rows as dicts ([] if none)."""

    def execute(self, query: Query, params: Params | None = None) -> None:
        self.fetch_all(query, params)

    def fetch_one(self, query: Query, params: Params | None = None) -> Row | None:
        rows = self.fetch_all(query, params)
        return rows[0] if rows else None

    #: Whether `copy_rows` / `copy_rows_async` work: big batches are written with COPY then.
    supports_copy = False
    supports_copy_async = False

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Write rows with ``COPY table (columns) FROM STDIN``, in one transaction."""
        raise NotImplementedError(f"{type(self).__name__} cannot COPY (supports_copy is False)")

    @abc.abstractmethod
    def sqlalchemy_engine(self) -> Engine:
        """A SQLAlchemy engine on the same database (for migrations and reporting)."""

    # Async forms so that ``await task.defer_async()`` works with a sync connector too: the
    # blocking call runs in a thread.
    async def open_async(self) -> None:
        await asyncio.to_thread(self.open)

    async def close_async(self) -> None:
        await asyncio.to_thread(self.close)

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        return await asyncio.to_thread(self.fetch_all, query, params)

    async def execute_async(self, query: Query, params: Params | None = None) -> None:
        await self.fetch_all_async(query, params)

    async def fetch_one_async(self, query: Query, params: Params | None = None) -> Row | None:
        rows = await self.fetch_all_async(query, params)
        return rows[0] if rows else None

    async def copy_rows_async(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        if not self.supports_copy_async:
            raise NotImplementedError(f"{type(self).__name__} cannot COPY from async code")
        await asyncio.to_thread(self.copy_rows, table, columns, rows)

    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        raise cannot_run_worker(self)

    def describe(self) -> str:
        """Where this connector points, for messages (no password)."""
        return type(self).__name__


class BaseAsyncConnector(BaseConnector):
    """An async connector: runs the worker, defers from async code, and from sync code
    through a sync twin on the same connection parameters."""

    can_run_worker = True

    def __init__(self) -> None:
        self._sync: BaseConnector | None = None
        self._sync_lock = threading.Lock()

    @abc.abstractmethod
    def _make_sync_connector(self) -> BaseConnector:
        """A sync connector on the same database, used when deferring from sync code."""

    @property
    def sync_connector(self) -> BaseConnector:
        if self._sync is None:
            # Two threads deferring at once from sync code must not build two twins (two pools).
            with self._sync_lock:
                if self._sync is None:
                    self._sync = self._make_sync_connector()
        return self._sync

    # -- sync side delegates to the twin --
    def open(self) -> None:
        self.sync_connector.open()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        return self.sync_connector.fetch_all(query, params)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.sync_connector.copy_rows(table, columns, rows)

    def sqlalchemy_engine(self) -> Engine:
        return self.sync_connector.sqlalchemy_engine()

    # -- async side is the driver's own --
    @abc.abstractmethod
    async def open_async(self) -> None: ...

    @abc.abstractmethod
    async def close_async(self) -> None: ...

    @abc.abstractmethod
    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]: ...

    @abc.abstractmethod
    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        """LISTEN on the channels on a dedicated connection, call ``on_listening`` once every
        channel listens, then ``on_notification`` for each notification, until cancelled (or
        the connection fails: a `ConnectorError`)."""


def cannot_run_worker(connector: BaseConnector) -> SyncConnectorCannotRunWorker:
    return SyncConnectorCannotRunWorker(
        f"{type(connector).__name__} can defer jobs but cannot run a worker. Give the worker's "
        "app an async connector: sqla_jobs.PsycopgConnector, sqla_jobs.AiopgConnector or "
        "sqla_jobs.SQLAlchemyAsyncConnector (an app can keep this connector for deferring "
        "through app.with_connector())."
    )


def missing_driver(connector: str, module: str, extra: str) -> ImportError:
    """The error for a connector whose driver is not installed: it names the extra that brings
    the driver (raise it ``from`` the original ImportError, which names what failed)."""
    return ImportError(f"{connector} needs {module}: pip install 'sqla_jobs[{extra}]'", name=module)


def not_open(connector: BaseConnector) -> ConnectorNotOpen:
    return ConnectorNotOpen(
        f"{type(connector).__name__} is not open. Call app.open() / await app.open_async() "
        "(or use `with app.open():` / `async with app.open_async():`) before using it."
    )


#: Dead connections dropped at most for one statement, where a pool's size is not known: after
#: that many, the next connection is used as it is.
MAX_DEAD_CONNECTIONS = 32


def idle_connection_is_dead(fileno: int) -> bool:
    """Whether the server has closed an idle connection, checked without a round trip.

    An idle connection in autocommit mode expects nothing from the server, so anything to read
    on its socket is the server's goodbye: the FATAL of a shutdown or of
    ``pg_terminate_backend``, or the end of the stream after a crash. Such a connection is
    dropped before a statement is sent on it, so that a restarted server costs no failed
    statement. A connection whose server vanished without a word still looks alive: its
    statement then fails (or times out) and the connection is replaced."""
    poller = select.poll()
    try:
        poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def always_params(params: Params | None) -> Params:
    """The parameters to send with a statement, a mapping even when it takes none: the driver
    then reads every statement's ``%%`` as ``%``, as SQLAlchemy does, the way a schema name
    with a ``%`` in it is rendered (`App`'s ``schema``)."""
    return {} if params is None else params


def rows_from_cursor(description: Any, rows: Iterable[tuple[Any, ...]]) -> list[Row]:
    if description is None:
        return []
    names = [column[0] for column in description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def redact(conninfo: str) -> str:
    """A connection string without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparsable connection string>"
    if "password" in parts:
        parts["password"] = "***"
    return (
        make_conninfo("", **{k: v for k, v in parts.items() if v is not None}) or "libpq defaults"
    )
