"""``sqla-jobs defer TASK JSON``, fuzzed against real PostgreSQL: every input either becomes a
job whose arguments, task and queue read back exactly as given, or is refused as a usage
error (exit status 2, as argparse reports bad arguments) with one line naming the problem,
writing nothing. Generated JSON of every shape, text that is not JSON, what Python's decoder
takes but JSON is not (NaN, Infinity, 1e400), what PostgreSQL cannot store (NUL, lone
surrogates), nesting too deep, huge numbers, non-object values; hostile task and queue names.

The command's entry function (`sqla_jobs.cli.main`) runs in-process for the generated inputs,
and a handful of them run through a real ``sqla-jobs`` process. The hypothesis profile below
keeps each property fast and its examples the same from run to run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sqla_jobs.cli import main
from sqla_jobs.jobs import MAX_ARGS_DEPTH, MAX_NAME_BYTES

if TYPE_CHECKING:
    from conftest import Database

settings.register_profile(
    "sqla_jobs_cli_fuzz",
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same inputs every run: a CI failure reproduces
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one database for all examples: rows are checked
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
    ],
)
FUZZ = settings.get_profile("sqla_jobs_cli_fuzz")

USAGE_ERROR = 2  # argparse's exit status for bad arguments, which sqla-jobs defer keeps
ERROR_PREFIX = "sqla-jobs defer: error: "

storable_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(storable_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(storable_text, json_values, max_size=5)


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


#: Texts at the edges, each with a word its error must hold (None: it must be accepted).
EDGE_TEXTS: list[tuple[str, str | None]] = [
    ("{}", None),
    ('{"a": NaN}', "NaN"),
    ('{"a": Infinity}', "Infinity"),
    ('{"a": -Infinity}', "Infinity"),
    ('{"a": 1e400}', "too large for a float"),
    ('{"a": -1e400}', "too large for a float"),
    ('{"a": 1e-400}', None),  # 0.0, as any JSON reader takes it
    ('{"big": ' + "9" * 4000 + "}", None),
    ('{"big": ' + "9" * 5000 + "}", "digits"),
    ('{"nul": "\\u0000"}', "NUL"),
    ('{"\\u0000": 1}', "NUL"),
    ('{"a": {"\\u0000": 1}}', "NUL"),
    ('{"lone": "\\ud800"}', "surrogate"),
    ('{"\\udfff": 1}', "surrogate"),
    ('{"pair": "\\ud83d\\udc18"}', None),
    ('{"raw": "\x00"}', "not valid JSON"),  # a control character inside a string
    ('{"a": ' + nested(MAX_ARGS_DEPTH) + "}", None),
    ('{"a": ' + nested(MAX_ARGS_DEPTH + 1) + "}", f"more than {MAX_ARGS_DEPTH} deep"),
    ('{"a": ' + nested(100_000) + "}", "too deep"),
    (nested(100_000), "too deep"),
    ('{"a": "' + "x" * (1024 * 1024) + '"}', "at most 1,048,576"),
    ('{"a": 1, "a": 2}', None),  # the last one wins, as in every JSON reader
    ('{"": 1, "a b": 2, "self": 3, "-": 4}', None),
    ("[1, 2]", "array"),
    ('"text"', "string"),
    ("42", "number"),
    ("true", "boolean"),
    ("null", "null"),
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("{'a': 1}", "not valid JSON"),
    ('{"a": 1,}', "not valid JSON"),
    ('{"a": 1} trailing', "not valid JSON"),
    ("\ud800", "not valid JSON"),
]

#: Task and queue names: (name, word its error must hold, or None: accepted).
EDGE_NAMES: list[tuple[str, str | None]] = [
    ("o'brien", None),
    ("a$$b", None),
    ("x.job", None),
    ("a\\b", None),
    ("new\nline", None),
    ('say "hi"', None),
    ("%(queue)s", None),
    ("Robert'); DROP TABLE sqla_jobs_jobs;--", None),
    (" ", None),
    ("-", None),
    ("-x", None),  # after --, not an option
    ("ünïcødé ✓ 🐘", None),
    ("n" * MAX_NAME_BYTES, None),
    ("€" * 333, None),  # 999 bytes
    ("", "empty"),
    ("n" * (MAX_NAME_BYTES + 1), "1,001 bytes"),
    ("€" * 334, "1,002 bytes"),
    ("a\x00b", "NUL"),
    ("a\ud800", "surrogate"),
]


@pytest.fixture
def defer_cli(
    db_url: str, database: Database, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Outcome]]:
    """Run ``sqla-jobs defer`` in this process; the outcome, and the job it wrote (deleted
    again, so that each call starts from an empty table)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(task: str, text: str | None = None, *options: str) -> Outcome:
        assert database.job_count() == 0
        argv = ["--database-url", db_url, "defer", *options, "--", task]
        try:
            status: Any = main([*argv, text] if text is not None else argv)
        except SystemExit as exc:
            status = exc.code
        finally:
            root.handlers[:] = handlers  # main() logs to the stderr it was given
            root.setLevel(level)
        out, err = capsys.readouterr()
        jobs = database.rows("SELECT task_name, queue, args FROM sqla_jobs_jobs")
        database.rows("DELETE FROM sqla_jobs_jobs RETURNING id")
        return Outcome(status, out, err, jobs)

    yield run


