"""Workers' own rows (register, heartbeat, unregister) and what a worker gives back when it
stops."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Integer,
    Interval,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from ..schema import JobStatus, job_status, jobs, workers
from ..statuses import RUNNING_STATUSES
from ._build import array_param, render, step_time, this_worker

register_worker = render(
    "register_worker",
    insert(workers)
    .values(
        name=bindparam("name"),
        hostname=bindparam("hostname"),
        pid=bindparam("pid"),
        queues=array_param("queues", Text),
        concurrency=bindparam("concurrency"),
    )
    .returning(workers.c.id),
)
heartbeat = render(
    "heartbeat",
    update(workers)
    .where(workers.c.id == bindparam("worker_id", type_=BigInteger))
    .values(last_heartbeat=func.now())
    .returning(workers.c.id),
    prepared=True,
)
# A NOTIFY sent through the worker's own connections, to check that its LISTEN hears it (it
# does not behind PgBouncer in transaction mode).
notify = render(
    "notify",
    select(func.pg_notify(bindparam("channel", type_=Text), bindparam("payload", type_=Text))),
)
unregister_worker = render(
    "unregister_worker",
    delete(workers).where(workers.c.id == bindparam("worker_id", type_=BigInteger)),
)

# Jobs a worker still held when it stopped go back to the queue, to be run again; a job that
# was asked to abort ends aborted instead. Jobs claimed ahead that never started (``unstarted``)
# get back the attempt their claim counted. Jobs whose sync task still runs in its thread
# (``held``) may run again only ``held_for`` from now.
_was_aborting = jobs.c.status == JobStatus.ABORTING
_never_started = jobs.c.id == func.any(array_param("unstarted", BigInteger))
_still_held = jobs.c.id == func.any(array_param("held", BigInteger))
requeue_worker_jobs = render(
    "requeue_worker_jobs",
    update(jobs)
    .where(
        jobs.c.worker_id == bindparam("worker_id", type_=BigInteger),
        jobs.c.status.in_(RUNNING_STATUSES),
        jobs.c.id == func.any(array_param("ids", BigInteger)),
    )
    .values(
        status=case(
            (_was_aborting, cast(literal(JobStatus.ABORTED.value), job_status)),
            else_=cast(literal(JobStatus.TODO.value), job_status),
        ),
        finished_at=case((_was_aborting, step_time()), else_=null()),
        worker_id=case((_was_aborting, jobs.c.worker_id), else_=null()),
        started_at=case((_was_aborting, jobs.c.started_at), else_=null()),
        scheduled_at=case(
            (and_(~_was_aborting, _still_held), func.now() + cast(bindparam("held_for"), Interval)),
            else_=jobs.c.scheduled_at,
        ),
        attempts=case(
            (and_(~_was_aborting, _never_started), jobs.c.attempts - 1),
            else_=jobs.c.attempts,
        ),
    ),
)

list_workers = render(
    "list_workers",
    select(
        workers.c.id,
        workers.c.name,
        workers.c.hostname,
        workers.c.pid,
        workers.c.queues,
        workers.c.concurrency,
        workers.c.started_at,
        workers.c.last_heartbeat,
        func.extract("epoch", func.now() - workers.c.last_heartbeat).label("heartbeat_age"),
    ).order_by(workers.c.id),
)


# What a worker that does not LISTEN polls for: its jobs someone asked to abort.
aborting_jobs_of_worker = render(
    "aborting_jobs_of_worker",
    select(jobs.c.id).where(jobs.c.worker_id == this_worker, jobs.c.status == JobStatus.ABORTING),
)

# A worker whose heartbeat found its row gone (another worker declared it stalled) puts it
# back under the same id, which its running jobs carry.
reregister_worker = render(
    "reregister_worker",
    insert(workers)
    .from_select(
        ["id", "name", "hostname", "pid", "queues", "concurrency"],
        select(
            cast(this_worker, BigInteger),
            cast(bindparam("name"), Text),
            cast(bindparam("hostname"), Text),
            cast(bindparam("pid"), Integer),
            cast(bindparam("queues"), ARRAY(Text)),
            cast(bindparam("concurrency"), Integer),
        ).where(~exists().where(workers.c.id == this_worker)),
    )
    .returning(workers.c.id),
)
