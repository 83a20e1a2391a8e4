"""What the dashboard reads and does, as operations (`sqla_jobs.operations`): generators that
yield their statements, driven by the app's job manager on its connector, sync or async.

The job manager's own operations do the rest (`get_job`, `job_history`, `count_jobs`,
`list_workers`, and the four actions on many jobs at once, `act_on_jobs`); the overview's
counts and oldest waiting jobs are shared with the metrics (`job_counts`, `oldest_waiting`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from .. import operations as ops
from .. import queries
from ..connectors.base import Row
from ..errors import JobNotFound, WorkflowNotFound
from ..jobs import Job
from ..operations import Fetch, Operation
from ..statuses import JobStatus

#: How many jobs one page of the jobs list looks through, at most, for jobs matching its
#: filters: a page of a rare status on millions of jobs stays bounded (a "look further" link
#: continues below).
PAGE_SCAN = 50_000

ACTIONS = ("retry", "cancel", "abort", "delete")


@dataclasses.dataclass(frozen=True, slots=True)
class Filters:
    """The jobs list's filters; None leaves a filter out."""

    statuses: tuple[JobStatus, ...] = ()
    queue: str | None = None
    task_name: str | None = None
    lock: str | None = None
    queueing_lock: str | None = None
    job_id: int | None = None
    #: Jobs carrying this tag (``configure(tags=[...])``).
    tag: str | None = None
    #: Jobs of this workflow.
    workflow_id: int | None = None

    def params(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "task_name": self.task_name,
            "lock": self.lock,
            "queueing_lock": self.queueing_lock,
            "job_id": self.job_id,
            "tag": self.tag,
            "workflow_id": self.workflow_id,
            "statuses": [s.value for s in self.statuses] or None,
        }

    @property
    def empty(self) -> bool:
        return self == Filters()


