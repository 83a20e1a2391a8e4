"""`Outcome`: how a job ended, as the worker sends it to be written."""

from __future__ import annotations

import datetime

from ..statuses import JobStatus


class Outcome:
    """How one job ended (or is to be retried), waiting to be written by `finish_async`.

    ``attempt`` is the job's attempt that ended (its ``attempts`` when claimed): the outcome
    is written only while the job is still in that attempt, under the worker that ran it."""

    __slots__ = ("attempt", "error", "job_id", "result", "retry_at", "snoozed", "status")

    def __init__(
        self,
        job_id: int,
        attempt: int,
        status: JobStatus,
        error: str | None = None,
        retry_at: datetime.datetime | None = None,
        snoozed: bool = False,
        result: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.status = status
        self.error = error
        self.retry_at = retry_at
        #: Back to the queue at the task's request (`Snooze`): the run gives its attempt back.
        self.snoozed = snoozed
        #: What the task returned, as JSON text, for a success whose task stores results;
        #: None when it returned None (nothing is sent for it).
        self.result = result

    @classmethod
    def retry(cls, job_id: int, attempt: int, error: str, delay: float) -> Outcome:
        """The job goes back to the queue, to run again in ``delay`` seconds (at once for 0:
        no timestamp, so that no clock difference with the database can hold it back)."""
        return cls(job_id, attempt, JobStatus.TODO, error, _run_at(delay))

    @classmethod
    def snooze(cls, job_id: int, attempt: int, error: str, delay: float) -> Outcome:
        """The task asked to run again in ``delay`` seconds (`Snooze`): back to the queue,
        and the run's attempt is given back."""
        return cls(job_id, attempt, JobStatus.TODO, error, _run_at(delay), snoozed=True)


def _run_at(delay: float) -> datetime.datetime | None:
    return (
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
        if delay > 0
        else None
    )
