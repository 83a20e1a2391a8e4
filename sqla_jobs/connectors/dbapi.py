"""Statements and COPY on a bare connection of either driver (psycopg 3 or psycopg2), sync or
async, for every connector that holds one: its own pool's, or a SQLAlchemy engine's pooled one.
Errors are the driver's: the connector translates them (`translate.translate_error`).

For COPY, psycopg 3 streams rows itself; psycopg2 reads the text format from a file-like
object, written here."""

from __future__ import annotations

import datetime
import functools
import io
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.pq import ExecStatus
from psycopg.rows import dict_row

from ..queries import Query
from .base import Params, Row, always_params, rows_from_cursor


@functools.cache
def driver_errors() -> tuple[type[Exception], ...]:
    """What either driver raises. psycopg2 is imported only when a connector may hold one of
    its connections: a worker on psycopg 3 never loads it."""
    try:
        import psycopg2
    except ImportError:  # not installed (no psycopg2 extra): no connection can be psycopg2's
        return (psycopg.Error,)
    return (psycopg.Error, psycopg2.Error)


# COPY's text format: a tab between columns, \N for NULL, and these escaped inside values.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_TUPLES_OK = ExecStatus.TUPLES_OK


def fetch_all(
    connection: Any, query: Query, params: Params | None, *, prepare: bool | None = None
) -> list[Row]:
    """Run ``query`` on a DB-API connection (in autocommit mode); its rows as dicts.
    ``prepare`` (psycopg 3 only): as ``cursor.execute`` takes it; None leaves it to the
    connection's ``prepare_threshold``."""
    if query.leading:
        return _fetch_all_in_one_message(connection, query, params)
    with connection.cursor() as cursor:
        if prepare is None:
            cursor.execute(query.sql, always_params(params))
        else:
            cursor.execute(query.sql, always_params(params), prepare=prepare)
        if cursor.description is None:
            return []
        return rows_from_cursor(cursor.description, cursor.fetchall())


async def fetch_all_async(
    connection: psycopg.AsyncConnection[Any],
    query: Query,
    params: Params | None,
    *,
    prepare: bool | None = None,
) -> list[Row]:
    """`fetch_all` on a psycopg 3 async connection."""
    if query.leading:
        # Client-side binding: several statements in one message go by the simple protocol.
        async with psycopg.AsyncClientCursor(connection, row_factory=dict_row) as bounded:
            await bounded.execute(query.message_sql, always_params(params))
            for _ in range(query.leading):
                bounded.nextset()  # past the statements sent ahead
            if bounded.pgresult is None or bounded.pgresult.status != _TUPLES_OK:
                return []
            found: list[Row] = await bounded.fetchall()
            return found
    # dict_row builds each row straight from the result (no Column objects).
    cursor = connection.cursor(row_factory=dict_row)
    await cursor.execute(query.sql, always_params(params), prepare=prepare)
    if cursor.pgresult is None or cursor.pgresult.status != _TUPLES_OK:
        return []
    rows: list[Row] = await cursor.fetchall()
    return rows


def _fetch_all_in_one_message(connection: Any, query: Query, params: Params | None) -> list[Row]:
    """`fetch_all` for a statement with others sent ahead (`Query.message_sql`): all in one
    simple-protocol message, one implicit transaction; the rows of the last."""
    if isinstance(connection, psycopg.Connection):
        # Client-side binding: several statements in one message go by the simple protocol.
        with psycopg.ClientCursor(connection) as cursor:
            cursor.execute(query.message_sql, always_params(params))
            for _ in range(query.leading):
                cursor.nextset()  # past the statements sent ahead
            if cursor.pgresult is None or cursor.pgresult.status != _TUPLES_OK:
                return []
            return rows_from_cursor(cursor.description, cursor.fetchall())
    with connection.cursor() as cursor:  # psycopg2 binds on the client and keeps the last result
        cursor.execute(query.message_sql, always_params(params))
        if cursor.description is None:
            return []
        return rows_from_cursor(cursor.description, cursor.fetchall())


def copy_statement(table: str, columns: Sequence[str]) -> str:
    """COPY into ``table``, given as SQL (quoted, qualified by its schema if named)."""
    quoted = ", ".join(f'"{column}"' for column in columns)
    return f"COPY {table} ({quoted}) FROM STDIN"


def text_value(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value).translate(_ESCAPES)


def text_rows(rows: Iterable[Sequence[Any]]) -> str:
    return "".join("\t".join(map(text_value, row)) + "\n" for row in rows)


def copy_rows(
    connection: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Write ``rows`` with one COPY on ``connection``, a psycopg 3 or psycopg2 connection in
    autocommit mode (the COPY is then its own transaction)."""
    statement = copy_statement(table, columns)
    if isinstance(connection, psycopg.Connection):
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        with connection.cursor() as cursor:
            cursor.copy_expert(statement, io.StringIO(text_rows(rows)))


async def copy_rows_async(
    connection: psycopg.AsyncConnection[Any],
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """`copy_rows` on a psycopg 3 async connection."""
    async with (
        connection.cursor() as cursor,
        cursor.copy(copy_statement(table, columns)) as copy,
    ):
        for row in rows:
            await copy.write_row(row)


def is_idle(connection: Any) -> bool:
    """Whether a psycopg 3 or psycopg2 connection is open and in no transaction and no
    statement: its autocommit can be set back. Both drivers number the idle status 0."""
    return not connection.closed and connection.info.transaction_status == 0
