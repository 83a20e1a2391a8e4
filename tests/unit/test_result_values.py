"""Job results as pure logic: what a task's return value is stored as (or why it cannot be),
what `get_result` gives for each status, and the bounds of `wait_for`."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest

import sqla_jobs
from sqla_jobs.jobs import MAX_RESULT_BYTES, Job, dump_result
from sqla_jobs.results import POLL_FIRST, POLL_MAX, backoff, check_timeout, result_of
from sqla_jobs.statuses import JobStatus


class Invoice:
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"total": 12.5, "lines": [1, 2, {"sku": "ünï"}]},
        [1, "two", None, True],
        "text",
        42,
        0,
        False,
        3.829620172551429e16,
        {"big": 1e300},
    ],
)
def test_a_json_result_dumps_to_text_that_reads_back_as_it_was(value: Any) -> None:
    text = dump_result(1, "tests.task", value)

    assert json.loads(text) == value
    row = {"id": 1, "queue": "q", "task_name": "t", "args": "{}", "result": text}
    assert Job.from_row(row).result == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (Invoice(), "TypeError"),
        ({"at": datetime.datetime(2030, 1, 1)}, "TypeError"),
        (math.nan, "ValueError"),
        ({1: "a"}, "key 1"),
        ("nul\x00inside", "NUL"),
        ("\udcff", "surrogate"),
    ],
)
def test_a_result_that_is_not_json_is_refused_naming_the_job_the_problem_and_the_fix(
    value: Any, problem: str
) -> None:
    with pytest.raises(sqla_jobs.InvalidJobResult) as raised:
        dump_result(7, "tests.task", value)

    message = str(raised.value)
    assert "Job 7 (tests.task)" in message
    assert problem in message
    assert "store_result=False" in message
    assert isinstance(raised.value, sqla_jobs.JobsError)


def test_a_result_nested_too_deep_is_refused() -> None:
    value: Any = []
    for _ in range(150):
        value = [value]

    with pytest.raises(sqla_jobs.InvalidJobResult, match="nests"):
        dump_result(1, "tests.task", value)


def test_a_result_over_the_limit_is_refused_with_its_size() -> None:
    big = "x" * MAX_RESULT_BYTES

    with pytest.raises(sqla_jobs.InvalidJobResult, match=r"returned 1,048,578 bytes"):
        dump_result(1, "tests.task", big)
    assert dump_result(1, "tests.task", "x" * (MAX_RESULT_BYTES - 2))


def job(status: JobStatus, **fields: Any) -> Job:
    return Job(id=5, queue="default", task_name="tests.task", args={}, status=status, **fields)


def test_the_result_of_a_succeeded_job_is_what_it_returned_or_none() -> None:
    assert result_of(job(JobStatus.SUCCEEDED, result={"a": 1}), True) == {"a": 1}
    assert result_of(job(JobStatus.SUCCEEDED), True) is None
    assert result_of(job(JobStatus.SUCCEEDED), None) is None


def test_a_task_that_does_not_store_results_says_so() -> None:
    with pytest.raises(sqla_jobs.ResultUnavailable, match="store_result=False"):
        result_of(job(JobStatus.SUCCEEDED), False)


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (JobStatus.TODO, "has not finished yet .status todo"),
        (JobStatus.DOING, "has not finished yet .status doing"),
        (JobStatus.ABORTING, "has not finished yet .status aborting"),
        (JobStatus.FAILED, "failed: ValueError: boom"),
        (JobStatus.CANCELLED, "was cancelled"),
        (JobStatus.ABORTED, "was aborted"),
    ],
)
def test_a_job_without_a_result_says_why(status: JobStatus, why: str) -> None:
    waiting = job(status, last_error="Traceback ...\nValueError: boom\n")

    with pytest.raises(sqla_jobs.ResultUnavailable, match=why) as raised:
        result_of(waiting, True)
    assert raised.value.job is waiting
    assert raised.value.job_id == 5


def test_wait_timeouts_are_bounded_numbers() -> None:
    assert check_timeout(0) == 0.0
    assert check_timeout(2.5) == 2.5
    for bad in (None, "5", True):
        with pytest.raises(TypeError, match="timeout must be a number"):
            check_timeout(bad)
    for bad_value in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="0 or more"):
            check_timeout(bad_value)


def test_polling_backs_off_from_10_ms_doubling_to_half_a_second() -> None:
    delays = [POLL_FIRST]
    for _ in range(8):
        delays.append(backoff(delays[-1]))

    assert delays[:6] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    assert delays[6:] == [POLL_MAX] * 3 == [0.5] * 3


def test_wait_timeout_is_a_timeout_error_and_a_jobs_error() -> None:
    assert issubclass(sqla_jobs.WaitTimeout, TimeoutError)
    assert issubclass(sqla_jobs.WaitTimeout, sqla_jobs.JobsError)
