"""The pages and the actions: each an operation (`sqla_jobs.operations`) that reads what it
shows through the job manager's statements and returns a `Response`, whichever framework and
driver serve it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import controls as ctl
from .. import operations as ops
from ..errors import JobNotFound, WorkflowNotFound
from ..operations import Operation
from ..periodic import PeriodicTask
from ..statuses import JobStatus
from . import operations as dash
from .http import Access, Request, Response, safe_back
from .render import page, throughput_svg

STATUSES = tuple(JobStatus)
#: The statuses each action applies to, for the buttons a job's page shows.
ACTION_STATUSES = {
    "retry": (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED),
    "cancel": (JobStatus.TODO, JobStatus.BLOCKED),
    "abort": (JobStatus.TODO, JobStatus.BLOCKED, JobStatus.DOING),
    "delete": tuple(s for s in JobStatus if s not in (JobStatus.DOING, JobStatus.ABORTING)),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    read_only: bool
    #: The most jobs an action on "all matching the filter" takes.
    bulk_limit: int
    page_size: int
    #: Seconds between refreshes of a visible page.
    refresh_seconds: float
    #: A worker silent this long is shown as stalled (the worker's ``stalled_timeout``).
    stalled_after: float
    periodic_tasks: Mapping[tuple[str, str], PeriodicTask]


def html(
    request: Request,
    config: Config,
    access: Access,
    template: str,
    status: int = 200,
    **values: Any,
) -> Response:
    body = page(
        template,
        root=request.root,
        can_act=access.may_act and not config.read_only,
        read_only=config.read_only,
        refresh=config.refresh_seconds,
        statuses=[s.value for s in STATUSES],
        **values,
    )
    return Response(status, body, headers=(("Cache-Control", "no-store"),))


def message(
    request: Request, config: Config, access: Access, status: int, title: str, text: str
) -> Response:
    return html(request, config, access, "message.html", status, title=title, text=text)


# -- pages -------------------------------------------------------------------------------------


def overview(request: Request, config: Config, access: Access) -> Operation[Response]:
    counts = yield from ops.job_counts()
    waiting = yield from ops.oldest_waiting()
    minutes = yield from dash.finished_per_minute()
    workers = yield from dash.workers()
    controls = yield from ctl.list_controls()
    by_wait = {row["queue"]: row for row in waiting}
    queue_controls = {c.name: c for c in controls if c.scope == ctl.QUEUE}
    queues = sorted(set(counts.by_queue) | set(by_wait) | set(queue_controls))
    rows = [
        {
            "queue": queue,
            "counts": {s.value: counts.by_queue.get(queue, {}).get(s, 0) for s in STATUSES},
            "due": by_wait.get(queue, {}).get("waiting", 0),
            "oldest": by_wait.get(queue, {}).get("age"),
            "paused": queue in queue_controls and queue_controls[queue].paused,
            "limits": describe_limits(queue_controls.get(queue)),
        }
        for queue in queues
    ]
    task_controls = [
        {"task": c.name, "paused": c.paused, "limits": describe_limits(c)}
        for c in controls
        if c.scope == ctl.TASK and c.controls_something
    ]
    totals = {s.value: sum(row["counts"][s.value] for row in rows) for s in STATUSES}
    live = [w for w in workers if w["heartbeat_age"] < config.stalled_after]
    finished = sum(sum(m["counts"].values()) for m in minutes)
    return html(
        request,
        config,
        access,
        "overview.html",
        rows=rows,
        task_controls=task_controls,
        totals=totals,
        estimated=counts.estimated,
        chart=throughput_svg(minutes),
        finished=finished,
        live_workers=live,
        workers=len(workers),
    )


def describe_limits(control: ctl.Control | None) -> str:
    """A queue's or task's limits in a few words ("at most 5 running, 100/s"), or ""."""
    if control is None:
        return ""
    limits = control.limits
    parts = []
    if limits.concurrency_limit is not None:
        parts.append(f"at most {limits.concurrency_limit} running")
    if limits.rate_limit is not None:
        parts.append(f"{limits.rate_limit} started")
    return ", ".join(parts)


class BadFilter(ValueError):
    """A filter the jobs list cannot read: its message says which and why."""


def filters_of(
    values: Mapping[str, Sequence[str]], get: Callable[[str], str | None]
) -> dash.Filters:
    """The jobs list's filters from query parameters or form fields (``get(name)``: the first
    value or None; ``values``: every value, for the statuses)."""
    statuses = []
    for value in values.get("status") or ():
        if value == "":
            continue
        try:
            statuses.append(JobStatus(value))
        except ValueError:
            raise BadFilter(f"status {value!r} is not a job status") from None
    job_id = get("id")
    if job_id is not None:
        job_id = job_id.strip().lstrip("#")
        if not job_id.isdigit() or int(job_id) >= 2**63:
            raise BadFilter(f"id {job_id!r} is not a job id (a whole number)")
    workflow_id = get("workflow")
    if workflow_id is not None:
        workflow_id = workflow_id.strip().lstrip("#")
        if not workflow_id.isdigit() or int(workflow_id) >= 2**63:
            raise BadFilter(f"workflow {workflow_id!r} is not a workflow id (a whole number)")
    return dash.Filters(
        statuses=tuple(dict.fromkeys(statuses)),
        queue=get("queue"),
        task_name=get("task"),
        lock=get("lock"),
        queueing_lock=get("queueing_lock"),
        tag=get("tag"),
        job_id=int(job_id) if job_id is not None else None,
        workflow_id=int(workflow_id) if workflow_id is not None else None,
    )


def filter_values(filters: dash.Filters) -> dict[str, Any]:
    """The filters as the query parameters that give them."""
    return {
        "status": [s.value for s in filters.statuses],
        "queue": filters.queue,
        "task": filters.task_name,
        "lock": filters.lock,
        "queueing_lock": filters.queueing_lock,
        "tag": filters.tag,
        "id": filters.job_id,
        "workflow": filters.workflow_id,
    }


def jobs_list(request: Request, config: Config, access: Access) -> Operation[Response]:
    try:
        filters = filters_of(request.query, request.arg)
        before_text = request.arg("before")
        if before_text is not None and not before_text.isdigit():
            raise BadFilter(f"before {before_text!r} is not a job id")
        before = int(before_text) if before_text is not None else None
    except BadFilter as exc:
        return message(request, config, access, 400, "Bad filter", str(exc))
    result = yield from dash.jobs_page(filters, before=before, limit=config.page_size)
    values = filter_values(filters)
    return html(
        request,
        config,
        access,
        "jobs.html",
        jobs=result.jobs,
        filters=values,
        filtered=not filters.empty,
        before=before,
        next_before=result.next_before,
        scanned_out=result.scanned_out,
        scan=dash.PAGE_SCAN,
        bulk_limit=config.bulk_limit,
        actions=dash.ACTIONS,
    )


def job_page(request: Request, config: Config, access: Access, job_id: int) -> Operation[Response]:
    try:
        job = yield from ops.get_job(job_id)
        history = yield from ops.job_history(job_id)
    except JobNotFound as exc:
        return message(request, config, access, 404, f"No job {job_id}", str(exc))
    workers = yield from dash.workers()
    worker = next((w for w in workers if w["id"] == job.worker_id), None)
    actions = [name for name, allowed in ACTION_STATUSES.items() if job.status in allowed]
    links = (yield from dash.job_links(job_id)) if job.workflow_id is not None else None
    return html(
        request,
        config,
        access,
        "job.html",
        job=job,
        history=history,
        worker=worker,
        actions=actions,
        links=links,
        links_limit=dash.JOB_LINKS,
    )


def workflow_page(
    request: Request, config: Config, access: Access, workflow_id: int
) -> Operation[Response]:
    try:
        workflow = yield from dash.workflow_page(workflow_id)
    except WorkflowNotFound as exc:
        return message(request, config, access, 404, f"No workflow {workflow_id}", str(exc))
    return html(
        request,
        config,
        access,
        "workflow.html",
        workflow=workflow,
        counts=[
            (status.value, workflow.counts[status])
            for status in STATUSES
            if status in workflow.counts
        ],
        limit=dash.WORKFLOW_PAGE_JOBS,
        bulk_limit=config.bulk_limit,
    )


def workers_page(request: Request, config: Config, access: Access) -> Operation[Response]:
    workers = yield from dash.workers()
    return html(
        request, config, access, "workers.html", workers=workers, stalled=config.stalled_after
    )


def periodic_page(request: Request, config: Config, access: Access) -> Operation[Response]:
    ticks = yield from dash.last_periodic_ticks()
    last = {(row["task_name"], row["periodic_id"]): row for row in ticks}
    now = time.time()
    rows = []
    for key in sorted(set(config.periodic_tasks) | set(last)):
        periodic = config.periodic_tasks.get(key)
        tick = last.get(key)
        rows.append(
            {
                "task": key[0],
                "periodic_id": key[1],
                "cron": periodic.cron if periodic else None,
                "last": tick["defer_timestamp"] if tick else None,
                "job_id": tick["job_id"] if tick else None,
                "status": tick["status"] if tick else None,
                "next": periodic.next_tick(now) if periodic else None,
            }
        )
    return html(request, config, access, "periodic.html", rows=rows)


# -- actions -----------------------------------------------------------------------------------


def action(request: Request, config: Config, access: Access) -> Operation[Response]:
    """POST: an action on the jobs given by id, or on every job matching a filter (after a
    confirmation stating how many)."""
    name = request.field("action")
    if name in PAUSE_ACTIONS:
        return (yield from pause_action(request, config, access, name))
    if name not in dash.ACTIONS:
        return message(request, config, access, 400, "Unknown action", f"{name!r} is no action.")
    back = safe_back(request.field("back"))
    if request.field("scope") == "matching":
        try:
            filters = filters_of(request.form, request.field)
        except BadFilter as exc:
            return message(request, config, access, 400, "Bad filter", str(exc))
        ids = yield from dash.matching_job_ids(filters, config.bulk_limit + 1)
        over = len(ids) > config.bulk_limit
        ids = ids[: config.bulk_limit]
        if request.field("confirmed") != "yes":
            return html(
                request,
                config,
                access,
                "confirm.html",
                action=name,
                count=len(ids),
                over=over,
                bulk_limit=config.bulk_limit,
                filters=filter_values(filters),
                back=back,
            )
    else:
        try:
            ids = sorted({int(v) for v in request.form.get("ids") or () if v}, reverse=True)
        except ValueError:
            return message(request, config, access, 400, "Bad job id", "Job ids are numbers.")
        if not ids:
            return message(
                request, config, access, 400, "No job selected", "Select jobs, then an action."
            )
        if len(ids) > config.bulk_limit:
            return message(
                request,
                config,
                access,
                400,
                "Too many jobs",
                f"At most {config.bulk_limit:,} jobs per action.",
            )
    result = yield from dash.act(name, ids)
    return html(request, config, access, "result.html", result=result, back=back)


#: Actions on a queue or a task rather than on jobs: (scope, paused).
PAUSE_ACTIONS = {
    "pause_queue": (ctl.QUEUE, True),
    "resume_queue": (ctl.QUEUE, False),
    "pause_task": (ctl.TASK, True),
    "resume_task": (ctl.TASK, False),
}


def pause_action(
    request: Request, config: Config, access: Access, name: str
) -> Operation[Response]:
    """POST: pause or resume the queue (or task) named by the ``name`` field."""
    scope, paused = PAUSE_ACTIONS[name]
    target = request.field("name")
    if not target:
        return message(request, config, access, 400, f"No {scope}", f"Name the {scope}.")
    yield from ctl.set_paused(scope, target, paused)
    what = "paused: no worker starts its jobs" if paused else "resumed: workers start its jobs"
    return message(
        request, config, access, 200, f"{scope.capitalize()} {target}", f"{target} {what}."
    )
