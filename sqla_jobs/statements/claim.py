"""The claim: the next runnable jobs, locked (``FOR UPDATE SKIP LOCKED``) and marked running."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.sql.elements import ColumnElement

from .._query import LIMIT_MARKER, Query
from ..schema import JobStatus, controls, jobs
from ..statuses import RUNNING_STATUSES
from ._build import CLAIM_COLUMNS, ArrayOf, array_param, compile_in_schema, render, step_time


def build_claim(queue_filter: bool) -> Query:
    name = "claim_jobs_in_queues" if queue_filter else "claim_jobs"
    return render(name, claim_statement(queue_filter, None), prepared=True)


def controlling(table: Any = controls) -> ColumnElement[bool]:
    """A row of ``sqla_jobs_controls`` that controls something: paused, or limited."""
    return or_(
        table.c.paused, table.c.concurrency_limit.isnot(None), table.c.rate_limit.isnot(None)
    )


def concerns(queue_filter: bool, table: Any = controls) -> ColumnElement[bool]:
    """A control that concerns a worker of the ``queues`` parameter (every task's does)."""
    if not queue_filter:
        return true()
    return or_(table.c.scope == "task", table.c.name == func.any(array_param("queues", Text)))


def no_control_applies(queue_filter: bool) -> ColumnElement[bool]:
    """No control concerns this worker's queues: evaluated once per claim (a probe of a table
    of a few rows). A worker that has not heard of a new control yet claims nothing, and
    reads the controls again (see `statements.controls`)."""
    control = controls.alias("control")
    return ~exists().where(controlling(control), concerns(queue_filter, control))


def claim_conditions() -> list[ColumnElement[bool]]:
    """What makes a job claimable now: waiting, due, its lock free (and the claim's commit
    asynchronous). Shared by the plain claim and the controlled one."""
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
    return [
        claim_commits_asynchronously,
        jobs.c.status == JobStatus.TODO,
        or_(jobs.c.scheduled_at.is_(None), jobs.c.scheduled_at <= func.now()),
        lock_is_free,
    ]


def claim_statement(queue_filter: bool, limit: int | None) -> Any:
    """The plain claim: the best ``limit`` claimable jobs (of the ``queues`` parameter's
    queues, with ``queue_filter``), while no control applies (`no_control_applies`)."""
    conditions = [*claim_conditions(), no_control_applies(queue_filter)]
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
        wanted = (
            func.unnest(array_param("queues", Text)).table_valued("name").render_derived("wanted")
        )
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
        .where(jobs.c.id == func.any(ArrayOf(select(candidates.c.id))))
        .values(
            status=JobStatus.DOING,
            attempts=jobs.c.attempts + 1,
            started_at=step_time(),
            worker_id=bindparam("worker_id", type_=BigInteger),
        )
        .returning(*CLAIM_COLUMNS)
    )
    return statement


claim_jobs = build_claim(queue_filter=False)
claim_jobs_in_queues = build_claim(queue_filter=True)


def claim_template(*, in_queues: bool, schema: str | None = None) -> str:
    """The claim with `queries.LIMIT_MARKER` for its limit: `queries.claim_query` writes each
    limit in (a generic plan with the limit as a parameter is costed as a tenth of the queue).
    ``schema``: where the tables are (None: found by the ``search_path``)."""
    sql = compile_in_schema(claim_statement(in_queues, LIMIT_MARKER), schema)
    limits = 3 if in_queues else 2  # the scan's, the claim's (and the walks' of each queue)
    assert sql.count(str(LIMIT_MARKER)) == limits, "the marker must be the claim's limits only"
    return sql
