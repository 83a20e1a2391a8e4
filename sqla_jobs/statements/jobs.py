"""Reading and managing jobs: get, count, list, history, cancel, abort, retry, delete, prune."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Interval,
    Text,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from ..schema import JobStatus, history_step, job_status, jobs, workflows
from ..schema import job_history as job_history_table
from ..statuses import RETRYABLE_STATUSES, RUNNING_STATUSES, WAITING_STATUSES
from ._build import JOB_COLUMNS, array_param, render, status_literal, step_time

# -- inspection --------------------------------------------------------------------------------

#: What reading a job by id or listing jobs returns: a job's columns and its unique key.
_JOB_DETAILS = (*JOB_COLUMNS, jobs.c.unique_key)

#: What reading one job returns: its details and its result (as text, decoded by `Job`), which
#: listings leave out (a page of jobs need not carry a megabyte of results each).
_ONE_JOB = (*_JOB_DETAILS, cast(jobs.c.result, Text).label("result"))

get_job = render(
    "get_job",
    select(*_ONE_JOB).where(jobs.c.id == bindparam("job_id", type_=BigInteger)),
)
# ``wait_for`` marks the job it waits for, once it listens: the finish of an awaited job is
# notified (the triggers of revision 0009). A job already finished is not written to; the
# caller then reads it (`get_job`) in a statement of its own, whose snapshot sees a finish
# committed while this one waited for the row.
await_job = render(
    "await_job",
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id", type_=BigInteger),
        jobs.c.status.not_in([status for status in JobStatus if status.is_finished]),
    )
    .values(awaited=True)
    .returning(*_ONE_JOB),
)
_counts = select(jobs.c.queue, jobs.c.status, func.count().label("count")).group_by(
    jobs.c.queue, jobs.c.status
)
count_jobs_by_status = render("count_jobs_by_status", _counts)
# Jobs having every one of ``tags`` (``@>``: the tags' GIN index finds them).
_has_tags = jobs.c.tags.contains(array_param("tags", Text))
count_jobs_by_status_with_tags = render("count_jobs_by_status_with_tags", _counts.where(_has_tags))
check_schema = render("check_schema", select(func.count()).select_from(jobs).where(jobs.c.id == -1))

# -- lifecycle: list, history, cancel, abort, retry, delete, prune -----------------------------


def _unless_null(name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition``, or true when parameter ``name`` is NULL (the filter is not used)."""
    return or_(cast(bindparam(name), Text).is_(None), condition)


_job_id = bindparam("job_id", type_=BigInteger)

# Newest first; each filter applies only when its parameter is not NULL.
_listed = (
    select(*_JOB_DETAILS)
    .where(
        _unless_null("queue", jobs.c.queue == bindparam("queue")),
        _unless_null("task_name", jobs.c.task_name == bindparam("task_name")),
        _unless_null("lock", jobs.c.lock == bindparam("lock")),
        _unless_null(
            "workflow_id", jobs.c.workflow_id == cast(bindparam("workflow_id"), BigInteger)
        ),
        or_(
            cast(bindparam("statuses"), ARRAY(Text)).is_(None),
            jobs.c.status == func.any(cast(array_param("statuses", Text), ARRAY(job_status))),
        ),
    )
    .order_by(jobs.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
    .offset(bindparam("offset", type_=Integer))
)
list_jobs = render("list_jobs", _listed)
# The tags' filter is always there, not "unless NULL": a plan made for any value of the
# parameter (a generic plan) could not use the tags' index.
list_jobs_with_tags = render("list_jobs_with_tags", _listed.where(_has_tags))

job_history = render(
    "job_history",
    select(job_history_table.c.status, job_history_table.c.at, job_history_table.c.error)
    .where(job_history_table.c.job_id == _job_id)
    .order_by(job_history_table.c.at, history_step),
)

# The management statements act on a list of jobs (``job_ids``): one job, or a dashboard's bulk
# action, by the same rule and in one statement (``id = ANY(array)``: a primary-key probe per
# id).
_job_ids = jobs.c.id == func.any(array_param("job_ids", BigInteger))

# Only a job still waiting (todo, or blocked in a workflow) can be cancelled; the row lock
# taken by a claim in progress makes this wait for the claim, and then find the job doing. A
# cancelled job's dependents are cancelled too (the triggers of revision 0010).
cancel_jobs = render(
    "cancel_jobs",
    update(jobs)
    .where(_job_ids, jobs.c.status.in_(WAITING_STATUSES))
    .values(status=JobStatus.CANCELLED, finished_at=step_time())
    .returning(jobs.c.id),
)

# A waiting job is cancelled; a running one is marked aborting, whose trigger tells its worker.
abort_jobs = render(
    "abort_jobs",
    update(jobs)
    .where(_job_ids, jobs.c.status.in_([*WAITING_STATUSES, JobStatus.DOING]))
    .values(
        status=case(
            (jobs.c.status.in_(WAITING_STATUSES), status_literal(JobStatus.CANCELLED)),
            else_=status_literal(JobStatus.ABORTING),
        ),
        finished_at=case((jobs.c.status.in_(WAITING_STATUSES), step_time()), else_=null()),
    )
    .returning(jobs.c.id, jobs.c.status),
)

# Back to the queue with a fresh count of attempts; the history and last error stay.
retry_jobs = render(
    "retry_jobs",
    update(jobs)
    .where(_job_ids, jobs.c.status.in_(RETRYABLE_STATUSES))
    .values(
        status=JobStatus.TODO,
        attempts=0,
        scheduled_at=cast(bindparam("scheduled_at"), DateTime(timezone=True)),
        started_at=null(),
        finished_at=null(),
        worker_id=null(),
    )
    .returning(jobs.c.id),
)

delete_jobs = render(
    "delete_jobs",
    delete(jobs).where(_job_ids, jobs.c.status.not_in(RUNNING_STATUSES)).returning(jobs.c.id),
)

# Which of ``job_ids`` exist: a job an action left alone was in another status, or is gone.
existing_job_ids = render("existing_job_ids", select(jobs.c.id).where(_job_ids).order_by(jobs.c.id))

# One batch of finished jobs older than the cutoff; the caller repeats until a batch comes back
# short. SKIP LOCKED: a job being retried or deleted meanwhile is left alone, never waited for.
_prunable = (
    select(jobs.c.id)
    .where(
        jobs.c.status == func.any(cast(array_param("statuses", Text), ARRAY(job_status))),
        func.coalesce(jobs.c.finished_at, jobs.c.created_at)
        < func.now() - cast(bindparam("older_than"), Interval),
    )
    .limit(bindparam("batch_size", type_=Integer))
    .with_for_update(skip_locked=True)
)
_pruned = (
    delete(jobs)
    .where(jobs.c.id.in_(_prunable))
    .returning(jobs.c.id, jobs.c.workflow_id)
    .cte("pruned")
)
# The workflows whose last jobs this batch deleted go with them (the statement's snapshot still
# sees the pruned jobs: they are left out by id). Jobs outside workflows cost nothing here.
_emptied = (
    delete(workflows)
    .where(
        workflows.c.id.in_(select(_pruned.c.workflow_id).where(_pruned.c.workflow_id.isnot(None))),
        ~exists().where(
            jobs.c.workflow_id == workflows.c.id, jobs.c.id.not_in(select(_pruned.c.id))
        ),
    )
    .returning(workflows.c.id)
    .cte("emptied")
)
prune_jobs = render(
    "prune_jobs", select(func.count().label("count")).select_from(_pruned).add_cte(_emptied)
)
