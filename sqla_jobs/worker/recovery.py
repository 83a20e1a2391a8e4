"""What becomes of a stalled job: the policy a live worker applies to the running jobs of a
worker that stopped heartbeating (`plan_recovery`); pure, no database."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from ..jobs import Job
from ..retry import RetryStrategy
from ..statuses import JobStatus

logger = logging.getLogger("sqla_jobs.worker")

#: Opens the ``last_error`` of every job recovered from a stalled worker.
STALLED_ERROR_PREFIX = "Recovered from a stalled worker: "


class WorkerStalled(Exception):
    """What a stalled job's retry strategy is asked about: the job raised nothing, the worker
    running it stopped heartbeating."""


@dataclasses.dataclass(frozen=True, slots=True)
class StalledJob:
    """A running job whose worker stopped heartbeating, as a live worker adopted it."""

    job: Job
    #: The worker it was running on; None when no worker was recorded.
    worker_id: int | None
    #: That worker's name; None when its row is gone from the workers table.
    worker_name: str | None = None
    #: Seconds since that worker's last heartbeat; None when its row is gone.
    heartbeat_age: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StalledJob:
        age = row["heartbeat_age"]
        return cls(
            Job.from_row(row),
            row["stalled_worker_id"],
            row["stalled_worker_name"],
            None if age is None else float(age),
        )

    def describe_worker(self, stalled_timeout: float) -> str:
        """Why the job counts as stalled, naming its worker."""
        if self.worker_id is None:
            return "no worker is recorded for this running job"
        if self.worker_name is None:
            return f"its worker (id {self.worker_id}) is no longer registered"
        age = "" if self.heartbeat_age is None else f"{self.heartbeat_age:.0f} s ago, "
        return (
            f"worker {self.worker_name!r} (id {self.worker_id}) stopped heartbeating (last "
            f"heartbeat {age}over the stalled timeout of {stalled_timeout:g} s)"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RecoveredJob:
    """A stalled job and what becomes of it: ``todo`` again (to run in ``delay`` seconds),
    ``failed`` or ``aborted``, with ``error`` as its new ``last_error``."""

    stalled: StalledJob
    status: JobStatus
    error: str
    delay: float | None = None

    @property
    def job(self) -> Job:
        return self.stalled.job


def plan_recovery(
    stalled: StalledJob,
    strategies: Mapping[str, RetryStrategy | None],
    *,
    stalled_timeout: float,
    recovered_by: str,
) -> RecoveredJob:
    """What becomes of a stalled job, given the retry strategies of the tasks this worker
    knows (``strategies``: task name → strategy, None for a task that never retries).

    - ``aborting`` → ``aborted``: it was asked to stop, and it has.
    - A known task: its retry strategy decides, as if the lost run had raised. That run counts
      as an attempt (the claim counted it), so ``max_attempts`` and the waits apply as for a
      raised error; ``retry_exceptions`` does not (the job raised nothing).
    - A task this worker does not know (nor its strategy): back to ``todo`` once, at once, for
      a worker that knows it; ``failed`` if its previous run stalled too, so that a job that
      kills its worker does not loop for ever.
    """
    job = stalled.job
    head = (
        f"{STALLED_ERROR_PREFIX}{stalled.describe_worker(stalled_timeout)} while it ran "
        f"attempt {job.attempts} of this job; the process was presumably killed or lost. "
        f"{recovered_by} recovered the job: "
    )
    if job.status is JobStatus.ABORTING:
        return RecoveredJob(
            stalled, JobStatus.ABORTED, head + "it was being aborted, so it is recorded aborted."
        )
    by_hand = f"Retry it by hand (`sqla-jobs jobs retry {job.id}`) if it should run again."
    if job.task_name not in strategies:
        unknown = f"this worker does not know task {job.task_name!r} nor its retry strategy"
        if job.last_error is not None and job.last_error.startswith(STALLED_ERROR_PREFIX):
            return RecoveredJob(
                stalled,
                JobStatus.FAILED,
                f"{head}{unknown}, and the job's previous run stalled too, so it fails rather "
                f"than loop. {by_hand}",
            )
        return RecoveredJob(
            stalled,
            JobStatus.TODO,
            f"{head}{unknown}, so the job goes back to the queue once, for a worker that "
            "knows the task.",
            0.0,
        )
    strategy = strategies[job.task_name]
    if strategy is None:
        return RecoveredJob(
            stalled,
            JobStatus.FAILED,
            f"{head}its task has no retry strategy, so the job fails. {by_hand}",
        )
    delay = _stalled_retry_delay(strategy, job.attempts, job.task_name)
    if delay is None:
        return RecoveredJob(
            stalled,
            JobStatus.FAILED,
            f"{head}no retry is left after {job.attempts} attempts (max_attempts="
            f"{strategy.max_attempts}), so the job fails. {by_hand}",
        )
    return RecoveredJob(
        stalled,
        JobStatus.TODO,
        f"{head}its task's retry strategy allows another run, in {delay:g} s.",
        delay,
    )


def _stalled_retry_delay(strategy: RetryStrategy, attempts: int, task_name: str) -> float | None:
    try:
        unfiltered = dataclasses.replace(strategy, retry_exceptions=None)
        return unfiltered.delay(attempts, WorkerStalled(f"{task_name}: worker stalled"))
    except Exception:
        logger.exception("Retry strategy of task %r raised; the stalled job fails", task_name)
        return None


def requeue_refused(plan: RecoveredJob) -> RecoveredJob:
    return dataclasses.replace(
        plan,
        status=JobStatus.FAILED,
        delay=None,
        error=f"{plan.error} It could not go back to the queue: another job with queueing_lock "
        f"{plan.job.queueing_lock!r} is already waiting, so it fails instead.",
    )
