"""What the web dashboard reads beyond the job manager's statements: a page of jobs by keyset,
the jobs a bulk action matches, the table's size, sampled counts, the oldest waiting job per
queue, the last hour's finishes, running jobs per worker and the last periodic ticks.

Every statement does bounded work on a table of millions: the page of jobs walks the primary
key backwards from its cursor over at most ``scan`` rows; the size is two probes of the primary
key; counts past a size are read from a block sample (``TABLESAMPLE SYSTEM``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Text,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.sql.elements import ColumnElement

from ..schema import JobStatus, job_dependencies, job_status, jobs, periodic_defers
from ..statuses import RUNNING_STATUSES
from ._build import JOB_COLUMNS, array_param, render

_BIGGEST_ID = 2**63 - 1


def _unless_null(name: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition``, or true when parameter ``name`` is NULL (the filter is not used)."""
    return or_(cast(bindparam(name), Text).is_(None), condition)


def _filters() -> list[ColumnElement[bool]]:
    """The jobs page's filters; each applies only when its parameter is not NULL."""
    return [
        _unless_null("queue", jobs.c.queue == bindparam("queue")),
        _unless_null("task_name", jobs.c.task_name == bindparam("task_name")),
        _unless_null("lock", jobs.c.lock == bindparam("lock")),
        _unless_null("queueing_lock", jobs.c.queueing_lock == bindparam("queueing_lock")),
        _unless_null("tag", jobs.c.tags.contains(array([cast(bindparam("tag"), Text)]))),
        or_(
            cast(bindparam("job_id"), BigInteger).is_(None),
            jobs.c.id == cast(bindparam("job_id"), BigInteger),
        ),
        or_(
            cast(bindparam("workflow_id"), BigInteger).is_(None),
            jobs.c.workflow_id == cast(bindparam("workflow_id"), BigInteger),
        ),
        or_(
            cast(bindparam("statuses"), ARRAY(Text)).is_(None),
            jobs.c.status == func.any(cast(array_param("statuses", Text), ARRAY(job_status))),
        ),
    ]


def _before() -> ColumnElement[Any]:
    """The keyset cursor: ids below it (every id when NULL)."""
    return func.coalesce(cast(bindparam("before"), BigInteger), _BIGGEST_ID)


# The lowest id among the ``scan`` jobs below the cursor: an index-only walk of the primary key
# that bounds how far one page may look for jobs matching its filters.
_scan = (
    select(jobs.c.id)
    .where(jobs.c.id < _before())
    .order_by(jobs.c.id.desc())
    .limit(bindparam("scan", type_=Integer))
    .subquery("scanned")
)
_scan_floor = select(func.min(_scan.c.id)).scalar_subquery()

# Newest first: the matching jobs among the ``scan`` below the cursor, at most ``limit``.
jobs_page = render(
    "dashboard_jobs_page",
    select(*JOB_COLUMNS)
    .where(jobs.c.id < _before(), jobs.c.id >= _scan_floor, *_filters())
    .order_by(jobs.c.id.desc())
    .limit(bindparam("limit", type_=Integer)),
)
# How far a scan of ``scan`` jobs below the cursor reaches: how many it found, and the lowest.
scan_floor = render(
    "dashboard_scan_floor",
    select(func.count().label("scanned"), func.min(_scan.c.id).label("floor")).select_from(_scan),
)

# The ids a bulk action on a filter takes: the newest ``limit`` matching jobs.
matching_job_ids = render(
    "dashboard_matching_job_ids",
    select(jobs.c.id)
    .where(*_filters())
    .order_by(jobs.c.id.desc())
    .limit(bindparam("limit", type_=Integer)),
)

# An upper bound of the number of jobs, from two probes of the primary key (ids come from a
# sequence: pruned jobs leave gaps, so the span never undercounts).
id_span = render(
    "dashboard_id_span",
    select(func.coalesce(func.max(jobs.c.id) - func.min(jobs.c.id) + 1, 0).label("span")),
)

# Jobs per (queue, status), counted on a sample of the table's blocks and scaled up: for tables
# too big to count on every page view.
_sample = jobs.tablesample(func.system(cast(bindparam("percent"), Float)), name="sampled")
sampled_counts = render(
    "dashboard_sampled_counts",
    select(_sample.c.queue, _sample.c.status, func.count().label("count")).group_by(
        _sample.c.queue, _sample.c.status
    ),
)

