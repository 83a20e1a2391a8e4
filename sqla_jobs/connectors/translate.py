"""The one error translator: a driver's exception in, a sqla_jobs error out.

Every connector (and the command line) hands the exceptions of its driver to `translate_error`
and raises what it returns ``from`` the original, so that the driver's error stays the cause.
What the exception says is read by a small adapter per driver into one `Diagnostics`: psycopg
3's ``sqlstate`` and ``diag``, psycopg2's ``pgcode`` and ``diag`` (aiopg raises psycopg2's
errors), and SQLAlchemy's ``DBAPIError``, unwrapped to the driver's error in its ``orig``.

The decision rests on the SQLSTATE, the diagnostics fields, the driver's exception class and
what the connector was doing, never on the message text: the server writes its messages in
the language of its ``lc_messages`` setting. The text is quoted, for the human who reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import psycopg
import psycopg_pool

from ..errors import ConnectionFailed, ConnectorError, SchemaNotFound, StatementCancelled
from ..queries import Query

__all__ = ["Diagnostics", "read_diagnostics", "translate_error"]

#: Every statement sqla_jobs sends names only its own tables and types, so an undefined table
#: (42P01) or type (42704) means that the schema is missing. The server names the object only
#: in its message text (no diagnostics field carries it), which is why the name is not read.
_MISSING_SCHEMA = frozenset({"42P01", "42704"})
_CONNECTION_EXCEPTION = "08"
_QUERY_CANCELED = "57014"  # a statement_timeout, or pg_cancel_backend
_OPERATOR_INTERVENTION = "57P"  # the server ended the session: shutdown, pg_terminate_backend


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnostics:
    """What a driver's exception says, read from its structured fields."""

    #: The exception's text on one line: quoted for people, never read.
    text: str
    sqlstate: str | None = None
    detail: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None
    constraint_name: str | None = None
    #: The connection failed under the driver: no SQLSTATE, the server's answer never came.
    connection_failed: bool = False
    #: Raised while getting a connection: no statement was sent.
    connecting: bool = False
    #: A SQLAlchemy pool had no connection free within its ``pool_timeout``.
    pool_exhausted: bool = False
    #: Raised through SQLAlchemy: the connection settings are an engine's.
    through_sqlalchemy: bool = False

    def fields(self) -> dict[str, str | None]:
        """The server's diagnostics, as `ConnectorError` takes them."""
        return {
            "sqlstate": self.sqlstate,
            "detail": self.detail,
            "schema_name": self.schema_name,
            "table_name": self.table_name,
            "column_name": self.column_name,
            "constraint_name": self.constraint_name,
        }


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _from_psycopg(exc: psycopg.Error) -> Diagnostics:
    diag = exc.diag
    return Diagnostics(
        _one_line(exc),
        sqlstate=exc.sqlstate,
        detail=diag.message_detail,
        schema_name=diag.schema_name,
        table_name=diag.table_name,
        column_name=diag.column_name,
        constraint_name=diag.constraint_name,
        connection_failed=isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None,
        # The pool had no connection ready in time and could not make one.
        connecting=isinstance(exc, psycopg_pool.PoolTimeout),
    )


def _from_psycopg2(exc: Any, psycopg2: Any) -> Diagnostics:
    diag = exc.diag
    return Diagnostics(
        _one_line(exc),
        sqlstate=exc.pgcode,
        detail=diag.message_detail,
        schema_name=diag.schema_name,
        table_name=diag.table_name,
        column_name=diag.column_name,
        constraint_name=diag.constraint_name,
        connection_failed=isinstance(exc, psycopg2.OperationalError) and not exc.pgcode,
    )


def _from_sqlalchemy(exc: Any, sqlalchemy_exc: Any) -> Diagnostics:
    if isinstance(exc, sqlalchemy_exc.TimeoutError):
        # SQLAlchemy's own text, not the server's; without its link to the docs.
        text = " ".join(str(exc).split("(Background on this error")[0].split())
        return Diagnostics(text, connecting=True, pool_exhausted=True, through_sqlalchemy=True)
    orig = exc.orig
    inner = read_diagnostics(orig) if isinstance(orig, BaseException) else Diagnostics("")
    if not inner.text:
        inner = dataclasses.replace(inner, text=_one_line(exc))
    # SQLAlchemy raises a failed connect with no statement (a failed COMMIT has none either,
    # but a lost connection there invalidates it, and a refused one has a SQLSTATE).
    connecting = exc.statement is None and not exc.connection_invalidated and not inner.sqlstate
    lost = isinstance(exc, sqlalchemy_exc.OperationalError) and not inner.sqlstate
    return dataclasses.replace(
        inner,
        connecting=inner.connecting or connecting,
        connection_failed=inner.connection_failed or lost,
        through_sqlalchemy=True,
    )


