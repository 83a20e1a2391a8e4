"""How `sqla-jobs jobs` reads durations and statuses and prints errors and tables: no
database, no subprocess."""

from __future__ import annotations

import argparse
import datetime

import pytest

from sqla_jobs import JobStatus, cli
from sqla_jobs.cli.jobs import duration, error_summary, format_duration, status_list, table

DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 7 * DAY),
        ("12h", datetime.timedelta(hours=12)),
        ("30m", datetime.timedelta(minutes=30)),
        ("90s", datetime.timedelta(seconds=90)),
        ("2w", 14 * DAY),
        ("1d12h", 1.5 * DAY),
        ("1.5d", 1.5 * DAY),
        ("0s", datetime.timedelta(0)),
        (" 1D 2H ", DAY + datetime.timedelta(hours=2)),
    ],
)
def test_duration_reads_numbers_with_units_and_their_sums(
    text: str, expected: datetime.timedelta
) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["7", "", "d", "7days", "7d-1h", "-7d", "1y"])
def test_duration_without_a_known_unit_is_refused_with_examples(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. 7d, 12h, 30m or 1d12h"):
        duration(text)


@pytest.mark.parametrize("text", ["7d", "12h", "30m", "90s", "1d12h", "2d3h4m5s", "0s"])
def test_format_duration_writes_what_duration_reads(text: str) -> None:
    assert duration(format_duration(duration(text))) == duration(text)


def test_format_duration_names_the_largest_units() -> None:
    assert format_duration(datetime.timedelta(days=7)) == "7d"
    assert format_duration(datetime.timedelta(hours=36, seconds=1)) == "1d12h1s"


def test_status_list_reads_comma_lists_among_the_allowed_statuses() -> None:
    parse = status_list([JobStatus.FAILED, JobStatus.ABORTED])
    assert parse("failed, ABORTED") == [JobStatus.FAILED, JobStatus.ABORTED]
    with pytest.raises(argparse.ArgumentTypeError, match="'todo' is not one of failed, aborted"):
        parse("failed,todo")


def test_error_summary_of_a_traceback_is_its_exception_line() -> None:
    error = 'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: 42\n'
    assert error_summary(error) == "KeyError: 42"


def test_error_summary_of_other_text_is_its_first_line_cut_to_width() -> None:
    assert error_summary("Aborted on request.\nTraceback ...\nCancelledError") == (
        "Aborted on request."
    )
    assert error_summary("x" * 100, width=10) == "xxxxxxx..."
    assert error_summary(None) == ""


def test_table_aligns_columns_and_does_not_pad_the_last_one() -> None:
    assert table(("ID", "TASK", "ERROR"), [("1", "send_mail", ""), ("10", "b", "boom")]) == (
        "ID  TASK       ERROR\n1   send_mail\n10  b          boom"
    )


def test_jobs_subcommands_are_registered_on_the_command_line() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["jobs", "prune", "--older-than", "7d", "--status", "failed"])
    assert (args.older_than, args.status) == (7 * DAY, [[JobStatus.FAILED]])
    args = parser.parse_args(["jobs", "list", "--database-url", "postgresql:///x"])
    assert (args.limit, args.offset, args.database_url) == (50, 0, "postgresql:///x")


def test_job_details_show_why_stored_arguments_cannot_be_read() -> None:
    from sqla_jobs.cli.jobs import job_details
    from sqla_jobs.jobs import Job

    readable = job_details(
        Job.from_row({"id": 1, "queue": "q", "task_name": "t", "args": '{"a": "ü"}'}), []
    )
    unreadable = job_details(
        Job.from_row({"id": 2, "queue": "q", "task_name": "t", "args": "[1]"}), []
    )

    assert 'args           {"a": "ü"}' in readable
    assert "args           unreadable: the stored arguments are an array" in unreadable
