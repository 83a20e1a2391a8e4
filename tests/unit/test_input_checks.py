"""Bad input at defer time, without a database: every job option and argument that PostgreSQL
could not store, or that would not read back as written, gets its own error naming the option
or argument and the fix. Property-based (hypothesis) where the space is large; the database
side of the same promises is tests/integration/test_bad_input.py."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sqla_jobs
from sqla_jobs.jobs import (
    MAX_ARGS_DEPTH,
    MAX_NAME_BYTES,
    JobSpec,
    check_options,
    dump_args,
)

# JSON values that read back from jsonb equal to what was written: finite floats, ints within
# what PostgreSQL's numeric and Python's json module exchange, text PostgreSQL can store.
json_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@given(st.dictionaries(json_text, json_values, max_size=5))
@example({"\\u0000": "a backslash, then u0000: not a NUL", "f": 1e16, "e+": "1e+16"})
@settings(max_examples=300)
def test_any_json_arguments_are_written_as_json_that_reads_back_the_same(
    args: dict[str, Any],
) -> None:
    assert json.loads(dump_args("t", args)) == args


@given(st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1))
@example({"a": "\x00"})
@example({"a": "\ud800"})
@example({"\udfff": 1})
def test_text_postgresql_cannot_store_is_refused_and_the_rest_is_accepted(
    args: dict[str, str],
) -> None:
    storable = all(
        "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)
        for pair in args.items()
        for text in pair
    )
    if storable:
        assert json.loads(dump_args("t", args)) == args
    else:
        with pytest.raises(sqla_jobs.InvalidJobArguments, match="'t'"):
            dump_args("t", args)


@given(
    st.one_of(
        st.builds(object),
        st.sets(st.integers(), min_size=1),
        st.binary(min_size=1),
        st.just(math.nan),
        st.just(math.inf),
        st.complex_numbers(),
        st.datetimes(),
        st.dictionaries(st.integers(), st.integers(), min_size=1),
    )
)
def test_a_value_json_cannot_hold_as_it_is_is_refused_naming_the_argument(value: Any) -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="Argument 'bad' of task 't'"):
        dump_args("t", {"good": 1, "bad": value})


@pytest.mark.parametrize("depth", [MAX_ARGS_DEPTH + 1, 2_000, 100_000])
def test_arguments_nested_too_deep_are_refused_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match=f"more than {MAX_ARGS_DEPTH} deep"):
        dump_args("t", {"tree": nested(depth)})


def test_arguments_nested_as_deep_as_allowed_are_accepted() -> None:
    assert json.loads(dump_args("t", {"tree": nested(MAX_ARGS_DEPTH)})) == {
        "tree": nested(MAX_ARGS_DEPTH)
    }


def test_a_nested_key_that_is_not_a_string_is_refused_rather_than_turned_into_one() -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"key 1.*string keys"):
        dump_args("t", {"counts": {"a": {1: "x"}}})


def test_arguments_over_the_size_limit_are_refused_with_the_limit_and_the_fix() -> None:
    args = {"blob": "x" * 100}
    assert dump_args("t", args, max_bytes=200)
    with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"take 111 bytes.*at most 50"):
        dump_args("t", args, max_bytes=50)
    # Measured in UTF-8 bytes, as PostgreSQL stores it: 40 euro signs are 120 bytes.
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="take 128 bytes"):
        dump_args("t", {"s": "€" * 40}, max_bytes=100)


def test_arguments_that_are_not_a_dict_are_refused() -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="must be a dict"):
        dump_args("t", [1, 2])  # type: ignore[arg-type]


# -- options -----------------------------------------------------------------------------------


def spec(**options: Any) -> JobSpec:
    return JobSpec(task_name=options.pop("task_name", "mail.send"), args={}, **options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"queue": 7}, r"queue of a job of task 'mail\.send' must be a string, not int 7"),
        ({"queue": ""}, "queue of a job of task 'mail.send' must not be empty"),
        ({"queue": "a\x00b"}, "NUL character"),
        ({"queue": "q\ud800"}, "lone surrogate"),
        ({"queue": "q" * (MAX_NAME_BYTES + 1)}, f"1,001 bytes long in UTF-8; at most {1000:,}"),
        ({"queue": "€" * 334}, "1,002 bytes long"),
        ({"lock": b"user-1"}, "lock .* must be a string, not bytes"),
        ({"queueing_lock": "x\x00"}, "queueing_lock .*NUL"),
        ({"task_name": ""}, "task name must not be empty"),
        ({"task_name": None}, "task name must be a string, not NoneType"),
        ({"priority": "high"}, "priority .* must be an int, not str 'high'"),
        ({"priority": 1.5}, "must be an int, not float"),
        ({"priority": True}, "must be an int, not bool"),
        ({"priority": 2**31}, "out of range: use -2147483648 to 2147483647"),
        ({"priority": -(2**31) - 1}, "out of range"),
        ({"scheduled_at": datetime.datetime(2030, 1, 1)}, "aware datetime"),
        ({"scheduled_at": "tomorrow"}, "aware datetime"),
    ],
)
def test_a_bad_job_option_gets_an_error_naming_it(options: dict[str, Any], match: str) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
        check_options(spec(**options))


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=250))
def test_any_storable_name_is_accepted_as_every_option(name: str) -> None:
    check_options(spec(task_name=name, queue=name, lock=name, queueing_lock=name))


@pytest.mark.parametrize(
    "name",
    [
        "o'brien",
        "a$$b",
        "x.job",
        "a\\b",
        "line\nbreak",
        'quo"te',
        "Robert'); DROP TABLE x;--",
        "ü" * 500,
        "n" * MAX_NAME_BYTES,
    ],
)
def test_hostile_names_are_accepted(name: str) -> None:
    check_options(spec(task_name=name, queue=name, lock=name, queueing_lock=name))


def test_invalid_job_options_is_a_value_error_and_a_jobs_error() -> None:
    assert issubclass(sqla_jobs.InvalidJobOptions, ValueError)
    assert issubclass(sqla_jobs.InvalidJobOptions, sqla_jobs.JobsError)
