"""COPY's text format, as the psycopg2-based connectors write it."""

from __future__ import annotations

import datetime

from sqla_jobs.connectors.dbapi import copy_statement, text_rows, text_value


def test_null_is_backslash_n_and_an_empty_string_stays_empty() -> None:
    assert text_value(None) == "\\N"
    assert text_value("") == ""


def test_separators_and_backslashes_inside_values_are_escaped() -> None:
    assert text_value("a\tb\nc\rd\\N") == "a\\tb\\nc\\rd\\\\N"


def test_timestamps_keep_their_time_zone() -> None:
    at = datetime.datetime(2030, 1, 2, 3, 4, 5, 600, tzinfo=datetime.UTC)
    assert text_value(at) == "2030-01-02T03:04:05.000600+00:00"


def test_rows_are_tab_separated_lines() -> None:
    assert text_rows([(1, "q", None), (2, "x\ty", 3)]) == "1\tq\t\\N\n2\tx\\ty\t3\n"


def test_copy_statement_takes_the_table_as_sql_and_quotes_the_columns() -> None:
    table = '"a b""c".sqla_jobs_jobs'  # as `queries.Statements.jobs_table` has it
    assert copy_statement(table, ["id", "lock"]) == f'COPY {table} ("id", "lock") FROM STDIN'
