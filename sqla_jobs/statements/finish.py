"""The outcomes a worker writes for the jobs it ran, in batches, guarded by attempt."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..schema import JobStatus, job_dependencies, jobs
from ..statuses import RUNNING_STATUSES
from ._build import batch_array, render, status_literal, step_time, unnest_outcomes

# A worker writes outcomes only for jobs it still runs, in the attempt it ran: a worker taken
# for dead, whose jobs another worker recovered, cannot overwrite what happened to them since,
# even once it has registered again (under the same id) and claimed the same job anew.
# "Running" is written as neither waiting nor finished, which no index matches: ``status IN
# ('doing', 'aborting')`` matches the partial index of running jobs by worker, which a planner
# short of statistics chose, and which holds an entry for every job the worker ran until
# VACUUM removes it (58,500 entries read for a batch of 100 after 58,500 jobs, 4.7 ms instead
# of 0.8).
_still_running_here = and_(
    jobs.c.status.not_in([status for status in JobStatus if status not in RUNNING_STATUSES]),
    jobs.c.worker_id == bindparam("worker_id", type_=BigInteger),
)


def _ran_batch(name: str) -> Any:
    """The (id, attempt) pairs the worker sends as arrays ``ids`` and ``attempts``."""
    return (
        func.unnest(batch_array("ids", BigInteger), batch_array("attempts", Integer))
        .table_valued("id", "attempt")
        .render_derived(name=name)
    )


def _succeeded(done: Any, **values: Any) -> Any:
    """Record the batch ``done`` as succeeded (with ``values``) and release, in the same
    statement, the blocked jobs of workflows that depend on them (revision 0010).

    Each dependent is updated once per batch, its ``parents_left`` counted down by its parents
    in the batch: a job waiting for 10,000 parents is updated some 100 times, not 10,000. The
    parents are marked ``has_dependents = false`` ("released by the finish"), so that the row
    trigger, which does the same work one parent at a time for every other way a job ends, does
    not fire for them. A job outside workflows (``has_dependents`` NULL) stays NULL, and the
    batch's dependency look-up filters it out before reading any index: the hot path pays a
    CASE and a filter per job."""
    finished = (
        update(jobs)
        .where(jobs.c.id == done.c.id, jobs.c.attempts == done.c.attempt, _still_running_here)
        .values(
            status=JobStatus.SUCCEEDED,
            finished_at=step_time(),
            has_dependents=case((jobs.c.has_dependents, false()), else_=null()),
            **values,
        )
        .returning(jobs.c.id, jobs.c.has_dependents)
        .cte("finished")
    )
    counted = (
        select(job_dependencies.c.job_id, func.count().label("parents"))
        .select_from(finished)
        .join(job_dependencies, job_dependencies.c.parent_id == finished.c.id)
        .where(finished.c.has_dependents.is_(false()))
        .group_by(job_dependencies.c.job_id)
        .cte("counted")
    )
    child: Any = jobs.alias("child")  # an update of an alias: typed for selects only
    return (
        update(child)
        .where(child.c.id == counted.c.job_id, child.c.status == JobStatus.BLOCKED)
        .values(
            parents_left=child.c.parents_left - counted.c.parents,
            status=case(
                (child.c.parents_left <= counted.c.parents, status_literal(JobStatus.TODO)),
                else_=child.c.status,
            ),
        )
    )


# Successes are the common case: two arrays (ids and attempts), one statement.
finish_succeeded = render("finish_succeeded", _succeeded(_ran_batch("done")), prepared=True)
# Successes of which some returned a result (JSON text; NULL for the others): a third array.
# A batch without results is sent as above, so tasks that return None pay nothing for them.
_done_with_results = (
    func.unnest(
        batch_array("ids", BigInteger),
        batch_array("attempts", Integer),
        batch_array("results", Text),
    )
    .table_valued("id", "attempt", "result")
    .render_derived(name="done")
)
finish_succeeded_with_results = render(
    "finish_succeeded_with_results",
    _succeeded(_done_with_results, result=cast(_done_with_results.c.result, JSONB)),
    prepared=True,
)
# Jobs the worker ran and deletes: instead of recording a success, or once it has recorded
# another outcome (delete_jobs="always").
_deleted = _ran_batch("deleted")
delete_jobs_by_id = render(
    "delete_jobs_by_id",
    delete(jobs).where(
        jobs.c.id == _deleted.c.id,
        jobs.c.attempts == _deleted.c.attempt,
        jobs.c.worker_id == bindparam("worker_id", type_=BigInteger),
    ),
    prepared=True,
)


# ``refund``: 1 gives the run's attempt back (a task that snoozed its job), else 0.
_outcomes = (
    select(
        unnest_outcomes(("attempt", Integer), ("refund", Integer)).render_derived(name="outcome")
    )
).subquery("outcomes")
finish_jobs = render(
    "finish_jobs",
    update(jobs)
    # The ids once more, as an array: the jobs are found by their ids, then joined with their
    # outcomes.
    .where(
        jobs.c.id == _outcomes.c.id,
        jobs.c.attempts == _outcomes.c.attempt,
        _still_running_here,
    )
    .values(
        status=_outcomes.c.status,
        last_error=func.coalesce(_outcomes.c.error, jobs.c.last_error),
        # A retry's (or a snooze's) new time; any other outcome keeps the time the job was
        # scheduled for.
        scheduled_at=func.coalesce(_outcomes.c.retry_at, jobs.c.scheduled_at),
        attempts=jobs.c.attempts - _outcomes.c.refund,
        finished_at=literal_column(
            f"CASE WHEN outcomes.status = '{JobStatus.TODO.value}' THEN NULL "
            "ELSE clock_timestamp() END"
        ),
        worker_id=literal_column(
            f"CASE WHEN outcomes.status = '{JobStatus.TODO.value}' THEN NULL "
            f"ELSE {jobs.name}.worker_id END"
        ),
    ),
    prepared=True,
)