def finished_per_minute(now: float | None = None) -> Operation[list[dict[str, Any]]]:
    """The last 60 minutes, oldest first: each minute's start (unix seconds) and its finished
    jobs, by status."""
    rows: list[Row] = yield Fetch(queries.dashboard_finished_per_minute)
    current = int((time.time() if now is None else now) // 60 * 60)
    minutes = [current - 60 * back for back in range(59, -1, -1)]
    counts: dict[int, dict[str, int]] = {minute: {} for minute in minutes}
    for row in rows:
        minute = int(row["minute"])
        if minute in counts:
            counts[minute][str(row["status"])] = int(row["count"])
    return [{"minute": minute, "counts": counts[minute]} for minute in minutes]


def workers() -> Operation[list[dict[str, Any]]]:
    """Registered workers, each with ``running``: the jobs it holds."""
    found = yield from ops.list_workers()
    rows: list[Row] = yield Fetch(queries.dashboard_running_per_worker)
    running = {int(row["worker_id"]): int(row["running"]) for row in rows}
    return [{**worker, "running": running.get(int(worker["id"]), 0)} for worker in found]


def last_periodic_ticks() -> Operation[list[Row]]:
    rows: list[Row] = yield Fetch(queries.dashboard_last_periodic_ticks)
    return rows


@dataclasses.dataclass(frozen=True, slots=True)
class JobsPage:
    """One page of the jobs list, newest first; ``next_before`` is the cursor of the next page
    (None on the last), ``scanned_out`` tells that the page stopped at its scan bound."""

    jobs: list[Job]
    next_before: int | None
    scanned_out: bool


def jobs_page(
    filters: Filters, *, before: int | None, limit: int, scan: int | None = None
) -> Operation[JobsPage]:
    scan = PAGE_SCAN if scan is None else scan
    if filters.job_id is not None:
        # One job, by its primary key: wherever it is in the table.
        try:
            job = yield from ops.get_job(filters.job_id)
        except JobNotFound:
            return JobsPage([], None, False)
        matches = dataclasses.replace(filters, job_id=None)
        keep = _matches(job, matches) and (before is None or job.id < before)
        return JobsPage([job] if keep else [], None, False)
    params = {**filters.params(), "before": before, "limit": limit + 1, "scan": scan}
    rows: list[Row] = yield Fetch(queries.dashboard_jobs_page, params)
    found = [Job.from_row(row) for row in rows]
    if len(found) > limit:
        return JobsPage(found[:limit], found[limit - 1].id, False)
    # Short: no job below matches, or the scan stopped at its bound first (the scan one job
    # longer finds more than ``scan``): the next page then starts right below the scan.
    reach: list[Row] = yield Fetch(
        queries.dashboard_scan_floor, {"before": before, "scan": scan + 1}
    )
    if not reach or int(reach[0]["scanned"]) <= scan:
        return JobsPage(found, None, False)
    return JobsPage(found, int(reach[0]["floor"]) + 1, True)


def _matches(job: Job, filters: Filters) -> bool:
    return (
        (not filters.statuses or job.status in filters.statuses)
        and filters.queue in (None, job.queue)
        and filters.task_name in (None, job.task_name)
        and filters.lock in (None, job.lock)
        and filters.queueing_lock in (None, job.queueing_lock)
        and (filters.tag is None or filters.tag in job.tags)
        and filters.workflow_id in (None, job.workflow_id)
    )


def matching_job_ids(filters: Filters, limit: int) -> Operation[list[int]]:
    """The newest ``limit`` jobs matching ``filters``, by id."""
    params = {**filters.params(), "limit": limit}
    rows: list[Row] = yield Fetch(queries.dashboard_matching_job_ids, params)
    return [int(row["id"]) for row in rows]


#: What an action did to a set of jobs (done, skipped, gone, refused with the reason).
ActionResult = ops.BulkResult


def act(action: str, job_ids: Sequence[int]) -> Operation[ActionResult]:
    """Apply ``action`` to the jobs, all at once, by the job manager's rules for it."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    return (yield from ops.act_on_jobs(action, job_ids))


# -- workflows ---------------------------------------------------------------------------------

#: The most jobs a workflow's page lists (the jobs list, filtered by the workflow, pages on).
WORKFLOW_PAGE_JOBS = 500
#: The most neighbours of each side a job's page lists.
JOB_LINKS = 50


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowPage:
    """A workflow on its page: its row, its jobs counted by status, and its first jobs (id
    order), each with the ids of the jobs it runs after."""

    id: int
    name: str | None
    created_at: Any
    counts: dict[JobStatus, int]
    jobs: list[tuple[Job, list[int]]]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def running(self) -> bool:
        """Some job has not ended yet."""
        return any(not status.is_finished for status in self.counts)


def workflow_page(workflow_id: int, limit: int = WORKFLOW_PAGE_JOBS) -> Operation[WorkflowPage]:
    """`WorkflowNotFound` if there is no such workflow."""
    rows: list[Row] = yield Fetch(queries.get_workflow, {"workflow_id": workflow_id})
    if not rows:
        raise WorkflowNotFound(
            f"No workflow with id {workflow_id}: it never existed, or its jobs were pruned "
            "(prune_jobs deletes a workflow with its last job)."
        )
    params = {"workflow_id": workflow_id}
    counted: list[Row] = yield Fetch(queries.dashboard_workflow_counts, params)
    found: list[Row] = yield Fetch(queries.dashboard_workflow_jobs, {**params, "limit": limit})
    return WorkflowPage(
        id=workflow_id,
        name=rows[0]["name"],
        created_at=rows[0]["created_at"],
        counts={JobStatus(row["status"]): int(row["count"]) for row in counted},
        jobs=[(Job.from_row(row), [int(i) for i in row["parent_ids"]]) for row in found],
    )


@dataclasses.dataclass(frozen=True, slots=True)
class JobLinks:
    """A job's neighbours in its workflow, each an (id, status) pair; at most `JOB_LINKS` of
    each side."""

    parents: list[tuple[int, JobStatus]]
    dependents: list[tuple[int, JobStatus]]


def job_links(job_id: int, limit: int = JOB_LINKS) -> Operation[JobLinks]:
    rows: list[Row] = yield Fetch(queries.dashboard_job_links, {"job_id": job_id, "limit": limit})
    sides: dict[str, list[tuple[int, JobStatus]]] = {"parent": [], "dependent": []}
    for row in rows:
        sides[row["side"]].append((int(row["id"]), JobStatus(row["status"])))
    return JobLinks(sides["parent"], sides["dependent"])
