"""Execution controls (``sqla_jobs_controls``): paused queues and tasks, concurrency and rate
limits, and the claim that obeys them.

A worker claims with the plain claim (`claim`) while no control concerns its queues; the plain
claim checks that, once per statement, and claims nothing otherwise (`no_control_applies`).
The controlled claim first locks the rows of the limits it must respect, in one order, so that
claims of every worker take turns on a limited queue or task; the claim proper, sent in the
same message, then counts with a snapshot taken after the lock, and so sees every job the
claims before it took. It walks each queue's waiting jobs in order (paused queues not at all),
takes at most each queue's and each task's room (``cap``), and spends the rate limits'
tokens in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, array, insert

from ..schema import JobStatus, controls, jobs
from ..statuses import CONTROLS_CHANNEL, RUNNING_STATUSES
from ._build import CLAIM_COLUMNS, ArrayOf, array_param, render, step_time
from .claim import claim_conditions, concerns, controlling

QUEUE = "queue"
TASK = "task"


# -- managing the controls ----------------------------------------------------------------------


def _notify(changed: Any) -> Any:
    """``changed`` (an insert, update or delete ``RETURNING scope``), then a NOTIFY that wakes
    the workers to read the controls again."""
    done = changed.cte("changed")
    return select(
        done.c.scope,
        func.pg_notify(literal(CONTROLS_CHANNEL), literal("controls")).label("notified"),
    ).select_from(done)


def _pause_statement() -> Any:
    upsert = insert(controls).values(
        scope=bindparam("scope", type_=Text),
        name=bindparam("name", type_=Text),
        paused=bindparam("paused"),
    )
    changed = upsert.on_conflict_do_update(
        index_elements=[controls.c.scope, controls.c.name],
        set_={"paused": upsert.excluded.paused, "updated_at": func.now()},
    ).returning(controls.c.scope)
    return _notify(changed)


def _limits_statement() -> Any:
    rate_limit = cast(bindparam("rate_limit"), Integer)
    upsert = insert(controls).values(
        scope=bindparam("scope", type_=Text),
        name=bindparam("name", type_=Text),
        concurrency_limit=cast(bindparam("concurrency_limit"), Integer),
        rate_limit=rate_limit,
        rate_period=cast(bindparam("rate_period"), Float),
        tokens=cast(rate_limit, Float),
        refilled_at=func.clock_timestamp(),
    )
    rate_changed = or_(
        controls.c.rate_limit.is_distinct_from(upsert.excluded.rate_limit),
        controls.c.rate_period.is_distinct_from(upsert.excluded.rate_period),
    )
    changed = upsert.on_conflict_do_update(
        index_elements=[controls.c.scope, controls.c.name],
        set_={
            "concurrency_limit": upsert.excluded.concurrency_limit,
            "rate_limit": upsert.excluded.rate_limit,
            "rate_period": upsert.excluded.rate_period,
            # A new rate starts with a full bucket; the same rate keeps what it has.
            "tokens": case((rate_changed, upsert.excluded.tokens), else_=controls.c.tokens),
            "refilled_at": case(
                (rate_changed, upsert.excluded.refilled_at), else_=controls.c.refilled_at
            ),
            "updated_at": func.now(),
        },
    ).returning(controls.c.scope)
    return _notify(changed)


set_paused = render("set_paused", _pause_statement())
set_limits = render("set_limits", _limits_statement())

list_controls = render(
    "list_controls",
    select(
        controls.c.scope,
        controls.c.name,
        controls.c.paused,
        controls.c.concurrency_limit,
        controls.c.rate_limit,
        controls.c.rate_period,
        controls.c.updated_at,
    ).order_by(controls.c.scope, controls.c.name),
)

#: Jobs running, per queue and per task, for the controls' listing.
running_per_queue_and_task = render(
    "running_per_queue_and_task",
    select(jobs.c.queue, jobs.c.task_name, func.count().label("running"))
    .where(jobs.c.status.in_(RUNNING_STATUSES))
    .group_by(jobs.c.queue, jobs.c.task_name),
)


# -- the controlled claim -----------------------------------------------------------------------


def _lock_limits(queue_filter: bool) -> Any:
    """Sent ahead of the controlled claim: lock the limits it counts against, in one order."""
    return (
        select(literal(1))
        .where(
            or_(controls.c.concurrency_limit.isnot(None), controls.c.rate_limit.isnot(None)),
            concerns(queue_filter),
        )
        .order_by(controls.c.scope, controls.c.name)
        .with_for_update(of=controls)
    )


def controlled_claim_statement(queue_filter: bool) -> Any:
    clock = select(func.clock_timestamp().label("at")).cte("clock")
    control = controls.alias("control")
    limited = (
        select(control.c.scope, control.c.name)
        .where(control.c.concurrency_limit.isnot(None), concerns(queue_filter, control))
        .cte("limited")
    )
    # Running jobs of the limited queues and tasks, one pass over the running ones.
    running = (
        select(jobs.c.queue, jobs.c.task_name, func.count().label("n"))
        .where(
            jobs.c.status.in_(RUNNING_STATUSES),
            or_(
                jobs.c.queue
                == func.any(ArrayOf(select(limited.c.name).where(limited.c.scope == QUEUE), Text)),
                jobs.c.task_name
                == func.any(ArrayOf(select(limited.c.name).where(limited.c.scope == TASK), Text)),
            ),
        )
        .group_by(jobs.c.queue, jobs.c.task_name)
        .cte("running_counts")
    )
    running_now = (
        select(func.coalesce(func.sum(running.c.n), 0))
        .where(
            case(
                (control.c.scope == QUEUE, running.c.queue == control.c.name),
                else_=running.c.task_name == control.c.name,
            )
        )
        .scalar_subquery()
    )
    elapsed = func.coalesce(func.extract("epoch", clock.c.at - control.c.refilled_at), 0)
    available = case(
        (
            control.c.rate_limit.isnot(None),
            func.least(
                cast(control.c.rate_limit, Float),
                func.coalesce(control.c.tokens, cast(control.c.rate_limit, Float))
                + elapsed * control.c.rate_limit / control.c.rate_period,
            ),
        ),
        else_=null(),
    )
    # LEAST leaves out NULLs: a control's room is the smallest of what applies to it.
    cap = func.least(
        case((control.c.paused, 0), else_=null()),
        case(
            (control.c.concurrency_limit.isnot(None), control.c.concurrency_limit - running_now),
            else_=null(),
        ),
        cast(func.floor(available), Integer),
    )
    caps = (
        select(control.c.scope, control.c.name, cap.label("cap"), available.label("available"))
        .select_from(control.join(clock, true()))
        .where(controlling(control), concerns(queue_filter, control))
        .cte("caps")
    )
    if queue_filter:
        source = (
            func.unnest(array_param("queues", Text)).table_valued("name").render_derived("source")
        )
        names = select(source.c.name.label("name"))
    else:
        # The queues that have waiting jobs: one probe of ix_sqla_jobs_jobs_fetch_queue per
        # queue (a skip scan), not a read of the waiting jobs.
        first = select(func.min(jobs.c.queue).label("name")).where(jobs.c.status == JobStatus.TODO)
        queues = first.cte("waiting_queues", recursive=True)
        following = (
            select(func.min(jobs.c.queue))
            .where(jobs.c.status == JobStatus.TODO, jobs.c.queue > queues.c.name)
            .scalar_subquery()
        )
        queues = queues.union_all(select(following).where(queues.c.name.isnot(None)))
        names = select(queues.c.name).where(queues.c.name.isnot(None))
    named = names.subquery("named")
    queue_cap = caps.alias("queue_cap")
    wanted = (
        select(named.c.name, queue_cap.c.cap)
        .select_from(
            named.outerjoin(
                queue_cap, and_(queue_cap.c.scope == QUEUE, queue_cap.c.name == named.c.name)
            )
        )
        .where(or_(queue_cap.c.cap.is_(None), queue_cap.c.cap > 0))
        .cte("wanted")
    )
    blocked_tasks = func.coalesce(
        ArrayOf(select(caps.c.name).where(caps.c.scope == TASK, caps.c.cap <= 0), Text),
        cast(literal("{}"), ARRAY(Text())),
    )
    size = bindparam("limit", type_=Integer)
    scan_limit = select(cast(size, BigInteger).label("claim_size")).scalar_subquery()
    locked = (
        select(jobs.c.id, jobs.c.priority, jobs.c.queue, jobs.c.task_name)
        .where(
            *claim_conditions(),
            jobs.c.queue == func.any(array([wanted.c.name])),
            jobs.c.task_name != func.all(blocked_tasks),
        )
        .order_by(jobs.c.queue, jobs.c.priority.desc(), jobs.c.id)
        .limit(scan_limit)
        .with_for_update(skip_locked=True, of=jobs)
        .correlate(wanted)
        .subquery("walk")
    )
    walk = select(locked).limit(size).lateral("best")
    order = (walk.c.priority.desc(), walk.c.id)
    ranked = (
        select(
            walk.c.id,
            walk.c.priority,
            walk.c.task_name,
            wanted.c.cap.label("queue_cap"),
            func.row_number().over(partition_by=walk.c.queue, order_by=order).label("in_queue"),
            func.row_number().over(partition_by=walk.c.task_name, order_by=order).label("in_task"),
        )
        .select_from(wanted.join(walk, true()))
        .cte("ranked")
    )
    task_cap = caps.alias("task_cap")
    candidates = (
        select(ranked.c.id)
        .select_from(
            ranked.outerjoin(
                task_cap, and_(task_cap.c.scope == TASK, task_cap.c.name == ranked.c.task_name)
            )
        )
        .where(
            or_(ranked.c.queue_cap.is_(None), ranked.c.in_queue <= ranked.c.queue_cap),
            or_(task_cap.c.cap.is_(None), ranked.c.in_task <= task_cap.c.cap),
        )
        .order_by(ranked.c.priority.desc(), ranked.c.id)
        .limit(size)
        .cte("candidates")
    )
    claimed = (
        update(jobs)
        .where(jobs.c.id == func.any(ArrayOf(select(candidates.c.id))))
        .values(
            status=JobStatus.DOING,
            attempts=jobs.c.attempts + 1,
            started_at=step_time(),
            worker_id=bindparam("worker_id", type_=BigInteger),
        )
        .returning(*CLAIM_COLUMNS)
        .cte("claimed")
    )
    # The rate limits' buckets: refilled up to now, less the jobs this claim started.
    started_here = (
        select(func.count())
        .select_from(claimed)
        .where(
            case(
                (controls.c.scope == QUEUE, claimed.c.queue == controls.c.name),
                else_=claimed.c.task_name == controls.c.name,
            )
        )
        .scalar_subquery()
    )
    spent = (
        update(controls)
        .where(
            controls.c.rate_limit.isnot(None),
            controls.c.scope == caps.c.scope,
            controls.c.name == caps.c.name,
        )
        .values(tokens=caps.c.available - started_here, refilled_at=clock.c.at)
        .returning(controls.c.scope)
        .cte("spent")
    )
    columns = [claimed.c[column.name] for column in CLAIM_COLUMNS]
    # `spent` is read by no one: a data-modifying WITH runs all the same, once it is there.
    return select(*columns).add_cte(spent)


def _build(queue_filter: bool) -> Any:
    name = "claim_controlled_in_queues" if queue_filter else "claim_controlled"
    # No JIT: without statistics the planner costs the counts of running jobs as a scan per
    # control row, enough to compile the claim (a second per claim on 300,000 jobs).
    no_jit = select(func.set_config("jit", "off", True))
    return render(
        name,
        controlled_claim_statement(queue_filter),
        preamble=(no_jit, _lock_limits(queue_filter)),
    )


claim_controlled = _build(queue_filter=False)
claim_controlled_in_queues = _build(queue_filter=True)
