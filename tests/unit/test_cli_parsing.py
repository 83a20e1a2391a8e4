"""How the `sqla-jobs` command line reads its arguments: no database, no subprocess."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys

import pytest

from sqla_jobs import cli, logs
from sqla_jobs.cli import common as cli_common
from sqla_jobs.cli import defer as cli_defer
from sqla_jobs.cli import worker as cli_worker


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def parse_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The message argparse exits with (status 2) for ``argv``."""
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


# -- queues ------------------------------------------------------------------------------------


def test_queues_from_commas_and_repeats_keep_order_without_duplicates() -> None:
    assert cli_worker.parse_queues(["b,a", "c", " a , d "]) == ["b", "a", "c", "d"]


def test_no_queue_option_means_every_queue() -> None:
    assert cli_worker.parse_queues(None) is None
    assert cli_worker.parse_queues([]) is None


def test_empty_queue_name_is_refused_with_an_example() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"empty queue name in 'a,,b'.*--queues"):
        cli_worker.parse_queues(["a,,b"])


def test_worker_queue_flags_accumulate() -> None:
    args = parse("worker", "--queues", "a,b", "-q", "c", "--queue", "a")
    assert cli_worker.parse_queues(args.queues) == ["a", "b", "c"]


# -- worker options ----------------------------------------------------------------------------


def test_worker_options_are_parsed_to_worker_option_values() -> None:
    args = parse(
        "worker",
        "--concurrency=3",
        "--name=w1",
        "--no-wait",
        "--no-listen-notify",
        "--polling-interval=0.5",
        "--delete-jobs=successful",
        "--shutdown-timeout=none",
        "--fetch-batch=20",
        "--database-timeout=5",
        "--retry-max-delay=2",
    )
    assert (args.concurrency, args.name, args.wait, args.listen_notify) == (3, "w1", False, False)
    assert (args.polling_interval, args.delete_jobs) == (0.5, "successful")
    assert args.shutdown_timeout is None
    assert args.fetch_batch == 20
    assert (args.database_timeout, args.retry_max_delay) == (5.0, 2.0)


