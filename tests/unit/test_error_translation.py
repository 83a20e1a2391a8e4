"""One translator for every driver's errors: the class and the diagnostics of the sqla_jobs error
come from the SQLSTATE, the diagnostics fields and the driver's exception class, never from the
message text, which the server writes in the language of its ``lc_messages``.

The drivers' errors here carry gibberish for text: a server speaking another language (which a
test cannot ask for without the locales installed) changes nothing but the text.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import psycopg_pool
import pytest
import sqlalchemy.exc
from psycopg.pq import DiagnosticField

from sqla_jobs import ConnectionFailed, ConnectorError, SchemaNotFound
from sqla_jobs.cli.common import database_errors
from sqla_jobs.connectors.translate import read_diagnostics, translate_error
from sqla_jobs.queries import Query

GIBBERISH = "Zorg blip ¤ qwx «sqla_jobs_jobs» — 42P01? nein."
OTHER_GIBBERISH = "xyzzy"
TARGET = "host=db dbname=app"
QUERY = Query("defer_job", "INSERT INTO sqla_jobs_jobs ...")

#: Diagnostics fields a server sends with a unique violation.
UNIQUE_FIELDS = {
    "detail": "Schlüssel »(queueing_lock)=(x)« existiert bereits.",
    "schema_name": "public",
    "table_name": "sqla_jobs_jobs",
    "column_name": None,
    "constraint_name": "uq_sqla_jobs_jobs_queueing_lock_todo",
}

_PSYCOPG_FIELDS = {
    "detail": DiagnosticField.MESSAGE_DETAIL,
    "schema_name": DiagnosticField.SCHEMA_NAME,
    "table_name": DiagnosticField.TABLE_NAME,
    "column_name": DiagnosticField.COLUMN_NAME,
    "constraint_name": DiagnosticField.CONSTRAINT_NAME,
}

#: The drivers' ``diag`` attributes that differ from `ConnectorError`'s names.
_DIAG_ATTRIBUTES = {"detail": "message_detail"}


def psycopg_error(sqlstate: str | None, text: str, **fields: str | None) -> Exception:
    """A psycopg 3 error as the server would have it raised, with ``text`` for its message."""
    if sqlstate is None:
        return psycopg.OperationalError(text)  # what a broken connection raises
    info: dict[int, bytes | None] = {DiagnosticField.SQLSTATE: sqlstate.encode()}
    for name, value in fields.items():
        info[_PSYCOPG_FIELDS[name]] = value.encode() if value is not None else None
    error: Exception = psycopg.errors.lookup(sqlstate)(text, info=info)
    return error


def psycopg2_error(sqlstate: str | None, text: str, **fields: str | None) -> Exception:
    """A psycopg2 error with that SQLSTATE and diagnostics (psycopg2 fills them in from the
    server's result only, so a subclass stands in for them)."""
    base = psycopg2.OperationalError if sqlstate is None else psycopg2.errors.lookup(sqlstate)
    diag = types.SimpleNamespace(
        **{_DIAG_ATTRIBUTES.get(name, name): fields.get(name) for name in _PSYCOPG_FIELDS}
    )
    raised = type(base.__name__, (base,), {"pgcode": sqlstate, "diag": diag})
    error: Exception = raised(text)
    return error


def sqlalchemy_around(make: Callable[..., Exception]) -> Callable[..., Exception]:
    """SQLAlchemy's wrapper around a statement's error from ``make``'s driver."""

    def wrapped(sqlstate: str | None, text: str, **fields: str | None) -> Exception:
        orig = make(sqlstate, text, **fields)
        driver_base = psycopg.Error if isinstance(orig, psycopg.Error) else psycopg2.Error
        error: Exception = sqlalchemy.exc.DBAPIError.instance(
            QUERY.sql, {}, orig, driver_base, connection_invalidated=sqlstate is None
        )
        return error

    return wrapped


DRIVERS = {
    "psycopg": psycopg_error,
    "psycopg2 (and aiopg)": psycopg2_error,
    "sqlalchemy+psycopg": sqlalchemy_around(psycopg_error),
    "sqlalchemy+psycopg2": sqlalchemy_around(psycopg2_error),
}


@pytest.fixture(params=list(DRIVERS))
def driver_error(request: pytest.FixtureRequest) -> Callable[..., Exception]:
    """Builds an error of each driver in turn: (sqlstate, text, **diagnostics fields)."""
    return DRIVERS[request.param]


def test_a_unique_violation_carries_the_servers_diagnostics(
    driver_error: Callable[..., Exception],
) -> None:
    error = translate_error(
        driver_error("23505", GIBBERISH, **UNIQUE_FIELDS), target=TARGET, query=QUERY
    )

    assert type(error) is ConnectorError
    assert error.sqlstate == "23505"
    for name, value in UNIQUE_FIELDS.items():
        assert getattr(error, name) == value, name
    # The text is quoted for the human, with where and in which statement.
    assert GIBBERISH in str(error)
    assert "defer_job" in str(error) and TARGET in str(error)


@pytest.mark.parametrize(
    ("sqlstate", "expected", "words"),
    [
        ("42P01", SchemaNotFound, "`sqla-jobs schema upgrade`"),  # undefined table
        ("42704", SchemaNotFound, "`sqla-jobs schema upgrade`"),  # undefined type (the enum)
        ("08006", ConnectionFailed, "Could not connect"),  # connection failure
        ("53300", ConnectorError, "refused a statement"),  # too many connections, mid-session
        ("57P01", ConnectionFailed, "Lost the connection"),  # admin shutdown
        (None, ConnectionFailed, "Lost the connection"),  # no SQLSTATE: no answer came
        ("40001", ConnectorError, "refused a statement"),  # serialization failure
    ],
)
def test_the_class_comes_from_the_sqlstate_whatever_the_text(
    driver_error: Callable[..., Exception],
    sqlstate: str | None,
    expected: type[ConnectorError],
    words: str,
) -> None:
    for text in (GIBBERISH, OTHER_GIBBERISH):
        error = translate_error(driver_error(sqlstate, text), target=TARGET, query=QUERY)
        assert type(error) is expected, text
        assert error.sqlstate == sqlstate
        assert words in str(error)
        assert text in str(error)


def test_an_error_while_connecting_says_so_and_names_the_settings_to_check(
    driver_error: Callable[..., Exception],
) -> None:
    for sqlstate in (None, "53300", "57P03", "28P01"):  # and "the database system is starting"
        error = translate_error(driver_error(sqlstate, GIBBERISH), target=TARGET, connecting=True)
        assert type(error) is ConnectionFailed
        assert "Could not connect" in str(error) and "Check the connection settings" in str(error)


def test_sqlalchemy_raises_a_failed_connect_without_a_statement() -> None:
    """Which SQLAlchemy tells apart from a lost connection by the missing statement (the
    command line's migrations and reports get no other hint)."""
    refused = sqlalchemy.exc.DBAPIError.instance(
        None, None, psycopg.OperationalError(GIBBERISH), psycopg.Error
    )
    lost = sqlalchemy.exc.DBAPIError.instance(
        QUERY.sql, {}, psycopg.OperationalError(GIBBERISH), psycopg.Error
    )

    assert "Could not connect" in str(translate_error(refused, target=TARGET))
    assert "Lost the connection" in str(translate_error(lost, target=TARGET))


def test_a_psycopg_pool_timeout_is_a_failed_connect() -> None:
    error = translate_error(psycopg_pool.PoolTimeout(GIBBERISH), target=TARGET, query=QUERY)
    assert type(error) is ConnectionFailed
    assert "Could not connect" in str(error)


def test_an_exhausted_sqlalchemy_pool_names_its_settings() -> None:
    error = translate_error(sqlalchemy.exc.TimeoutError(GIBBERISH), target=TARGET, query=QUERY)
    assert type(error) is ConnectionFailed
    assert "pool_size / max_overflow" in str(error)


def test_any_other_exception_is_a_connector_error_quoting_it() -> None:
    error = translate_error(RuntimeError(GIBBERISH), target=TARGET, query=QUERY)
    assert type(error) is ConnectorError
    assert error.sqlstate is None and error.detail is None
    assert GIBBERISH in str(error)


def test_fields_the_server_did_not_send_are_none(driver_error: Callable[..., Exception]) -> None:
    diagnostics = read_diagnostics(driver_error("42P01", GIBBERISH))
    assert diagnostics.fields() == {
        "sqlstate": "42P01",
        "detail": None,
        "schema_name": None,
        "table_name": None,
        "column_name": None,
        "constraint_name": None,
    }


def test_the_command_line_translates_sqlalchemys_errors_with_the_same_translator() -> None:
    connector: Any = types.SimpleNamespace(describe=lambda: TARGET)
    cause = sqlalchemy_around(psycopg_error)("23505", GIBBERISH, **UNIQUE_FIELDS)

    with pytest.raises(ConnectorError) as caught, database_errors(connector):
        raise cause

    assert caught.value.__cause__ is cause
    assert caught.value.constraint_name == UNIQUE_FIELDS["constraint_name"]
    assert caught.value.detail == UNIQUE_FIELDS["detail"]
