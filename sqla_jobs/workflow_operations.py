"""The operations of workflows (see `sqla_jobs.operations`): defer one, read one, cancel one."""

from __future__ import annotations

from typing import Any

from . import queries
from .connectors.base import Row
from .errors import WorkflowNotFound
from .jobs import DEFAULT_MAX_ARGS_BYTES, Job, check_options, dump_args, dump_meta
from .operations import Fetch, Operation, _tags_literal
from .workflows import Plan, WorkflowInfo, WorkflowRun


def defer_workflow(
    plan: Plan, name: str | None, *, max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES
) -> Operation[WorkflowRun]:
    """Every step checked (nothing is written if one is bad), then the job ids reserved, then
    one statement that writes the workflow, its jobs and its dependencies."""
    specs = plan.specs
    args = []
    tags: list[str | None] = []
    metas: list[str | None] = []
    for spec in specs:
        check_options(spec)
        args.append(dump_args(spec.task_name, spec.args, max_args_bytes))
        tags.append(_tags_literal(spec.tags) if spec.tags else None)
        metas.append(dump_meta(spec.task_name, spec.meta) if spec.meta else None)
    rows: list[Row] = yield Fetch(queries.reserve_job_ids, {"count": len(specs)})
    ids = sorted(int(job_id) for job_id in rows[0]["ids"])
    params: dict[str, Any] = {
        "name": name,
        "ids": ids,
        "queues": [s.queue for s in specs],
        "task_names": [s.task_name for s in specs],
        "priorities": [s.priority for s in specs],
        "locks": [s.lock for s in specs],
        "args": args,
        "scheduled_ats": [s.scheduled_at for s in specs],
        "trace_contexts": [s.trace_context for s in specs],
        "tags": tags if any(tags) else None,
        "metas": metas if any(metas) else None,
        "parents_lefts": plan.parents_left(),
        "has_dependents": plan.has_dependents(),
        "edge_job_ids": [ids[job] for job, _, _ in plan.edges],
        "edge_parent_ids": [ids[parent] for _, parent, _ in plan.edges],
        "edge_policies": [policy for _, _, policy in plan.edges],
    }
    written: list[Row] = yield Fetch(queries.defer_workflow, params)
    return WorkflowRun(int(written[0]["workflow_id"]), tuple(ids))


def get_workflow(workflow_id: int) -> Operation[WorkflowInfo]:
    params = {"workflow_id": workflow_id}
    rows: list[Row] = yield Fetch(queries.get_workflow, params)
    if not rows:
        raise _not_found(workflow_id)
    job_rows: list[Row] = yield Fetch(queries.workflow_jobs, params)
    edges: list[Row] = yield Fetch(queries.workflow_dependencies, params)
    row = rows[0]
    return WorkflowInfo(
        id=int(row["id"]),
        name=row["name"],
        created_at=row["created_at"],
        jobs=[Job.from_row(job) for job in job_rows],
        dependencies=[
            (int(edge["job_id"]), int(edge["parent_id"]), edge["on_parent_failure"])
            for edge in edges
        ],
    )


def cancel_workflow(workflow_id: int, *, abort: bool = False) -> Operation[int]:
    """How many of its jobs were cancelled (and, with ``abort``, asked to abort)."""
    rows: list[Row] = yield Fetch(
        queries.cancel_workflow, {"workflow_id": workflow_id, "abort": abort}
    )
    if not rows:
        found: list[Row] = yield Fetch(queries.get_workflow, {"workflow_id": workflow_id})
        if not found:
            raise _not_found(workflow_id)
    return len(rows)


def _not_found(workflow_id: int) -> WorkflowNotFound:
    return WorkflowNotFound(
        f"No workflow with id {workflow_id}: it never existed, or its jobs were pruned "
        "(prune_jobs deletes a workflow with its last job). Find workflows through their "
        "jobs: Job.workflow_id, or list_jobs(workflow_id=...)."
    )


__all__ = ["cancel_workflow", "defer_workflow", "get_workflow"]
