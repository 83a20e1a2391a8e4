"""Stalled jobs: a live worker takes over the running jobs of a worker that stopped heartbeating."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    null,
    or_,
    select,
    update,
)

from ..schema import JobStatus, jobs, workers
from ..statuses import RUNNING_STATUSES
from ._build import (
    JOB_COLUMNS,
    render,
    stalled_timeout,
    status_literal,
    step_time,
    this_worker,
    unnest_outcomes,
)

# A worker is alive while its last heartbeat is younger than the stalled timeout. A running job
# whose worker is not alive (its row old, gone, or never named) is stalled. A live worker adopts
# stalled jobs under its own id (rows another sweeper holds are skipped, so each job goes to one
# worker), decides each outcome from the task's retry strategy, then records them; a job it
# adopted but could not record stays running under its id, to be found again if it dies too.
_owner = workers.alias("owner")
_stalled = (
    select(
        jobs.c.id,
        jobs.c.worker_id.label("stalled_worker_id"),
        _owner.c.name.label("stalled_worker_name"),  # NULL: no such worker row
        func.extract("epoch", func.now() - _owner.c.last_heartbeat).label("heartbeat_age"),
    )
    .select_from(jobs.outerjoin(_owner, _owner.c.id == jobs.c.worker_id))
    .where(
        jobs.c.status.in_(RUNNING_STATUSES),
        jobs.c.worker_id.is_distinct_from(this_worker),
        or_(_owner.c.id.is_(None), _owner.c.last_heartbeat < func.now() - stalled_timeout),
    )
    .order_by(jobs.c.id)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True, of=jobs)
    .cte("stalled")
)
adopt_stalled_jobs = render(
    "adopt_stalled_jobs",
    update(jobs)
    .where(jobs.c.id == _stalled.c.id, jobs.c.status.in_(RUNNING_STATUSES))
    .values(worker_id=this_worker)
    .returning(
        *(column for column in JOB_COLUMNS if column is not jobs.c.worker_id),
        _stalled.c.stalled_worker_id,
        _stalled.c.stalled_worker_name,
        _stalled.c.heartbeat_age,
    ),
)

# The outcomes of adopted jobs, written only while this worker still holds them (a sweeper
# that was itself declared stalled meanwhile writes nothing). A job aborted in the meantime
# ends aborted; a finished one keeps the id of the worker that ran it.
_recovered = (
    select(unnest_outcomes(("stalled_worker_id", BigInteger)).render_derived(name="recovered"))
).subquery("recovered_jobs")
# Back to the queue, unless someone asked to abort the job meanwhile: it then ends aborted.
_requeued = and_(
    _recovered.c.status == status_literal(JobStatus.TODO), jobs.c.status != JobStatus.ABORTING
)
finish_recovered_jobs = render(
    "finish_recovered_jobs",
    update(jobs)
    .where(
        jobs.c.id == _recovered.c.id,
        jobs.c.worker_id == this_worker,
        jobs.c.status.in_(RUNNING_STATUSES),
    )
    .values(
        status=case(
            (jobs.c.status == JobStatus.ABORTING, status_literal(JobStatus.ABORTED)),
            else_=_recovered.c.status,
        ),
        last_error=_recovered.c.error,
        scheduled_at=func.coalesce(_recovered.c.retry_at, jobs.c.scheduled_at),
        finished_at=case((_requeued, null()), else_=step_time()),
        worker_id=case((_requeued, null()), else_=_recovered.c.stalled_worker_id),
    )
    .returning(jobs.c.id, jobs.c.status),
)

# Workers past the stalled timeout that hold no running job any more (a batch of their jobs
# may be left for the next sweep).
delete_stalled_workers = render(
    "delete_stalled_workers",
    delete(workers)
    .where(
        workers.c.id != this_worker,
        workers.c.last_heartbeat < func.now() - stalled_timeout,
        ~exists().where(jobs.c.worker_id == workers.c.id, jobs.c.status.in_(RUNNING_STATUSES)),
    )
    .returning(
        workers.c.id,
        workers.c.name,
        workers.c.hostname,
        workers.c.pid,
        func.extract("epoch", func.now() - workers.c.last_heartbeat).label("heartbeat_age"),
    ),
)
