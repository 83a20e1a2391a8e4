"""Writing new jobs: one, a batch in one statement, and the ids a COPY of a big batch takes."""

from __future__ import annotations

from sqlalchemy import (
    DateTime,
    Integer,
    Text,
    bindparam,
    cast,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCLASS

from ..schema import JobStatus, jobs
from ._build import QualifiedName, array_param, render

defer_job = render(
    "defer_job",
    insert(jobs)
    .values(
        queue=bindparam("queue"),
        task_name=bindparam("task_name"),
        priority=bindparam("priority"),
        lock=bindparam("lock"),
        queueing_lock=bindparam("queueing_lock"),
        args=cast(bindparam("args"), JSONB),
        scheduled_at=bindparam("scheduled_at"),
        trace_context=bindparam("trace_context"),
    )
    .returning(jobs.c.id),
    prepared=True,
)

#: The columns of a new job that its deferrer gives (`sqla_jobs.jobs.JobSpec`), in order.
_SPEC_COLUMNS = (
    "queue",
    "task_name",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled_at",
    "trace_context",
)

# Many jobs, one statement whose text does not depend on the batch size: columns travel as
# arrays and are unnested server-side.
_unnested = select(
    func.unnest(
        array_param("queues", Text),
        array_param("task_names", Text),
        array_param("priorities", Integer),
        array_param("locks", Text),
        array_param("queueing_locks", Text),
        cast(array_param("args", Text), ARRAY(JSONB)),
        array_param("scheduled_ats", DateTime),
        array_param("trace_contexts", Text),
    )
    .table_valued(*_SPEC_COLUMNS, with_ordinality="ord")
    .render_derived(name="batch")
)
_batch = _unnested.subquery("batch_rows")
defer_jobs = render(
    "defer_jobs",
    insert(jobs)
    .from_select(
        list(_SPEC_COLUMNS),
        select(
            _batch.c.queue,
            _batch.c.task_name,
            _batch.c.priority,
            _batch.c.lock,
            _batch.c.queueing_lock,
            _batch.c.args,
            _batch.c.scheduled_at,
            _batch.c.trace_context,
        ).order_by(_batch.c.ord),
    )
    .returning(jobs.c.id),
)

# Big batches go through COPY, which returns nothing: their ids are taken from the table's
# identity sequence first, in one statement, then written with the rows.
_ids = (
    func.generate_series(1, bindparam("count", type_=Integer))
    .table_valued("n")
    .render_derived(name="series")
)
_reserved = (
    select(
        # The identity column's sequence, by the name PostgreSQL gives it (a lookup by
        # pg_get_serial_sequence per row costs five times as much).
        func.nextval(cast(QualifiedName(f"{jobs.name}_id_seq"), REGCLASS)).label("id")
    )
    .select_from(_ids)
    .subquery("reserved")
)
# One row holding an array: the driver decodes it in one go, not row by row.
reserve_job_ids = render(
    "reserve_job_ids",
    select(func.array_agg(_reserved.c.id).label("ids")),
)
#: The columns a COPY of new jobs writes, in order (the rest take their defaults).
COPY_COLUMNS = ("id", *_SPEC_COLUMNS)

# Which of a refused batch's queueing locks a waiting job holds: what AlreadyEnqueued names (the
# server's message is not read: its wording follows lc_messages).
waiting_queueing_locks = render(
    "waiting_queueing_locks",
    select(jobs.c.queueing_lock)
    .where(
        jobs.c.status == JobStatus.TODO,
        jobs.c.queueing_lock == func.any(array_param("queueing_locks", Text)),
    )
    .order_by(jobs.c.queueing_lock)
    .limit(1),
)
