"""Deferring inside the caller's own SQLAlchemy transaction.

`BindConnector` runs statements on the caller's ``Session`` / ``Connection`` (or their async
forms) without committing: the job row commits or rolls back with the caller's transaction,
and the NOTIFY that wakes workers is delivered only on commit (PostgreSQL holds notifications
until then).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from ..errors import JobsError
from ..queries import Query
from .base import BaseConnector, Params, Row
from .sqlalchemy import check_dialect
from .translate import translate_error

SyncBind = Session | scoped_session[Any] | Connection
AsyncBind = AsyncSession | async_scoped_session[Any] | AsyncConnection
Bind = SyncBind | AsyncBind


def _check_driver(connection: Connection | AsyncConnection) -> None:
    check_dialect(connection.dialect, what="The session or connection given as bind=")


class BindConnector(BaseConnector):
    """Runs statements in the transaction of a caller's session or connection.

    ``savepoint=True`` wraps each statement in a SAVEPOINT so that a refused statement (a
    queueing-lock clash) leaves the caller's transaction usable.
    """

    def __init__(self, bind: Bind, *, savepoint: bool = False) -> None:
        if not isinstance(
            bind,
            (
                Session,
                scoped_session,
                Connection,
                AsyncSession,
                async_scoped_session,
                AsyncConnection,
            ),
        ):
            raise TypeError(
                "bind= takes a SQLAlchemy Session, Connection, AsyncSession or AsyncConnection, "
                f"not {type(bind).__name__}"
            )
        self.bind = bind
        self.savepoint = savepoint

    def describe(self) -> str:
        return f"the caller's {type(self.bind).__name__}"

    def _sync_connection(self) -> Connection:
        bind = self.bind
        if isinstance(bind, Connection):
            return bind
        if isinstance(bind, (Session, scoped_session)):
            return bind.connection()
        raise JobsError(
            f"bind= is an {type(bind).__name__}: defer with `await ...defer_async()` "
            "(or pass a sync Session/Connection)."
        )

    async def _async_connection(self) -> AsyncConnection:
        bind = self.bind
        if isinstance(bind, AsyncConnection):
            return bind
        if isinstance(bind, (AsyncSession, async_scoped_session)):
            return await bind.connection()
        raise JobsError(
            f"bind= is a {type(bind).__name__}: defer with `.defer()` from sync code "
            "(or pass an AsyncSession/AsyncConnection to defer_async)."
        )

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        try:
            # A session's first statement opens its connection: that may fail too.
            connection = self._sync_connection()
            _check_driver(connection)
            # In the host's transaction: a preamble runs first in it, a statement timeout is
            # the transaction's own (a SET LOCAL would outlive the statement).
            if self.savepoint:
                with connection.begin_nested():
                    for ahead in query.preamble:
                        connection.exec_driver_sql(ahead, dict(params or {}))
                    result = connection.exec_driver_sql(query.sql, dict(params or {}))
            else:
                for ahead in query.preamble:
                    connection.exec_driver_sql(ahead, dict(params or {}))
                result = connection.exec_driver_sql(query.sql, dict(params or {}))
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate_error(exc, target=self.describe(), query=query) from exc
        return [dict(row) for row in result.mappings()] if result.returns_rows else []

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        try:
            connection = await self._async_connection()
            _check_driver(connection)
            if self.savepoint:
                async with connection.begin_nested():
                    for ahead in query.preamble:
                        await connection.exec_driver_sql(ahead, dict(params or {}))
                    result = await connection.exec_driver_sql(query.sql, dict(params or {}))
            else:
                for ahead in query.preamble:
                    await connection.exec_driver_sql(ahead, dict(params or {}))
                result = await connection.exec_driver_sql(query.sql, dict(params or {}))
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate_error(exc, target=self.describe(), query=query) from exc
        return [dict(row) for row in result.mappings()] if result.returns_rows else []

    def sqlalchemy_engine(self) -> Engine:
        bind = self.bind
        if isinstance(bind, (Connection, AsyncConnection)):
            return bind.engine.sync_engine if isinstance(bind, AsyncConnection) else bind.engine
        engine = bind.get_bind()
        if isinstance(engine, Connection):
            return engine.engine
        return engine