def test_worker_options_left_out_are_not_set() -> None:
    args = parse("worker")
    assert args.concurrency is None
    assert args.wait is None
    assert args.shutdown_timeout is cli_worker._UNSET


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--concurrency=0", "must be at least 1"),
        ("--concurrency=many", "not a whole number"),
        ("--polling-interval=0", "more than 0 seconds"),
        ("--retry-max-delay=0", "more than 0 seconds"),
        ("--shutdown-timeout=-1", "zero or more seconds"),
        ("--delete-jobs=sometimes", "invalid choice"),
    ],
)
def test_bad_worker_option_values_are_refused(
    capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    assert message in parse_error(capsys, "worker", option)


# -- defer -------------------------------------------------------------------------------------


def test_defer_arguments_default_to_an_empty_object() -> None:
    args = parse("defer", "app.send")
    assert (args.task, args.arguments) == ("app.send", {})


def test_defer_arguments_are_a_json_object() -> None:
    args = parse("defer", "app.send", '{"user_id": 42, "tags": ["a"]}')
    assert args.arguments == {"user_id": 42, "tags": ["a"]}


def test_invalid_json_names_the_problem_and_gives_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = parse_error(capsys, "defer", "app.send", "{user_id: 42}")
    assert "argument JSON: '{user_id: 42}' is not valid JSON" in message
    assert "Expecting property name enclosed in double quotes at column 2" in message
    assert '\'{"user_id": 42, "notify": true}\'' in message


@pytest.mark.parametrize(
    ("text", "kind"), [("[1, 2]", "array"), ('"x"', "string"), ("3", "number"), ("null", "null")]
)
def test_json_that_is_not_an_object_is_refused(text: str, kind: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"is a JSON {kind}, not an object"):
        cli_defer.json_arguments(text)


def test_schedule_at_needs_a_time_zone(capsys: pytest.CaptureFixture[str]) -> None:
    message = parse_error(capsys, "defer", "t", "--schedule-at", "2030-01-01T10:00:00")
    assert "has no time zone" in message
    args = parse("defer", "t", "--schedule-at", "2030-01-01T10:00:00Z")
    assert args.schedule_at == datetime.datetime(2030, 1, 1, 10, tzinfo=datetime.UTC)


def test_schedule_at_and_schedule_in_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = parse_error(
        capsys, "defer", "t", "--schedule-in=5", "--schedule-at=2030-01-01T00:00:00Z"
    )
    assert "not allowed with argument" in message


# -- global options ----------------------------------------------------------------------------


def test_global_options_are_accepted_before_and_after_the_command() -> None:
    before = parse("--app", "m:app", "--log-format", "json", "-v", "worker")
    after = parse("worker", "--app", "m:app", "--log-format", "json", "-v")
    for args in (before, after):
        assert (args.app, args.log_format) == ("m:app", "json")
        assert args.verbose + getattr(args, "verbose_after", 0) == 1


def test_verbose_counts_on_both_sides_of_the_command() -> None:
    args = parse("-v", "schema", "current", "-vv")
    assert args.verbose + args.verbose_after == 3


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required" in parse_error(capsys)


def test_bare_schema_downgrade_is_refused_before_touching_a_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--database-url", "postgresql://nobody@127.0.0.1:1/x", "schema", "downgrade"])
    assert exited.value.code == 2
    assert "sqla-jobs schema downgrade base" in capsys.readouterr().err


def test_sqlalchemy_urls_are_read_as_libpq_urls() -> None:
    assert cli_common.libpq_url("postgresql+psycopg2://u@h/db") == "postgresql://u@h/db"
    assert cli_common.libpq_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert cli_common.libpq_url("host=h dbname=db") == "host=h dbname=db"


# -- --app -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("surely_no_such_module:app", "no module named 'surely_no_such_module'"),
        ("sqla_jobs:no_such_attribute", "has no attribute 'no_such_attribute'"),
        ("sqla_jobs:JobStatus", "is of type EnumType, not a sqla_jobs.App"),
        ("sqla_jobs.cli.common:libpq_url", "calling libpq_url() raised TypeError"),
        (":app", "names no module"),
    ],
)
def test_bad_app_specs_name_the_fix(spec: str, message: str) -> None:
    with pytest.raises(cli_common.CliError) as raised:
        cli_common.load_app(spec)
    assert message in str(raised.value)


# -- logging -----------------------------------------------------------------------------------


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "sqla_jobs.worker", logging.ERROR, __file__, 1, "Job %d failed", (7,), None
    )
    made.__dict__.update(extra)
    return made


def test_json_log_lines_carry_the_extra_fields() -> None:
    line = logs.JsonFormatter().format(record(job_id=7, task="send", queue="mail"))
    entry = json.loads(line)
    assert entry["logger"] == "sqla_jobs.worker"
    assert entry["level"] == "ERROR"
    assert entry["message"] == "Job 7 failed"
    assert (entry["job_id"], entry["task"], entry["queue"]) == (7, "send", "mail")


def test_json_log_lines_include_the_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        with_exception = record()
        with_exception.exc_info = sys.exc_info()
    entry = json.loads(logs.JsonFormatter().format(with_exception))
    assert "ValueError: bad" in entry["exception"]


def test_text_log_lines_show_the_extra_fields() -> None:
    line = logs.TextFormatter().format(record(job_id=7, task="send"))
    assert line.endswith("ERROR sqla_jobs.worker: Job 7 failed [job_id=7 task=send]")


def test_worker_prefetch_option_reaches_the_worker_options() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["worker", "--prefetch", "0"]).prefetch == 0
    assert parser.parse_args(["worker", "--prefetch", "50"]).prefetch == 50
    assert parser.parse_args(["worker"]).prefetch is None
