"""Every statement sqla_jobs sends, built from the Core tables: the source of ``queries``.

Each statement is rendered to plain SQL text with ``%(name)s`` placeholders, which psycopg 3,
psycopg2, aiopg and SQLAlchemy psycopg 3 or psycopg2 engines (sync or async) all accept as
they are: one definition serves every connector, and no statement is compiled on the hot
path. The rendered text ships as ``sqla_jobs/_rendered_queries.py``, so that the runtime
(``queries``, the worker) needs no SQLAlchemy; after changing a statement here, write it
again with ``python -m sqla_jobs.queries_core`` (a unit test fails until the two agree).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
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
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCLASS, array
from sqlalchemy.dialects.postgresql.base import PGCompiler
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from .queries import LIMIT_MARKER, Query
from .schema import JobStatus, history_step, job_status, jobs, workers
from .schema import job_history as job_history_table
from .statuses import RUNNING_STATUSES


class _Compiler(PGCompiler):
    """Writes values that are part of a statement (a status, a literal 1) inline, so that the
    only placeholders left are the named parameters the caller passes."""

    def visit_bindparam(self, bindparam: BindParameter[Any], **kw: Any) -> str:  # type: ignore[override]
        if bindparam.unique:
            kw["literal_binds"] = True
        result: str = super().visit_bindparam(bindparam, **kw)  # type: ignore[no-untyped-call]
        return result


_DIALECT = PGDialect_psycopg2()  # type: ignore[no-untyped-call]
_DIALECT.statement_compiler = _Compiler


def render(name: str, statement: ClauseElement, *, prepared: bool = False) -> Query:
    """Compile a Core statement to driver-ready SQL text, once."""
    return Query(name, str(statement.compile(dialect=_DIALECT)), prepared)


class _ArrayOf(ColumnElement[Any]):
    """``ARRAY(SELECT ...)``: a subquery's rows as one array, computed once per statement."""

    inherit_cache = True

    def __init__(self, query: Select[Any]) -> None:
        self.query = query.scalar_subquery()
        self.type = ARRAY(BigInteger())


@compiles(_ArrayOf)
def _compile_array_of(element: _ArrayOf, compiler: SQLCompiler, **kw: Any) -> str:
    return f"ARRAY{compiler.process(element.query, **kw)}"


def _array(
    name: str, item_type: type[Text] | type[Integer] | type[BigInteger] | type[DateTime]
) -> ColumnElement[Any]:
    element = DateTime(timezone=True) if item_type is DateTime else item_type()
    return cast(bindparam(name), ARRAY(element))


_JOB_COLUMNS = (
    jobs.c.id,
    jobs.c.queue,
    jobs.c.task_name,
    jobs.c.args,
    jobs.c.priority,
    jobs.c.lock,
    jobs.c.queueing_lock,
    jobs.c.status,
    jobs.c.scheduled_at,
    jobs.c.attempts,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.last_error,
    jobs.c.worker_id,
)


def _step_time() -> ColumnElement[Any]:
    """When a job starts or ends: ``clock_timestamp()``, read after the statement's snapshot,
    not ``now()``, the start of a transaction that may have begun before the change it acts on
    was committed. A job's history is ordered by these times (schema.job_history): a claim that
    sees a retry committed must start after it."""
    return func.clock_timestamp()


# -- defer -------------------------------------------------------------------------------------

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
    )
    .returning(jobs.c.id),
    prepared=True,
)

#: The columns of a new job that its deferrer gives (`sqla_jobs.jobs.JobSpec`), in order.
_SPEC_COLUMNS = ("queue", "task_name", "priority", "lock", "queueing_lock", "args", "scheduled_at")

