"""Stalled jobs without a database: what becomes of a job whose worker stopped heartbeating, the
options that set the timeout, and the statements that recover the jobs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sqla_jobs import Job, JobStatus, RetryStrategy, WorkerOptions, queries
from sqla_jobs.cli import build_parser
from sqla_jobs.worker.database import _recovered_params, _stalled_params
from sqla_jobs.worker.recovery import (
    STALLED_ERROR_PREFIX,
    RecoveredJob,
    StalledJob,
    plan_recovery,
)

TIMEOUT = 60.0
BY = "Worker 'rescuer' (id 9)"


def stalled(
    *,
    task: str = "report",
    status: JobStatus = JobStatus.DOING,
    attempts: int = 1,
    last_error: str | None = None,
    worker_id: int | None = 7,
    worker_name: str | None = "lost",
    heartbeat_age: float | None = 75.4,
) -> StalledJob:
    job = Job(
        id=42,
        queue="default",
        task_name=task,
        args={},
        status=status,
        attempts=attempts,
        last_error=last_error,
        worker_id=worker_id,
    )
    return StalledJob(job, worker_id, worker_name, heartbeat_age)


def plan(job: StalledJob, strategies: dict[str, RetryStrategy | None]) -> RecoveredJob:
    return plan_recovery(job, strategies, stalled_timeout=TIMEOUT, recovered_by=BY)


# -- what becomes of a stalled job -------------------------------------------------------------


def test_stalled_job_goes_back_to_the_queue_while_attempts_are_left() -> None:
    result = plan(stalled(attempts=2), {"report": RetryStrategy(max_attempts=3)})
    assert (result.status, result.delay) == (JobStatus.TODO, 0.0)
    assert "its task's retry strategy allows another run, in 0 s." in result.error


def test_the_lost_run_counts_as_an_attempt_so_the_last_one_fails() -> None:
    result = plan(stalled(attempts=3), {"report": RetryStrategy(max_attempts=3)})
    assert (result.status, result.delay) == (JobStatus.FAILED, None)
    assert "no retry is left after 3 attempts (max_attempts=3), so the job fails" in result.error
    assert "sqla-jobs jobs retry 42" in result.error


def test_stalled_job_waits_as_its_strategy_says() -> None:
    strategy = RetryStrategy(max_attempts=None, wait=5, linear_wait=10)
    result = plan(stalled(attempts=2), {"report": strategy})
    assert (result.status, result.delay) == (JobStatus.TODO, 25.0)


def test_retry_exceptions_do_not_stop_a_stalled_job_from_retrying() -> None:
    """The job raised nothing: only the attempts and the waits of the strategy apply."""
    strategy = RetryStrategy(max_attempts=2, retry_exceptions=(ConnectionError,))
    assert plan(stalled(attempts=1), {"report": strategy}).status is JobStatus.TODO


def test_stalled_job_of_a_task_without_retry_fails() -> None:
    result = plan(stalled(), {"report": None})
    assert result.status is JobStatus.FAILED
    assert "its task has no retry strategy, so the job fails" in result.error


def test_stalled_job_being_aborted_ends_aborted_whatever_its_strategy() -> None:
    result = plan(stalled(status=JobStatus.ABORTING), {"report": RetryStrategy(max_attempts=9)})
    assert result.status is JobStatus.ABORTED
    assert "it was being aborted, so it is recorded aborted." in result.error


def test_strategy_that_raises_fails_the_stalled_job_rather_than_lose_it() -> None:
    class Broken(RetryStrategy):
        def delay(self, attempts: int, exception: BaseException) -> float | None:
            raise RuntimeError("bug in a custom strategy")

    result = plan(stalled(), {"report": Broken(max_attempts=5)})
    assert result.status is JobStatus.FAILED


def test_stalled_job_of_an_unknown_task_goes_back_once() -> None:
    result = plan(stalled(task="elsewhere"), {"report": None})
    assert (result.status, result.delay) == (JobStatus.TODO, 0.0)
    assert "does not know task 'elsewhere' nor its retry strategy" in result.error
    assert "goes back to the queue once" in result.error


def test_stalled_job_of_an_unknown_task_that_stalled_before_fails() -> None:
    previous = plan(stalled(task="elsewhere"), {}).error
    result = plan(stalled(task="elsewhere", attempts=2, last_error=previous), {})
    assert result.status is JobStatus.FAILED
    assert "previous run stalled too, so it fails rather than loop" in result.error


def test_unknown_task_whose_previous_run_raised_goes_back_again() -> None:
    result = plan(stalled(task="elsewhere", last_error="Traceback ...\nValueError: x"), {})
    assert result.status is JobStatus.TODO


def test_error_names_the_dead_worker_its_silence_the_timeout_and_the_rescuer() -> None:
    error = plan(stalled(attempts=2), {"report": RetryStrategy(max_attempts=3)}).error
    assert error.startswith(STALLED_ERROR_PREFIX)
    assert (
        "worker 'lost' (id 7) stopped heartbeating (last heartbeat 75 s ago, over the stalled "
        "timeout of 60 s) while it ran attempt 2 of this job" in error
    )
    assert "Worker 'rescuer' (id 9) recovered the job" in error


@pytest.mark.parametrize(
    ("worker_id", "worker_name", "says"),
    [
        (7, None, "its worker (id 7) is no longer registered"),
        (None, None, "no worker is recorded for this running job"),
    ],
)
def test_error_says_when_the_worker_row_is_missing(
    worker_id: int | None, worker_name: str | None, says: str
) -> None:
    job = stalled(worker_id=worker_id, worker_name=worker_name, heartbeat_age=None)
    assert says in plan(job, {"report": None}).error


# -- options -----------------------------------------------------------------------------------


def test_default_stalled_timeout_is_six_heartbeats() -> None:
    options = WorkerOptions()
    assert options.stalled_timeout == 60.0 == 6 * options.heartbeat_interval


@pytest.mark.parametrize("stalled_timeout", [10.0, 5.0])
def test_stalled_timeout_must_exceed_the_heartbeat_interval(stalled_timeout: float) -> None:
    with pytest.raises(ValueError, match="must exceed heartbeat_interval") as error:
        WorkerOptions(heartbeat_interval=10, stalled_timeout=stalled_timeout)
    assert "e.g. stalled_timeout=60" in str(error.value)


def test_fast_heartbeat_and_short_stalled_timeout_are_accepted() -> None:
    options = WorkerOptions(heartbeat_interval=0.1, stalled_timeout=0.5)
    assert (options.heartbeat_interval, options.stalled_timeout) == (0.1, 0.5)


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_heartbeat_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="heartbeat_interval must be more than 0 seconds"):
        WorkerOptions(heartbeat_interval=interval)


def test_cli_worker_takes_the_heartbeat_and_stalled_timeout_in_seconds() -> None:
    args = build_parser().parse_args(
        ["worker", "--heartbeat-interval", "0.5", "--stalled-timeout", "3"]
    )
    assert (args.heartbeat_interval, args.stalled_timeout) == (0.5, 3.0)
    defaults = build_parser().parse_args(["worker"])
    assert (defaults.heartbeat_interval, defaults.stalled_timeout) == (None, None)


@pytest.mark.parametrize("value", ["0", "-2", "soon"])
def test_cli_refuses_a_stalled_timeout_that_is_not_a_positive_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--stalled-timeout", value])
    assert "--stalled-timeout" in capsys.readouterr().err


# -- statements --------------------------------------------------------------------------------


def placeholders(query: queries.Query) -> set[str]:
    return set(re.findall(r"%\((\w+)\)s", query.sql))


def one_line(sql: str) -> str:
    return " ".join(sql.split())


def test_stalled_queries_are_listed_with_the_others() -> None:
    for query in (
        queries.adopt_stalled_jobs,
        queries.finish_recovered_jobs,
        queries.delete_stalled_workers,
        queries.aborting_jobs_of_worker,
        queries.reregister_worker,
    ):
        assert query in queries.ALL


def test_adopting_stalled_jobs_skips_rows_another_sweeper_holds() -> None:
    sql = one_line(queries.adopt_stalled_jobs.sql)
    assert "FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED" in sql
    assert "sqla_jobs_jobs.status IN ('doing', 'aborting')" in sql
    assert "owner.id IS NULL OR owner.last_heartbeat < now() - CAST(%(stalled_timeout)s" in sql
    params: dict[str, Any] = {**_stalled_params(9, TIMEOUT), "limit": 100}
    assert placeholders(queries.adopt_stalled_jobs) == set(params)


def test_recovered_outcomes_are_written_only_while_the_sweeper_holds_the_job() -> None:
    sql = one_line(queries.finish_recovered_jobs.sql)
    assert "sqla_jobs_jobs.worker_id = %(worker_id)s" in sql
    job = plan(stalled(), {"report": RetryStrategy(max_attempts=2)})
    assert placeholders(queries.finish_recovered_jobs) == set(_recovered_params(9, [job]))


def test_only_stalled_workers_without_running_jobs_are_deleted() -> None:
    sql = one_line(queries.delete_stalled_workers.sql)
    assert "sqla_jobs_workers.id != %(worker_id)s" in sql
    assert "NOT (EXISTS (SELECT" in sql
    assert placeholders(queries.delete_stalled_workers) == set(_stalled_params(9, TIMEOUT))


def test_stalled_timeout_must_be_positive_for_the_manager() -> None:
    with pytest.raises(ValueError, match="stalled_timeout must be more than 0 seconds"):
        _stalled_params(9, 0)