# Per queue, the age in seconds of the oldest job that waits and is due (the partial index of
# waiting jobs holds them: proportional to the jobs that wait, not to the table).
oldest_waiting = render(
    "dashboard_oldest_waiting",
    select(
        jobs.c.queue,
        func.count().label("waiting"),
        func.extract("epoch", func.now() - func.min(jobs.c.created_at)).label("age"),
    )
    .where(
        jobs.c.status == JobStatus.TODO,
        or_(jobs.c.scheduled_at.is_(None), jobs.c.scheduled_at <= func.now()),
    )
    .group_by(jobs.c.queue)
    .order_by(jobs.c.queue),
)

# Jobs finished in each of the last 60 minutes, by outcome.
_59_minutes = func.make_interval(0, 0, 0, 0, 0, 59)
_minute = func.date_trunc("minute", jobs.c.finished_at)
finished_per_minute = render(
    "dashboard_finished_per_minute",
    select(
        cast(func.extract("epoch", _minute), BigInteger).label("minute"),
        jobs.c.status,
        func.count().label("count"),
    )
    .where(
        jobs.c.finished_at
        >= func.date_trunc("minute", func.now()) - func.make_interval(0, 0, 0, 0, 0, 59)
    )
    .group_by(_minute, jobs.c.status),
)

# Running jobs per worker, from the partial index of running jobs.
running_per_worker = render(
    "dashboard_running_per_worker",
    select(jobs.c.worker_id, func.count().label("running"))
    .where(jobs.c.status.in_(RUNNING_STATUSES), jobs.c.worker_id.is_not(None))
    .group_by(jobs.c.worker_id),
)

# The last tick deferred of each periodic schedule, with its job.
_latest = (
    select(
        periodic_defers.c.task_name,
        periodic_defers.c.periodic_id,
        periodic_defers.c.defer_timestamp,
        periodic_defers.c.job_id,
        func.row_number()
        .over(
            partition_by=(periodic_defers.c.task_name, periodic_defers.c.periodic_id),
            order_by=periodic_defers.c.defer_timestamp.desc(),
        )
        .label("recency"),
    )
).subquery("ticks")
last_periodic_ticks = render(
    "dashboard_last_periodic_ticks",
    select(
        _latest.c.task_name,
        _latest.c.periodic_id,
        _latest.c.defer_timestamp,
        _latest.c.job_id,
        jobs.c.status,
    )
    .select_from(_latest.outerjoin(jobs, jobs.c.id == _latest.c.job_id))
    .where(_latest.c.recency == 1)
    .order_by(_latest.c.task_name, _latest.c.periodic_id),
)

# A workflow's page (revision 0010): its jobs counted by status, and its first ``limit`` jobs
# in id order (the order their steps were added), each with the ids of the jobs it runs
# after; both through the partial index of jobs by workflow.
_workflow = jobs.c.workflow_id == bindparam("workflow_id", type_=BigInteger)
workflow_counts = render(
    "dashboard_workflow_counts",
    select(jobs.c.status, func.count().label("count")).where(_workflow).group_by(jobs.c.status),
)
_parents = (
    select(job_dependencies.c.parent_id)
    .where(job_dependencies.c.job_id == jobs.c.id)
    .order_by(job_dependencies.c.parent_id)
    .scalar_subquery()
)
workflow_jobs = render(
    "dashboard_workflow_jobs",
    select(*JOB_COLUMNS, func.array(_parents).label("parent_ids"))
    .where(_workflow)
    .order_by(jobs.c.id)
    .limit(bindparam("limit", type_=Integer)),
)
# A job's neighbours in its workflow: the first ``limit`` jobs it runs after and the first
# ``limit`` that run after it, with their statuses (the dependencies' primary key and their
# index by parent).
_job = bindparam("job_id", type_=BigInteger)


def _neighbours(side: str, own: Any, other: Any) -> Any:
    return (
        select(other.label("id"), jobs.c.status, literal(side).label("side"))
        .join(jobs, jobs.c.id == other)
        .where(own == _job)
        .order_by(other)
        .limit(bindparam("limit", type_=Integer))
        .subquery(side)
        .select()
    )


job_links = render(
    "dashboard_job_links",
    union_all(
        _neighbours("parent", job_dependencies.c.job_id, job_dependencies.c.parent_id),
        _neighbours("dependent", job_dependencies.c.parent_id, job_dependencies.c.job_id),
    ),
)

ALL = (
    jobs_page,
    scan_floor,
    matching_job_ids,
    id_span,
    sampled_counts,
    oldest_waiting,
    finished_per_minute,
    running_per_worker,
    last_periodic_ticks,
    workflow_counts,
    workflow_jobs,
    job_links,
)
