"""``sqla-jobs workflows ...``: show a workflow's jobs and their state, cancel what has not
started.

A thin shell over `JobManager.get_workflow` and `cancel_workflow`, registered by
`sqla_jobs.cli` with `add_workflows_commands`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..manager import JobManager
from ..statuses import JobStatus
from ..workflows import WorkflowInfo
from .common import build_app, subparser
from .jobs import error_summary, job_id, table, when

Command = Callable[[JobManager, argparse.Namespace], int]


def status_summary(info: WorkflowInfo) -> str:
    """``3 succeeded, 1 doing, 2 blocked``: the workflow's jobs counted by status, in the
    statuses' order."""
    counts = info.counts
    return ", ".join(f"{counts[s]} {s.value}" for s in JobStatus if counts.get(s))


def workflow_details(info: WorkflowInfo) -> str:
    """The workflow's fields, then one line per job with the jobs it runs after."""
    parents: dict[int, list[int]] = {}
    runs_anyway: set[tuple[int, int]] = set()
    for child_id, parent_id, on_parent_failure in info.dependencies:
        parents.setdefault(child_id, []).append(parent_id)
        if on_parent_failure == "run":
            runs_anyway.add((child_id, parent_id))
    state = info.status + (" (every job succeeded)" if info.succeeded else "")
    lines = [
        f"workflow  {info.id}" + (f" ({info.name})" if info.name else ""),
        f"created   {when(info.created_at)}",
        f"state     {state}: {status_summary(info) or 'no jobs left'}",
        "",
    ]
    rows = []
    for job in info.jobs:
        after = [
            f"{parent}{'*' if (job.id, parent) in runs_anyway else ''}"
            for parent in sorted(parents.get(job.id, ()))
        ]
        rows.append(
            (
                str(job.id),
                job.task_name,
                job.status.value,
                ",".join(after) or "-",
                when(job.finished_at or job.started_at),
                error_summary(job.last_error),
            )
        )
    headers = ("ID", "TASK", "STATUS", "AFTER", "STARTED/FINISHED", "LAST ERROR")
    lines += table(headers, rows).splitlines()
    if runs_anyway:
        lines += ["", "* runs even if that parent fails or is cancelled (on_parent_failure='run')"]
    return "\n".join(lines)


def cmd_show(manager: JobManager, args: argparse.Namespace) -> int:
    print(workflow_details(manager.get_workflow(args.workflow_id)))
    return 0


def cmd_cancel(manager: JobManager, args: argparse.Namespace) -> int:
    cancelled = manager.cancel_workflow(args.workflow_id)
    info = manager.get_workflow(args.workflow_id)
    running = sum(1 for job in info.jobs if job.status in (JobStatus.DOING, JobStatus.ABORTING))
    jobs = "job" if cancelled == 1 else "jobs"
    text = f"Cancelled {cancelled} {jobs} of workflow {args.workflow_id} (those not started)."
    if running:
        text += (
            f" {running} running: left to end (`sqla-jobs jobs abort ID` stops one); what "
            "depends on them is cancelled already."
        )
    print(text)
    return 0


def add_workflows_commands(commands: Any) -> None:
    """Add ``workflows`` and its actions to the command line's subcommands."""
    workflows = commands.add_parser(
        "workflows",
        help="Show a workflow's jobs and their state, or cancel it.",
        description="Show a workflow's jobs and their state, or cancel it.",
    )
    actions = workflows.add_subparsers(dest="workflows_command", metavar="ACTION", required=True)

    def add(name: str, description: str, command: Command) -> None:
        def handler(args: argparse.Namespace) -> int:
            app = build_app(args)
            with app.open():
                return command(app.job_manager, args)

        action = subparser(actions, name, description, handler)
        action.add_argument("workflow_id", metavar="ID", type=job_id)

    add("show", "Show a workflow: its jobs, their state, what each runs after.", cmd_show)
    add("cancel", "Cancel a workflow's jobs that have not started.", cmd_cancel)