class Outcome:
    def __init__(self, status: int, out: str, err: str, jobs: list[dict[str, Any]]) -> None:
        self.status, self.out, self.err, self.jobs = status, out, err, jobs

    def assert_deferred(self, task: str, queue: str, args: dict[str, Any]) -> None:
        assert self.status == 0, self.err
        assert self.jobs == [{"task_name": task, "queue": queue, "args": args}]
        assert _types(self.jobs[0]["args"]) == _types(args)  # 1.0 stays a float, 1 an int
        assert self.out.strip().isdigit()  # the job's id, alone on stdout

    def assert_refused(self, *words: str) -> None:
        """Exit status 2, nothing written, one line of error after argparse's usage."""
        assert self.status == USAGE_ERROR, (self.status, self.err[-500:])
        assert self.jobs == []
        assert self.out == ""
        lines = self.err.splitlines()
        assert lines[0].startswith("usage: sqla-jobs defer")
        assert all(line.startswith(" ") for line in lines[1:-1]), lines  # the usage, wrapped
        assert lines[-1].startswith(ERROR_PREFIX), lines[-1]
        for word in words:
            assert word in lines[-1], lines[-1][:500]


def expected_args(text: str) -> dict[str, Any] | None:
    """The arguments ``text`` must defer, or None if it must be refused: what a strict JSON
    reader makes of it, when PostgreSQL can store it and it fits the limits."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if type(value) is not dict or not _storable(value, 0):
        return None
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > 1024 * 1024:
        return None
    return value


# -- properties ----------------------------------------------------------------------------------


@given(args=json_objects, ascii_only=st.booleans())
@example(
    args={"big": 3.829620172551429e16, "e": "1e+16", "neg": -0.0, "tiny": 5e-324}, ascii_only=True
)
@FUZZ
def test_any_json_object_is_deferred_and_reads_back_exactly(
    defer_cli: Callable[..., Outcome], args: dict[str, Any], ascii_only: bool
) -> None:
    outcome = defer_cli("tests.fuzz", json.dumps(args, ensure_ascii=ascii_only))

    outcome.assert_deferred("tests.fuzz", "default", args)


any_text = st.one_of(
    st.text(max_size=40),  # mostly not JSON
    st.text(alphabet='{}[]",:0123456789.eE+-\\unlratfsIN ', max_size=40),  # nearly JSON
    json_values.map(json.dumps),  # JSON, mostly not an object
    json_objects.map(lambda args: json.dumps(args).replace("1", "\\u0000", 1)),
    st.builds(
        lambda args, escape: json.dumps(args)[:-1] + f', "x": "\\{escape}"}}' if args else "{}",
        json_objects,
        st.sampled_from(["ud800", "udfff", "u0000", "ud83d\\udc18", "n", "q"]),
    ),
    st.builds(
        lambda depth, leaf: '{"a": ' + nested(depth, leaf) + "}",
        st.integers(min_value=90, max_value=3000),
        st.sampled_from(["1", "NaN", "1e400", "{}", '"\\u0000"']),
    ),
)


@given(text=any_text)
@FUZZ
def test_any_text_is_deferred_exactly_or_refused_as_a_usage_error(
    defer_cli: Callable[..., Outcome], text: str
) -> None:
    outcome = defer_cli("tests.fuzz", text)

    args = expected_args(text)
    if args is None:
        outcome.assert_refused()
    else:
        outcome.assert_deferred("tests.fuzz", "default", args)


@pytest.mark.parametrize(("text", "word"), EDGE_TEXTS, ids=range(len(EDGE_TEXTS)))
def test_edge_json_texts_are_deferred_exactly_or_refused_naming_the_problem(
    defer_cli: Callable[..., Outcome], text: str, word: str | None
) -> None:
    outcome = defer_cli("tests.fuzz", text)

    if word is None:
        args = expected_args(text)
        assert args is not None
        outcome.assert_deferred("tests.fuzz", "default", args)
    else:
        assert expected_args(text) is None
        outcome.assert_refused(word)


@pytest.mark.parametrize(("name", "word"), EDGE_NAMES, ids=range(len(EDGE_NAMES)))
def test_hostile_task_and_queue_names_round_trip_or_are_refused_naming_the_problem(
    defer_cli: Callable[..., Outcome], name: str, word: str | None
) -> None:
    as_task = defer_cli(name, '{"n": 1}')
    as_queue = defer_cli("tests.fuzz", '{"n": 1}', f"--queue={name}")  # -x: an option

    if word is None:
        as_task.assert_deferred(name, "default", {"n": 1})
        as_queue.assert_deferred("tests.fuzz", name, {"n": 1})
    else:
        as_task.assert_refused("task name", word)
        as_queue.assert_refused("queue", word)


@given(
    name=st.text(max_size=40) | st.text(st.characters(codec="utf-8"), min_size=990, max_size=1010)
)
@FUZZ
def test_any_task_name_round_trips_or_is_refused_as_a_usage_error(
    defer_cli: Callable[..., Outcome], name: str
) -> None:
    outcome = defer_cli(name, "{}")

    if name and _storable_text(name) and len(name.encode()) <= MAX_NAME_BYTES:
        outcome.assert_deferred(name, "default", {})
    else:
        outcome.assert_refused("task name")


def test_a_task_name_that_looks_like_an_option_needs_the_separator(
    db_url: str, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--database-url", db_url, "defer", "-x", "{}"])

    assert caught.value.code == USAGE_ERROR
    assert "unrecognized arguments: -x" in capsys.readouterr().err
    assert database.job_count() == 0


# -- a real process ------------------------------------------------------------------------------

#: (task, JSON, expected exit status, a word of the output): through `sqla-jobs` itself, where
#: the shell's argv is bytes in the locale's encoding and a NUL cannot be passed at all.
PROCESS_CASES: list[tuple[str, str, int, str]] = [
    ("o'brien", '{"text": "ü\\n\\"\'", "n": 1.5, "big": ' + "9" * 100 + "}", 0, ""),
    ("a$$b", '{"a": NaN}', 2, "NaN"),
    ("x.job", '{"a": ' + nested(50_000) + "}", 2, "too deep"),
    ("a\\b", '{"nul": "\\u0000"}', 2, "NUL"),
    ("new\nline", '{"lone": "\\ud800"}', 2, "surrogate"),
    ("", "{}", 2, "empty"),
    ("n" * (MAX_NAME_BYTES + 1), "{}", 2, "1,001 bytes"),
    ("tests.fuzz", "[1]", 2, "array"),
    ("tests.fuzz", "{nope}", 2, "not valid JSON"),
]


@pytest.mark.parametrize(("task", "text", "status", "word"), PROCESS_CASES)
def test_the_sqla_jobs_process_defers_exactly_or_refuses_as_a_usage_error(
    db_url: str, database: Database, task: str, text: str, status: int, word: str
) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("SQLA_JOBS_APP", None)
    result = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", "defer", "--", task, text],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == status, result.stderr
    jobs = database.rows("SELECT task_name, args FROM sqla_jobs_jobs")
    if status == 0:
        assert jobs == [{"task_name": task, "args": json.loads(text)}]
        assert result.stdout.strip() == str(database.scalar("SELECT id FROM sqla_jobs_jobs"))
    else:
        assert jobs == []
        assert result.stderr.splitlines()[-1].startswith(ERROR_PREFIX)
        assert word in result.stderr.splitlines()[-1]


# -- helpers -------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _storable_text(text: str) -> bool:
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


def _storable(value: Any, depth: int) -> bool:
    """Whether jsonb stores ``value`` as it is and it nests within the limit."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict | list):
        if depth > MAX_ARGS_DEPTH:  # the arguments' own dict is depth 0
            return False
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return all(
            (not isinstance(key, str) or _storable_text(key)) and _storable(item, depth + 1)
            for key, item in items
        )
    return True


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)