# Many jobs, one statement whose text does not depend on the batch size: columns travel as
# arrays and are unnested server-side.
_unnested = select(
    func.unnest(
        _array("queues", Text),
        _array("task_names", Text),
        _array("priorities", Integer),
        _array("locks", Text),
        _array("queueing_locks", Text),
        cast(_array("args", Text), ARRAY(JSONB)),
        _array("scheduled_ats", DateTime),
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
        func.nextval(cast(literal(f"{jobs.name}_id_seq", Text), REGCLASS)).label("id")
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

# -- claim -------------------------------------------------------------------------------------


def _claim(queue_filter: bool, limit: int | None = None) -> Query:
    running = jobs.alias("running")
    earlier = jobs.alias("earlier")
    lock_is_free = or_(
        jobs.c.lock.is_(None),
        and_(
            ~exists().where(
                running.c.lock == jobs.c.lock,
                running.c.status.in_(RUNNING_STATUSES),
            ),
            # Jobs sharing a lock run in defer order: only the oldest waiting one may start.
            ~exists().where(
                earlier.c.lock == jobs.c.lock,
                earlier.c.status == JobStatus.TODO,
                earlier.c.id < jobs.c.id,
            ),
        ),
    )
    # The claim's commit need not wait for the WAL flush: a claim lost in a crash leaves its
    # jobs 'todo', as if never claimed, and the finish (a normal commit) flushes the claim
    # first. Evaluated once per statement, for this transaction only.
    claim_commits_asynchronously = (
        select(func.set_config("synchronous_commit", "off", True)).scalar_subquery() == "off"
    )
    conditions = [
        claim_commits_asynchronously,
        jobs.c.status == JobStatus.TODO,
        or_(jobs.c.scheduled_at.is_(None), jobs.c.scheduled_at <= func.now()),
        lock_is_free,
    ]
    size: ColumnElement[Any] | int = bindparam("limit", type_=Integer) if limit is None else limit
    # The claim must walk its index in order and stop after ``size`` rows, however wrong the
    # planner's row estimates are: on a table never analysed (autovacuum has not run yet, or
    # is off) it guesses a few dozen waiting jobs, and a LIMIT above its guess made it sort the
    # whole queue instead (a 200,000-job queue fell to 955 jobs/s). So the scan's limit is a
    # sub-select, a value the planner cannot read: it then plans for a tenth of the rows,
    # which only an ordered index scan delivers without reading them all (rule "LIMIT is an
    # expression" in PostgreSQL's preprocess_limit). The same limit, written in, around it
    # keeps the plan's cost to the rows it takes: a cost of a tenth of a big queue would switch
    # JIT compilation on, at every call.
    scan_limit = select(cast(size, BigInteger).label("claim_size")).scalar_subquery()
    if not queue_filter:
        ready = (
            select(jobs.c.id)
            .where(*conditions)
            .order_by(jobs.c.priority.desc(), jobs.c.id)
            .limit(scan_limit)
            .with_for_update(skip_locked=True, of=jobs)
            .subquery("ready")
        )
        candidates = select(ready.c.id).limit(size).cte("candidates")
    else:
        # One walk of ix_sqla_jobs_jobs_fetch_queue per queue, each in (priority DESC, id)
        # order and stopping at the limit; the best ``size`` of them are claimed. A single walk
        # with ``queue = ANY(queues)`` cannot be in that order: without statistics PostgreSQL
        # read and sorted every waiting job of the queues (0.1 s a claim with 200,000). The
        # queue is matched as ``= ANY(ARRAY[name])`` and leads the walk's order, so that only
        # this index gives it: as an equality, the queue would be a constant to the planner,
        # and ix_sqla_jobs_jobs_fetch, filtered by queue, would give the order as well (and
        # was chosen, from statistics, to look for a rare queue through 1,000,000 others'
        # jobs). Each walk locks up to ``size`` jobs; those not claimed are free again at the
        # claim's commit (other workers skip them meanwhile).
        wanted = func.unnest(_array("queues", Text)).table_valued("name").render_derived("wanted")
        walk = (
            select(jobs.c.id, jobs.c.priority)
            .where(*conditions, jobs.c.queue == func.any(array([wanted.c.name])))
            .order_by(jobs.c.queue, jobs.c.priority.desc(), jobs.c.id)
            .limit(scan_limit)
            .with_for_update(skip_locked=True, of=jobs)
            .correlate(wanted)
            .subquery("walk")
        )
        best = select(walk.c.id, walk.c.priority).limit(size).lateral("best")
        candidates = (
            select(best.c.id)
            .select_from(wanted.join(best, true()))
            .order_by(best.c.priority.desc(), best.c.id)
            .limit(size)
            .cte("candidates")
        )
    # ``id = ANY(ARRAY(SELECT ...))``, not a join with the candidates: the locked ids become
    # one array, and the update walks the primary key for them. A join lets the planner pick a
    # hash join over the whole table when its estimate of the candidates is off (always, for
    # a generic plan, where the limit is unknown).
    statement = (
        update(jobs)
        .where(jobs.c.id == func.any(_ArrayOf(select(candidates.c.id))))
        .values(
            status=JobStatus.DOING,
            attempts=jobs.c.attempts + 1,
            started_at=_step_time(),
            worker_id=bindparam("worker_id", type_=BigInteger),
        )
        .returning(*_JOB_COLUMNS)
    )
    name = "claim_jobs_in_queues" if queue_filter else "claim_jobs"
    return render(name, statement, prepared=True)


claim_jobs = _claim(queue_filter=False)
claim_jobs_in_queues = _claim(queue_filter=True)


def claim_template(*, in_queues: bool) -> str:
    """The claim with `queries.LIMIT_MARKER` for its limit: `queries.claim_query` writes each
    limit in (a generic plan with the limit as a parameter is costed as a tenth of the queue)."""
    sql = _claim(queue_filter=in_queues, limit=LIMIT_MARKER).sql
    limits = 3 if in_queues else 2  # the scan's, the claim's (and the walks' of each queue)
    assert sql.count(str(LIMIT_MARKER)) == limits, "the marker must be the claim's limits only"
    return sql


# -- finish ------------------------------------------------------------------------------------

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


def _batch_array(
    name: str, item_type: type[Text] | type[Integer] | type[BigInteger] | type[DateTime]
) -> ColumnElement[Any]:
    """An array of a batch the worker sends, for ``unnest``, in a sub-select: PostgreSQL then
    counts on a few rows, whatever the batch's size, and finds each job by its primary key,
    one probe per row of the batch. Given the array itself, it knows the batch's size: it
    then read and hashed the whole table for a batch of 2,000 on a table of 20,000, or, on a
    table never analysed, for a batch of 100. The ids as ``id = ANY(...)`` and a join with
    the batch for the rest was worse: the batch scanned once per job found (25,000,000
    comparisons, 6 s, for a batch of 5,000)."""
    return select(_array(name, item_type)).scalar_subquery()


def _ran_batch(name: str) -> Any:
    """The (id, attempt) pairs the worker sends as arrays ``ids`` and ``attempts``."""
    return (
        func.unnest(_batch_array("ids", BigInteger), _batch_array("attempts", Integer))
        .table_valued("id", "attempt")
        .render_derived(name=name)
    )


# Successes are the common case: two arrays (ids and attempts), one statement.
_done = _ran_batch("done")
finish_succeeded = render(
    "finish_succeeded",
    update(jobs)
    .where(
        jobs.c.id == _done.c.id,
        jobs.c.attempts == _done.c.attempt,
        _still_running_here,
    )
    .values(status=JobStatus.SUCCEEDED, finished_at=_step_time()),
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


# Any outcome, one row per job: new status, error text, and (for a retry) when to run again.
def _unnest_outcomes(*extra: tuple[str, type[BigInteger] | type[Integer]]) -> Any:
    """The table of outcomes sent as arrays: id, status, error, retry_at, then ``extra``
    (name, type) columns."""
    return func.unnest(
        _batch_array("ids", BigInteger),
        select(cast(_array("statuses", Text), ARRAY(job_status))).scalar_subquery(),
        _batch_array("errors", Text),
        _batch_array("retry_ats", DateTime),
        *(_batch_array(f"{name}s", item_type) for name, item_type in extra),
    ).table_valued("id", "status", "error", "retry_at", *(name for name, _ in extra))


_outcomes = (
    select(_unnest_outcomes(("attempt", Integer)).render_derived(name="outcome"))
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
        # A retry's new time; any other outcome keeps the time the job was scheduled for.
        scheduled_at=func.coalesce(_outcomes.c.retry_at, jobs.c.scheduled_at),
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

# -- workers -----------------------------------------------------------------------------------

register_worker = render(
    "register_worker",
    insert(workers)
    .values(
        name=bindparam("name"),
        hostname=bindparam("hostname"),
        pid=bindparam("pid"),
        queues=_array("queues", Text),
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
_never_started = jobs.c.id == func.any(_array("unstarted", BigInteger))
_still_held = jobs.c.id == func.any(_array("held", BigInteger))
requeue_worker_jobs = render(
    "requeue_worker_jobs",
    update(jobs)
    .where(
        jobs.c.worker_id == bindparam("worker_id", type_=BigInteger),
        jobs.c.status.in_(RUNNING_STATUSES),
        jobs.c.id == func.any(_array("ids", BigInteger)),
    )
    .values(
        status=case(
            (_was_aborting, cast(literal(JobStatus.ABORTED.value), job_status)),
            else_=cast(literal(JobStatus.TODO.value), job_status),
        ),
        finished_at=case((_was_aborting, _step_time()), else_=null()),
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

# -- inspection --------------------------------------------------------------------------------

get_job = render(
    "get_job",
    select(*_JOB_COLUMNS).where(jobs.c.id == bindparam("job_id", type_=BigInteger)),
)
count_jobs_by_status = render(
    "count_jobs_by_status",
    select(jobs.c.queue, jobs.c.status, func.count().label("count")).group_by(
        jobs.c.queue, jobs.c.status
    ),
)
check_schema = render("check_schema", select(func.count()).select_from(jobs).where(jobs.c.id == -1))

# -- lifecycle: list, history, cancel, abort, retry, delete, prune -----------------------------

_RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED)


def _status(value: JobStatus) -> ColumnElement[Any]:
    return cast(literal(value.value), job_status)


def _unless_null(name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition``, or true when parameter ``name`` is NULL (the filter is not used)."""
    return or_(cast(bindparam(name), Text).is_(None), condition)


_job_id = bindparam("job_id", type_=BigInteger)

# Newest first; each filter applies only when its parameter is not NULL.
list_jobs = render(
    "list_jobs",
    select(*_JOB_COLUMNS)
    .where(
        _unless_null("queue", jobs.c.queue == bindparam("queue")),
        _unless_null("task_name", jobs.c.task_name == bindparam("task_name")),
        _unless_null("lock", jobs.c.lock == bindparam("lock")),
        or_(
            cast(bindparam("statuses"), ARRAY(Text)).is_(None),
            jobs.c.status == func.any(cast(_array("statuses", Text), ARRAY(job_status))),
        ),
    )
    .order_by(jobs.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
    .offset(bindparam("offset", type_=Integer)),
)

job_history = render(
    "job_history",
    select(job_history_table.c.status, job_history_table.c.at, job_history_table.c.error)
    .where(job_history_table.c.job_id == _job_id)
    .order_by(job_history_table.c.at, history_step),
)

# Only a job still waiting can be cancelled; the row lock taken by a claim in progress makes
# this wait for the claim, and then find the job doing.
cancel_job = render(
    "cancel_job",
    update(jobs)
    .where(jobs.c.id == _job_id, jobs.c.status == JobStatus.TODO)
    .values(status=JobStatus.CANCELLED, finished_at=_step_time())
    .returning(jobs.c.id),
)

# A waiting job is cancelled; a running one is marked aborting, whose trigger tells its worker.
abort_job = render(
    "abort_job",
    update(jobs)
    .where(jobs.c.id == _job_id, jobs.c.status.in_([JobStatus.TODO, JobStatus.DOING]))
    .values(
        status=case(
            (jobs.c.status == JobStatus.TODO, _status(JobStatus.CANCELLED)),
            else_=_status(JobStatus.ABORTING),
        ),
        finished_at=case((jobs.c.status == JobStatus.TODO, _step_time()), else_=null()),
    )
    .returning(jobs.c.status),
)

# Back to the queue with a fresh count of attempts; the history and last error stay.
retry_job = render(
    "retry_job",
    update(jobs)
    .where(jobs.c.id == _job_id, jobs.c.status.in_(_RETRYABLE))
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

delete_job = render(
    "delete_job",
    delete(jobs)
    .where(jobs.c.id == _job_id, jobs.c.status.not_in(RUNNING_STATUSES))
    .returning(jobs.c.id),
)

# One batch of finished jobs older than the cutoff; the caller repeats until a batch comes back
# short. SKIP LOCKED: a job being retried or deleted meanwhile is left alone, never waited for.
_prunable = (
    select(jobs.c.id)
    .where(
        jobs.c.status == func.any(cast(_array("statuses", Text), ARRAY(job_status))),
        func.coalesce(jobs.c.finished_at, jobs.c.created_at)
        < func.now() - cast(bindparam("older_than"), Interval),
    )
    .limit(bindparam("batch_size", type_=Integer))
    .with_for_update(skip_locked=True)
)
_pruned = delete(jobs).where(jobs.c.id.in_(_prunable)).returning(jobs.c.id).cte("pruned")
prune_jobs = render("prune_jobs", select(func.count().label("count")).select_from(_pruned))

ALL: tuple[Query, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Query)
)

# -- periodic tasks ----------------------------------------------------------------------------


def _periodic_queries() -> tuple[Query, Query]:
    """The statements of `sqla_jobs.periodic`: defer the jobs of cron ticks, each tick once
    however many workers try, and prune the bookkeeping of old ticks."""
    # Local: ON CONFLICT needs PostgreSQL's insert construct (this section is appended
    # after the module's own imports).
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from .schema import periodic_defers

    ticks = (
        select(
            func.unnest(
                _array("task_names", Text),
                _array("periodic_ids", Text),
                _array("defer_timestamps", BigInteger),
                _array("queues", Text),
                _array("priorities", Integer),
                _array("locks", Text),
                _array("queueing_locks", Text),
                cast(_array("args", Text), ARRAY(JSONB)),
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
    next_job_id = func.nextval(
        func.pg_get_serial_sequence(literal(jobs.name, Text), literal(jobs.c.id.name, Text))
    )
    deferred = (
        pg_insert(periodic_defers)
        .from_select(
            ["task_name", "periodic_id", "defer_timestamp", "job_id"],
            select(ticks.c.task_name, ticks.c.periodic_id, ticks.c.defer_timestamp, next_job_id),
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
    same_tick = and_(
        deferred.c.task_name == ticks.c.task_name,
        deferred.c.periodic_id == ticks.c.periodic_id,
        deferred.c.defer_timestamp == ticks.c.defer_timestamp,
    )
    # A job only for a tick whose row this statement wrote. A job whose queueing lock is taken
    # by a waiting job is not written (DO NOTHING): the tick counts as done, like a defer that
    # raised AlreadyEnqueued, instead of failing the other ticks of the statement.
    inserted = (
        pg_insert(jobs)
        .from_select(
            ["id", "queue", "task_name", "priority", "lock", "queueing_lock", "args"],
            select(
                deferred.c.job_id,
                ticks.c.queue,
                ticks.c.task_name,
                ticks.c.priority,
                ticks.c.lock,
                ticks.c.queueing_lock,
                ticks.c.args,
            ).select_from(deferred.join(ticks, same_tick)),
        )
        .on_conflict_do_nothing()
        .returning(jobs.c.id)
        .cte("inserted")
    )
    defer = render(
        "defer_periodic_jobs",
        select(
            deferred.c.task_name,
            deferred.c.periodic_id,
            deferred.c.defer_timestamp,
            inserted.c.id.label("job_id"),
        ).select_from(deferred.outerjoin(inserted, inserted.c.id == deferred.c.job_id)),
    )

    # Rows of ticks no worker will defer again (older than ``before``), beyond the ``keep``
    # newest of each schedule (they show when it last ran). SKIP LOCKED: two workers pruning
    # at once never wait for each other.
    ranked = select(
        periodic_defers.c.id,
        periodic_defers.c.defer_timestamp,
        func.row_number()
        .over(
            partition_by=(periodic_defers.c.task_name, periodic_defers.c.periodic_id),
            order_by=periodic_defers.c.defer_timestamp.desc(),
        )
        .label("newest_first"),
    ).subquery("ranked")
    old = (
        select(periodic_defers.c.id)
        .where(
            periodic_defers.c.id.in_(
                select(ranked.c.id).where(
                    ranked.c.newest_first > bindparam("keep", type_=Integer),
                    ranked.c.defer_timestamp < bindparam("before", type_=BigInteger),
                )
            )
        )
        .with_for_update(skip_locked=True)
    )
    pruned = (
        delete(periodic_defers)
        .where(periodic_defers.c.id.in_(old))
        .returning(periodic_defers.c.id)
        .cte("pruned")
    )
    prune = render("prune_periodic_defers", select(func.count().label("count")).select_from(pruned))
    return defer, prune


defer_periodic_jobs, prune_periodic_defers = _periodic_queries()
ALL = (*ALL, defer_periodic_jobs, prune_periodic_defers)

# -- stalled jobs ------------------------------------------------------------------------------
# A worker is alive while its last heartbeat is younger than the stalled timeout. A running job
# whose worker is not alive (its row old, gone, or never named) is stalled. A live worker adopts
# stalled jobs under its own id (rows another sweeper holds are skipped, so each job goes to one
# worker), decides each outcome from the task's retry strategy, then records them; a job it
# adopted but could not record stays running under its id, to be found again if it dies too.

_stalled_timeout = cast(bindparam("stalled_timeout"), Interval)
_this_worker = bindparam("worker_id", type_=BigInteger)
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
        jobs.c.worker_id.is_distinct_from(_this_worker),
        or_(_owner.c.id.is_(None), _owner.c.last_heartbeat < func.now() - _stalled_timeout),
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
    .values(worker_id=_this_worker)
    .returning(
        *(column for column in _JOB_COLUMNS if column is not jobs.c.worker_id),
        _stalled.c.stalled_worker_id,
        _stalled.c.stalled_worker_name,
        _stalled.c.heartbeat_age,
    ),
)

# The outcomes of adopted jobs, written only while this worker still holds them (a sweeper
# that was itself declared stalled meanwhile writes nothing). A job aborted in the meantime
# ends aborted; a finished one keeps the id of the worker that ran it.
_recovered = (
    select(_unnest_outcomes(("stalled_worker_id", BigInteger)).render_derived(name="recovered"))
).subquery("recovered_jobs")
# Back to the queue, unless someone asked to abort the job meanwhile: it then ends aborted.
_requeued = and_(
    _recovered.c.status == _status(JobStatus.TODO), jobs.c.status != JobStatus.ABORTING
)
finish_recovered_jobs = render(
    "finish_recovered_jobs",
    update(jobs)
    .where(
        jobs.c.id == _recovered.c.id,
        jobs.c.worker_id == _this_worker,
        jobs.c.status.in_(RUNNING_STATUSES),
    )
    .values(
        status=case(
            (jobs.c.status == JobStatus.ABORTING, _status(JobStatus.ABORTED)),
            else_=_recovered.c.status,
        ),
        last_error=_recovered.c.error,
        scheduled_at=func.coalesce(_recovered.c.retry_at, jobs.c.scheduled_at),
        finished_at=case((_requeued, null()), else_=_step_time()),
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
        workers.c.id != _this_worker,
        workers.c.last_heartbeat < func.now() - _stalled_timeout,
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

# What a worker that does not LISTEN polls for: its jobs someone asked to abort.
aborting_jobs_of_worker = render(
    "aborting_jobs_of_worker",
    select(jobs.c.id).where(jobs.c.worker_id == _this_worker, jobs.c.status == JobStatus.ABORTING),
)

# A worker whose heartbeat found its row gone (another worker declared it stalled) puts it
# back under the same id, which its running jobs carry.
reregister_worker = render(
    "reregister_worker",
    insert(workers)
    .from_select(
        ["id", "name", "hostname", "pid", "queues", "concurrency"],
        select(
            cast(_this_worker, BigInteger),
            cast(bindparam("name"), Text),
            cast(bindparam("hostname"), Text),
            cast(bindparam("pid"), Integer),
            cast(bindparam("queues"), ARRAY(Text)),
            cast(bindparam("concurrency"), Integer),
        ).where(~exists().where(workers.c.id == _this_worker)),
    )
    .returning(workers.c.id),
)

ALL = (
    *ALL,
    adopt_stalled_jobs,
    finish_recovered_jobs,
    delete_stalled_workers,
    aborting_jobs_of_worker,
    reregister_worker,
)


# -- the rendered module -----------------------------------------------------------------------

RENDERED_PATH = Path(__file__).with_name("_rendered_queries.py")


def _split_string(sql: str) -> list[str]:
    """``sql`` as string literals, one per line of SQL, that Python joins back."""
    literals = [repr(line) for line in sql.splitlines(keepends=True)]
    literals[-1] += ","
    return literals


def rendered_module() -> str:
    """The text of ``_rendered_queries.py``: every statement of `ALL` as a `Query`, the claim
    templates, and the names the runtime needs."""
    lines = [
        '"""Written by ``python -m sqla_jobs.queries_core`` from the Core statements there: do not',
        'edit (a unit test compares this file with a fresh rendering)."""',
        "",
        "from .queries import Query",
        "",
        f"JOBS_TABLE = {jobs.name!r}",
        f"COPY_COLUMNS = {COPY_COLUMNS!r}",
        f"CLAIM_TEMPLATE = {claim_template(in_queues=False)!r}",
        f"CLAIM_IN_QUEUES_TEMPLATE = {claim_template(in_queues=True)!r}",
    ]
    for query in ALL:
        lines += [
            "",
            f"{query.name} = Query(",
            f"    {query.name!r},",
            *(f"    {line}" for line in _split_string(query.sql)),
            f"    prepared={query.prepared!r},",
            ")",
        ]
    lines += ["", f"ALL = ({', '.join(query.name for query in ALL)},)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    RENDERED_PATH.write_text(rendered_module())
    print(f"wrote {RENDERED_PATH}", file=sys.stderr)
