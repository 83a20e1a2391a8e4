"""Workflows: deferring jobs with dependencies in one statement, reading and cancelling them,
and the results a dependent job reads of its parents."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from ..schema import JobStatus, job_dependencies, jobs, workflows
from ..statuses import WAITING_STATUSES
from ._build import JOB_COLUMNS, array_param, render, status_literal, step_time

_workflow_id = bindparam("workflow_id", type_=BigInteger)

# -- defer -------------------------------------------------------------------------------------

# One statement writes the workflow, its jobs and their dependencies, whatever their number:
# every column travels as an array. The job ids were reserved first (`reserve_job_ids`), so the
# caller knows each edge's ends before anything is written. A step without parents is todo; the
# others are blocked, with their count of parents.
_workflow = (
    insert(workflows)
    .values(name=bindparam("name", type_=Text))
    .returning(workflows.c.id, workflows.c.created_at)
    .cte("workflow")
)
_STEP_COLUMNS = (
    "id",
    "queue",
    "task_name",
    "priority",
    "lock",
    "args",
    "scheduled_at",
    "trace_context",
    "tags",
    "meta",
    "parents_left",
    "has_dependents",
)
_steps = (
    func.unnest(
        array_param("ids", BigInteger),
        array_param("queues", Text),
        array_param("task_names", Text),
        array_param("priorities", Integer),
        array_param("locks", Text),
        cast(array_param("args", Text), ARRAY(JSONB)),
        array_param("scheduled_ats", DateTime),
        array_param("trace_contexts", Text),
        array_param("tags", Text),
        array_param("metas", Text),
        array_param("parents_lefts", Integer),
        cast(bindparam("has_dependents"), ARRAY(Boolean())),
    )
    .table_valued(*_STEP_COLUMNS)
    .render_derived(name="step")
)
_written_jobs = (
    insert(jobs)
    .from_select(
        [*_STEP_COLUMNS, "status", "workflow_id"],
        select(
            _steps.c.id,
            _steps.c.queue,
            _steps.c.task_name,
            _steps.c.priority,
            _steps.c.lock,
            _steps.c.args,
            _steps.c.scheduled_at,
            _steps.c.trace_context,
            cast(_steps.c.tags, ARRAY(Text)),
            cast(_steps.c.meta, JSONB),
            _steps.c.parents_left,
            _steps.c.has_dependents,
            case(
                (_steps.c.parents_left.is_(None), status_literal(JobStatus.TODO)),
                else_=status_literal(JobStatus.BLOCKED),
            ),
            select(_workflow.c.id).scalar_subquery(),
        ),
    )
    .returning(jobs.c.id)
    .cte("written_jobs")
)
_edges = (
    func.unnest(
        array_param("edge_job_ids", BigInteger),
        array_param("edge_parent_ids", BigInteger),
        array_param("edge_policies", Text),
    )
    .table_valued("job_id", "parent_id", "on_parent_failure")
    .render_derived(name="edge")
)
_written_edges = (
    insert(job_dependencies)
    .from_select(
        ["job_id", "parent_id", "on_parent_failure"],
        select(_edges.c.job_id, _edges.c.parent_id, _edges.c.on_parent_failure),
    )
    .returning(job_dependencies.c.job_id)
    .cte("written_edges")
)
defer_workflow = render(
    "defer_workflow",
    select(_workflow.c.id.label("workflow_id"), _workflow.c.created_at)
    .add_cte(_written_jobs)
    .add_cte(_written_edges),
)

# -- reading -----------------------------------------------------------------------------------

get_workflow = render(
    "get_workflow",
    select(workflows.c.id, workflows.c.name, workflows.c.created_at).where(
        workflows.c.id == _workflow_id
    ),
)
# Its jobs in id order (the order their steps were added), through the workflow_id index.
workflow_jobs = render(
    "workflow_jobs",
    select(*JOB_COLUMNS, jobs.c.unique_key)
    .where(jobs.c.workflow_id == _workflow_id)
    .order_by(jobs.c.id),
)
workflow_dependencies = render(
    "workflow_dependencies",
    select(
        job_dependencies.c.job_id,
        job_dependencies.c.parent_id,
        job_dependencies.c.on_parent_failure,
    )
    .where(
        job_dependencies.c.job_id.in_(select(jobs.c.id).where(jobs.c.workflow_id == _workflow_id))
    )
    .order_by(job_dependencies.c.job_id, job_dependencies.c.parent_id),
)

# What the worker reads for the jobs of a claimed batch that have parents, in one statement:
# each parent's task, status and result (as text, decoded by the worker), by job and parent id.
parent_results = render(
    "parent_results",
    select(
        job_dependencies.c.job_id,
        jobs.c.id.label("parent_id"),
        jobs.c.task_name,
        jobs.c.status,
        cast(jobs.c.result, Text).label("result"),
    )
    .join_from(job_dependencies, jobs, jobs.c.id == job_dependencies.c.parent_id)
    .where(job_dependencies.c.job_id == func.any(array_param("job_ids", BigInteger)))
    .order_by(job_dependencies.c.job_id, job_dependencies.c.parent_id),
)

# -- cancel ------------------------------------------------------------------------------------

# The jobs of a workflow that have not started are cancelled; with ``abort``, running ones are
# asked to abort (their worker is told, as by abort_job). The cancelled jobs' triggers find
# their dependents already cancelled by this statement.
cancel_workflow = render(
    "cancel_workflow",
    update(jobs)
    .where(
        jobs.c.workflow_id == _workflow_id,
        jobs.c.status.in_(WAITING_STATUSES)
        | ((jobs.c.status == JobStatus.DOING) & cast(bindparam("abort"), Boolean).is_(True)),
    )
    .values(
        status=case(
            (jobs.c.status == JobStatus.DOING, status_literal(JobStatus.ABORTING)),
            else_=status_literal(JobStatus.CANCELLED),
        ),
        finished_at=case((jobs.c.status == JobStatus.DOING, null()), else_=step_time()),
    )
    .returning(jobs.c.id, jobs.c.status),
)