def read_diagnostics(exc: BaseException) -> Diagnostics:
    """The diagnostics of a psycopg 3, psycopg2 or SQLAlchemy exception (of any other, its
    text alone). psycopg2 and SQLAlchemy are looked up, not imported: an exception of theirs
    means that they are loaded, and a worker on psycopg 3 loads neither."""
    if isinstance(exc, psycopg.Error):
        return _from_psycopg(exc)
    psycopg2 = sys.modules.get("psycopg2")
    if psycopg2 is not None and isinstance(exc, psycopg2.Error):
        return _from_psycopg2(exc, psycopg2)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(
        exc, (sqlalchemy_exc.DBAPIError, sqlalchemy_exc.TimeoutError)
    ):
        return _from_sqlalchemy(exc, sqlalchemy_exc)
    return Diagnostics(_one_line(exc))


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def translate_error(
    exc: BaseException,
    *,
    target: str,
    query: Query | None = None,
    connecting: bool = False,
) -> ConnectorError:
    """The sqla_jobs error for a driver's exception, with the server's diagnostics and a
    message that names the fix; raise it ``from exc``.

    ``target`` says where the connector points (no password); ``query`` is the statement that
    failed, if any; ``connecting``: the exception came while getting a connection, so nothing
    was sent. A connection lost under a statement is a `ConnectionFailed` that says the
    statement may have taken effect; an undefined table or type is a `SchemaNotFound`.
    """
    diagnostics = read_diagnostics(exc)
    fields = diagnostics.fields()
    text = diagnostics.text
    sqlstate = diagnostics.sqlstate or ""
    connecting = connecting or diagnostics.connecting
    if diagnostics.pool_exhausted:
        return ConnectionFailed(
            f"No connection free in the SQLAlchemy engine's pool ({target}): {_sentence(text)} "
            "The jobs share the pool with the rest of the application: raise the engine's "
            "pool_size / max_overflow, or lower the worker's --concurrency.",
            **fields,
        )
    if not connecting and (
        diagnostics.connection_failed or sqlstate.startswith(_OPERATOR_INTERVENTION)
    ):
        during = f" during {query.name}" if query is not None else ""
        return ConnectionFailed(
            f"Lost the connection to PostgreSQL{during} ({target}): {_sentence(text)} The "
            "statement may or may not have taken effect (a defer may have written its job); "
            "the next statement gets a new connection. If this repeats, check that the server "
            "is running and reachable.",
            **fields,
        )
    if connecting or sqlstate.startswith(_CONNECTION_EXCEPTION):
        settings = (
            "the URL and connect_args of the SQLAlchemy engine (yours, with bind= or an "
            "engine given to the connector; else the connector's dsn)"
            if diagnostics.through_sqlalchemy
            else "the connector's conninfo/dsn or keyword arguments"
        )
        return ConnectionFailed(
            f"Could not connect to PostgreSQL ({target}): {_sentence(text)} Check the "
            f"connection settings (DATABASE_URL, {settings}, the PG* environment variables) "
            "and that the server is running.",
            **fields,
        )
    if sqlstate in _MISSING_SCHEMA:
        return SchemaNotFound(
            f"The sqla_jobs tables are missing in this database ({target}). Create them with "
            "`sqla-jobs schema upgrade` (or `alembic upgrade head`). Server said: " + text,
            **fields,
        )
    if sqlstate == _QUERY_CANCELED:
        name = query.name if query is not None else "a statement"
        if query is not None and query.timeout_ms is not None:
            why = (
                f"it ran past the statement_timeout of {query.timeout_ms / 1000:g} s set for "
                "it: ask for less (narrower filters) or raise the timeout"
            )
        else:
            why = (
                "it ran past the server's statement_timeout, or someone cancelled it "
                "(pg_cancel_backend)"
            )
        return StatementCancelled(
            f"PostgreSQL cancelled {name} ({target}): {why}. Nothing it did remains. "
            f"Server said: {text}",
            **fields,
        )
    where = f" in {query.name}" if query is not None else ""
    return ConnectorError(f"PostgreSQL refused a statement{where} ({target}): {text}", **fields)
