"""Execution controls without a database: a task's ``timeout`` and a `Snooze`'s seconds are
checked where they are written, with an error naming the problem and the fix; a history's
events say what ended a run (snoozed, timed out, cancelled by the task), in the job manager
and in ``sqla-jobs jobs show``; a worker's metrics count snoozes and cancels apart."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import sqla_jobs
from sqla_jobs import JobEvent, JobStatus
from sqla_jobs.cli.jobs import job_details
from sqla_jobs.jobs import Job
from sqla_jobs.metrics import JobCounts, outcome_label

AT = datetime.datetime(2030, 1, 2, 9, 0, tzinfo=datetime.UTC)
TIMED_OUT = (
    "Traceback (most recent call last):\n  ...\n"
    "sqla_jobs.errors.JobTimeout: Job 5 (t) ran past its task's timeout of 2 s; it was cancelled."
)


def _app() -> sqla_jobs.App:
    return sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo="dbname=unused"))


def _function() -> None: ...


BAD_SECONDS: list[tuple[Any, str]] = [
    (-1, "give a number of seconds, more than 0 \\(e.g. 30\\)"),
    (0, "give a number of seconds, more than 0"),
    (0.0, "give a number of seconds, more than 0"),
    (float("nan"), "give a number of seconds, more than 0"),
    ("abc", "give a number of seconds .*, not str 'abc'"),
    ("30", "give a number of seconds .*, not str '30'"),
    (True, "not bool True"),
    ([30], "not list"),
    (float("inf"), "is over a year \\(31,536,000 s\\), the longest allowed"),
    (10**12, "is over a year"),
    (10**400, "is over a year"),
]


@pytest.mark.parametrize(("timeout", "match"), BAD_SECONDS)
def test_a_bad_timeout_is_refused_where_the_task_is_declared_naming_the_fix(
    timeout: Any, match: str
) -> None:
    app = _app()
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match) as refused:
        app.task(name="tests.limited", timeout=timeout)(_function)
    message = str(refused.value)
    assert message.startswith(f"timeout={timeout!r} of task 'tests.limited'")
    assert "leave timeout out (None) for no timeout" in message
    assert app.tasks == {}


@pytest.mark.parametrize("timeout", BAD_SECONDS[:2])
def test_a_blueprint_task_refuses_a_bad_timeout_too(timeout: tuple[Any, str]) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=timeout[1]):
        sqla_jobs.Blueprint().task(name="tests.limited", timeout=timeout[0])(_function)


@pytest.mark.parametrize("timeout", [None, 0.001, 1, 30.5, 365 * 24 * 3600])
def test_a_timeout_is_kept_by_the_task_its_blueprint_copies_and_other_apps(
    timeout: float | None,
) -> None:
    app = _app()
    task = app.task(name="tests.limited", timeout=timeout)(_function)
    blueprint = sqla_jobs.Blueprint()
    blueprint.task(name="limited", timeout=timeout)(_function)
    app.add_tasks_from(blueprint, namespace="ns")

    other = app.with_connector(sqla_jobs.PsycopgConnector(conninfo="dbname=other"))
    assert task.timeout == app.tasks["ns:limited"].timeout == timeout
    assert other.tasks["tests.limited"].timeout == timeout


def test_a_timeout_is_not_an_option_of_one_job() -> None:
    app = _app()
    app.task(name="tests.limited", timeout=5)(_function)
    for name in ("tests.limited", "tests.elsewhere"):
        with pytest.raises(TypeError, match=r"@app.task\(timeout=...\)"):
            app.configure_task(name, timeout=1)


@pytest.mark.parametrize(
    ("seconds", "match"),
    [
        (-5, "Snooze\\(seconds=-5\\): give a number of seconds, 0 or more \\(e.g. 30\\)"),
        ("abc", "Snooze\\(seconds='abc'\\): give a number of seconds .*, not str 'abc'"),
        (float("nan"), "0 or more"),
        (10**9, "Snooze\\(seconds=1000000000\\) is over a year"),
        (float("inf"), "is over a year"),
        (None, "not NoneType None"),
    ],
)
def test_a_bad_snooze_is_refused_naming_the_fix(seconds: Any, match: str) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
        sqla_jobs.Snooze(seconds=seconds)


def test_snooze_and_cancel_describe_themselves_as_the_history_shows_them() -> None:
    assert sqla_jobs.Snooze(0).seconds == 0.0
    assert str(sqla_jobs.Snooze(30)) == "Snoozed by the task for 30 s"
    assert (
        str(sqla_jobs.Snooze(1.5, "rate-limited")) == "Snoozed by the task for 1.5 s: rate-limited"
    )
    assert str(sqla_jobs.CancelJob()) == "Cancelled by the task."
    assert str(sqla_jobs.CancelJob("gone")) == "Cancelled by the task: gone"


def test_job_timeout_is_a_jobs_error_and_a_timeout_error_for_retry_exceptions() -> None:
    assert issubclass(sqla_jobs.JobTimeout, sqla_jobs.JobsError)
    assert issubclass(sqla_jobs.JobTimeout, TimeoutError)
    strategy = sqla_jobs.RetryStrategy(max_attempts=3, retry_exceptions=TimeoutError)
    assert strategy.delay(1, sqla_jobs.JobTimeout("late")) == 0
    for name in ("JobTimeout", "Snooze", "CancelJob"):
        assert name in sqla_jobs.__all__


@pytest.mark.parametrize(
    ("status", "error", "label"),
    [
        (JobStatus.TODO, None, "todo"),
        (JobStatus.TODO, "Traceback ...\nConnectionError: down", "todo"),
        (JobStatus.TODO, "Snoozed by the task for 30 s", "todo (snoozed)"),
        (JobStatus.TODO, TIMED_OUT, "todo (timed out)"),
        (JobStatus.FAILED, TIMED_OUT, "failed (timed out)"),
        (JobStatus.FAILED, "Traceback ...\nValueError: Snoozed by the task", "failed"),
        (JobStatus.CANCELLED, "Cancelled by the task: gone", "cancelled (by the task)"),
        (JobStatus.CANCELLED, None, "cancelled"),
        (JobStatus.ABORTED, "Aborted on request.", "aborted"),
    ],
)
def test_a_history_event_says_what_ended_the_run(
    status: JobStatus, error: str | None, label: str
) -> None:
    assert JobEvent(status, AT, error).label == label


def test_job_details_show_snoozes_timeouts_and_cancels_in_the_history() -> None:
    job = Job.from_row(
        {"id": 5, "queue": "q", "task_name": "t", "args": "{}", "status": "cancelled"}
    )
    history = [
        JobEvent(JobStatus.TODO, AT),
        JobEvent(JobStatus.DOING, AT),
        JobEvent(JobStatus.TODO, AT, "Snoozed by the task for 30 s: rate-limited"),
        JobEvent(JobStatus.DOING, AT),
        JobEvent(JobStatus.TODO, AT, TIMED_OUT),
        JobEvent(JobStatus.DOING, AT),
        JobEvent(JobStatus.CANCELLED, AT, "Cancelled by the task: gone"),
    ]
    shown = job_details(job, history)
    rows = shown.split("history (oldest first):\n")[1].splitlines()
    assert "todo (snoozed)           Snoozed by the task for 30 s: rate-limited" in rows[2]
    assert "todo (timed out)         sqla_jobs.errors.JobTimeout: Job 5 (t) ran past" in rows[4]
    assert "cancelled (by the task)  Cancelled by the task: gone" in rows[6]


def test_worker_metrics_count_snoozes_and_cancels_apart() -> None:
    assert outcome_label(JobStatus.TODO) == "retried"
    assert outcome_label(JobStatus.TODO, snoozed=True) == "snoozed"
    assert outcome_label(JobStatus.CANCELLED) == "cancelled"
    counts = JobCounts()
    job = Job(id=1, queue="q", task_name="t", args={})
    counts.job_ended(job, JobStatus.TODO, 0.1, snoozed=True)
    counts.job_ended(job, JobStatus.TODO, 0.1)
    assert counts.finished == {("q", "t", "snoozed"): 1, ("q", "t", "retried"): 1}
