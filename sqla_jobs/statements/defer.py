"""Writing new jobs: one, a batch in one statement, and the ids a COPY of a big batch takes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Text,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCLASS
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..schema import JobStatus, job_status, jobs
from ._build import QualifiedName, array_param, render

# Tags and unique statuses travel as array literals (text, '{"a","b"}'), cast on the server:
# one form for every driver, and for a batch's arrays of them (PostgreSQL has no arrays of
# arrays of different lengths). Both are NULL for a job that does not use them.
_TAGS = ARRAY(Text)
_UNIQUE_STATUSES = ARRAY(job_status)

_one_job = pg_insert(jobs).values(
    queue=bindparam("queue"),
    task_name=bindparam("task_name"),
    priority=bindparam("priority"),
    lock=bindparam("lock"),
    queueing_lock=bindparam("queueing_lock"),
    args=cast(bindparam("args"), JSONB),
    scheduled_at=bindparam("scheduled_at"),
    trace_context=bindparam("trace_context"),
    tags=cast(bindparam("tags", type_=Text), _TAGS),
    meta=cast(bindparam("meta", type_=Text), JSONB),
    unique_key=bindparam("unique_key", type_=Text),
    unique_statuses=cast(bindparam("unique_statuses", type_=Text), _UNIQUE_STATUSES),
)
defer_job = render("defer_job", _one_job.returning(jobs.c.id), prepared=True)

#: The arbiter of a unique job's defer that returns the existing job: the unique index of the
#: keys, named by its columns and its predicate.
_UNIQUE_ARBITER: dict[str, Any] = {
    "index_elements": [jobs.c.unique_key],
    "index_where": jobs.c.unique_key.isnot(None)
    & (jobs.c.status == func.any(jobs.c.unique_statuses)),
}

# A unique job whose key another job holds is not written (no row returned): the caller then
# reads that job's id (`unique_jobs`). A clash on another index (a queueing lock) still raises.
defer_job_unless_unique_taken = render(
    "defer_job_unless_unique_taken",
    _one_job.on_conflict_do_nothing(**_UNIQUE_ARBITER).returning(jobs.c.id),
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
    "tags",
    "meta",
    "unique_key",
    "unique_statuses",
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
        array_param("tags", Text),
        array_param("metas", Text),
        array_param("unique_keys", Text),
        array_param("unique_statuses", Text),
    )
    .table_valued(*_SPEC_COLUMNS, with_ordinality="ord")
    .render_derived(name="batch")
)
_batch = _unnested.subquery("batch_rows")
_batch_rows = select(
    _batch.c.queue,
    _batch.c.task_name,
    _batch.c.priority,
    _batch.c.lock,
    _batch.c.queueing_lock,
    _batch.c.args,
    _batch.c.scheduled_at,
    _batch.c.trace_context,
    cast(_batch.c.tags, _TAGS),
    cast(_batch.c.meta, JSONB),
    _batch.c.unique_key,
    cast(_batch.c.unique_statuses, _UNIQUE_STATUSES),
).order_by(_batch.c.ord)
defer_jobs = render(
    "defer_jobs",
    pg_insert(jobs).from_select(list(_SPEC_COLUMNS), _batch_rows).returning(jobs.c.id),
)
# A batch of unique jobs that returns the existing jobs: those whose key is taken (by a job in
# the table, or earlier in the batch) are not written; their keys tell the caller which.
defer_jobs_unless_unique_taken = render(
    "defer_jobs_unless_unique_taken",
    pg_insert(jobs)
    .from_select(list(_SPEC_COLUMNS), _batch_rows)
    .on_conflict_do_nothing(**_UNIQUE_ARBITER)
    .returning(jobs.c.id, jobs.c.unique_key),
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
#: The columns a COPY of new jobs writes when none of them has tags or meta: the rest take
#: their defaults (NULL), at no cost per row. A unique job is never copied (its batch is an
#: INSERT, whose conflicts it can handle).
COPY_COLUMNS = ("id", *_SPEC_COLUMNS[: _SPEC_COLUMNS.index("tags")])
#: The columns a COPY writes when some of its jobs have tags or meta.
COPY_COLUMNS_WITH_TAGS = (*COPY_COLUMNS, "tags", "meta")

# The jobs holding unique keys (at most one each): the existing job a defer returns, or the
# one an AlreadyEnqueued names.
unique_jobs = render(
    "unique_jobs",
    select(jobs.c.id, jobs.c.unique_key, jobs.c.task_name, jobs.c.status).where(
        jobs.c.unique_key == func.any(array_param("unique_keys", Text)),
        jobs.c.status == func.any(jobs.c.unique_statuses),
    ),
)

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
