"""Periodic tasks: defer the jobs of cron _ticks (each tick once, whichever worker sends it),
and prune the bookkeeping of _old _ticks."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..schema import jobs, periodic_defers
from ._build import QualifiedName, array_param, render

_ticks = (
    select(
        func.unnest(
            array_param("task_names", Text),
            array_param("periodic_ids", Text),
            array_param("defer_timestamps", BigInteger),
            array_param("queues", Text),
            array_param("priorities", Integer),
            array_param("locks", Text),
            array_param("queueing_locks", Text),
            cast(array_param("args", Text), ARRAY(JSONB)),
        )
        .table_valued(
            "task_name",
            "periodic_id",
            "defer_timestamp",
            "queue",
            "priority",
            "lock",
            "queueing_lock",
            "args",
        )
        .render_derived(name="tick")
    )
).cte("ticks")
# The tick's row is the claim on the tick: the unique key lets one insert win, whichever
# worker sends it, and the others (waiting on the winner's commit) insert nothing. The
# job's id is drawn here so that the row names the job written below.
_next_job_id = func.nextval(
    func.pg_get_serial_sequence(QualifiedName(jobs.name), literal(jobs.c.id.name, Text))
)
_deferred = (
    pg_insert(periodic_defers)
    .from_select(
        ["task_name", "periodic_id", "defer_timestamp", "job_id"],
        select(_ticks.c.task_name, _ticks.c.periodic_id, _ticks.c.defer_timestamp, _next_job_id),
    )
    .on_conflict_do_nothing(constraint="uq_sqla_jobs_periodic_defers_tick")
    .returning(
        periodic_defers.c.task_name,
        periodic_defers.c.periodic_id,
        periodic_defers.c.defer_timestamp,
        periodic_defers.c.job_id,
    )
    .cte("deferred")
)
_same_tick = and_(
    _deferred.c.task_name == _ticks.c.task_name,
    _deferred.c.periodic_id == _ticks.c.periodic_id,
    _deferred.c.defer_timestamp == _ticks.c.defer_timestamp,
)
# A job only for a tick whose row this statement wrote. A job whose queueing lock is taken
# by a waiting job is not written (DO NOTHING): the tick counts as done, like a defer that
# raised AlreadyEnqueued, instead of failing the other ticks of the statement.
_inserted = (
    pg_insert(jobs)
    .from_select(
        ["id", "queue", "task_name", "priority", "lock", "queueing_lock", "args"],
        select(
            _deferred.c.job_id,
            _ticks.c.queue,
            _ticks.c.task_name,
            _ticks.c.priority,
            _ticks.c.lock,
            _ticks.c.queueing_lock,
            _ticks.c.args,
        ).select_from(_deferred.join(_ticks, _same_tick)),
    )
    .on_conflict_do_nothing()
    .returning(jobs.c.id)
    .cte("inserted")
)
defer_periodic_jobs = render(
    "defer_periodic_jobs",
    select(
        _deferred.c.task_name,
        _deferred.c.periodic_id,
        _deferred.c.defer_timestamp,
        _inserted.c.id.label("job_id"),
    ).select_from(_deferred.outerjoin(_inserted, _inserted.c.id == _deferred.c.job_id)),
)

# Rows of ticks no worker will defer again (older than ``before``), beyond the ``keep``
# newest of each schedule (they show when it last ran). SKIP LOCKED: two workers pruning
# at once never wait for each other.
_ranked = select(
    periodic_defers.c.id,
    periodic_defers.c.defer_timestamp,
    func.row_number()
    .over(
        partition_by=(periodic_defers.c.task_name, periodic_defers.c.periodic_id),
        order_by=periodic_defers.c.defer_timestamp.desc(),
    )
    .label("newest_first"),
).subquery("ranked")
_old = (
    select(periodic_defers.c.id)
    .where(
        periodic_defers.c.id.in_(
            select(_ranked.c.id).where(
                _ranked.c.newest_first > bindparam("keep", type_=Integer),
                _ranked.c.defer_timestamp < bindparam("before", type_=BigInteger),
            )
        )
    )
    .with_for_update(skip_locked=True)
)
_pruned = (
    delete(periodic_defers)
    .where(periodic_defers.c.id.in_(_old))
    .returning(periodic_defers.c.id)
    .cte("pruned")
)
prune_periodic_defers = render(
    "prune_periodic_defers", select(func.count().label("count")).select_from(_pruned)
)
