"""Job statuses, the NOTIFY channel, the queueing-lock index: names the schema and the runtime
share.

Kept apart from ``schema`` so that a worker, which sends pre-rendered SQL (``queries``), runs
without importing SQLAlchemy.
"""

from __future__ import annotations

import enum

#: Channel the triggers notify when jobs are ready; the payload is the job's queue name.
NOTIFY_CHANNEL = "sqla_jobs"

#: Channel a change of the execution controls (pause, limits) is notified on: the workers
#: read the controls again.
CONTROLS_CHANNEL = "sqla_jobs_controls"

#: Channel the finish of a job someone waits for (``wait_for``) is notified on; the payload is
#: the job's id. Only jobs marked ``awaited`` are notified: other finishes send nothing.
FINISHED_CHANNEL = "sqla_jobs_finished"

#: The unique index that lets one job per queueing lock wait: a write it refuses is an
#: `AlreadyEnqueued`.
QUEUEING_LOCK_INDEX = "uq_sqla_jobs_jobs_queueing_lock_todo"

#: The unique index of unique jobs' keys, among the statuses each job chose: a write it refuses
#: is an `AlreadyEnqueued` too.
UNIQUE_KEY_INDEX = "uq_sqla_jobs_jobs_unique_key"

#: The GIN index of the jobs' tags (jobs with tags only).
TAGS_INDEX = "ix_sqla_jobs_jobs_tags"


#: How the error of a run its task snoozed (`sqla_jobs.Snooze`) begins, in ``last_error`` and
#: in the job's history: the history tells a snooze from a retry by it.
SNOOZED = "Snoozed by the task"
#: How the error of a job its task cancelled (`sqla_jobs.CancelJob`) begins: a cancelled job's
#: history shows its error only then (a job cancelled while waiting may hold an older error).
CANCELLED_BY_TASK = "Cancelled by the task"
#: How the error of a job cancelled because a job it depends on (in a workflow) ended without
#: succeeding begins; the rest names that job and how it ended. A failed parent retried by hand
#: puts back to blocked the jobs whose error begins so (revision 0010).
CANCELLED_BY_PARENT = "Cancelled because a job it depends on did not succeed"


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    TODO = "todo"
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABORTING = "aborting"
    ABORTED = "aborted"
    #: In a workflow, waits for the jobs it depends on (revision 0010); never claimed. Last:
    #: PostgreSQL appends a value added to an enum.
    BLOCKED = "blocked"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


#: A worker holds the job: it runs, or runs and was asked to abort. A tuple, in this order: the
#: rendered statements and the index predicates list them so.
RUNNING_STATUSES = (JobStatus.DOING, JobStatus.ABORTING)

#: The statuses a unique job is unique among, at least: waiting or running. A job moves among
#: them (claimed, retried, handed back) with no chance to refuse a clash, so a job that holds
#: its key in one of them must hold it in all.
UNIQUE_REQUIRED_STATUSES = (JobStatus.TODO, JobStatus.DOING, JobStatus.ABORTING)

FINISHED_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED}
)

#: Not started yet: a cancel (``cancel_job``, ``cancel_workflow``) ends these.
WAITING_STATUSES = (JobStatus.TODO, JobStatus.BLOCKED)

#: What ``prune_jobs`` deletes by default: every finished status, in the enum's order.
PRUNABLE_STATUSES = tuple(status for status in JobStatus if status in FINISHED_STATUSES)

#: What ``retry_job`` puts back in the queue: a job that finished without succeeding.
RETRYABLE_STATUSES = tuple(
    status for status in PRUNABLE_STATUSES if status is not JobStatus.SUCCEEDED
)
