"""``sqla-jobs jobs ...``: list, inspect, count, retry, cancel, abort, delete and prune jobs.

A thin shell over `JobManager`'s management methods, registered by `sqla_jobs.cli` with
`add_jobs_commands`. Tables are plain aligned text for people; a job in the wrong status for a
command is one line on stderr and exit status 1, like every other error of the command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import JobsError
from ..jobs import Job
from ..manager import PRUNABLE_STATUSES, JobEvent, JobManager
from ..statuses import JobStatus
from .common import build_app, int_at_least, subparser

Command = Callable[[JobManager, argparse.Namespace], int]

_ERROR_WIDTH = 72
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_STATUSES = {status.value: status for status in JobStatus}
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class JobStateError(JobsError):
    """The job exists but its status does not allow the command (e.g. cancelling a running
    job): reported as one line, exit status 1."""


# -- argument types ----------------------------------------------------------------------------


def job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job id; job ids are whole numbers (see `sqla-jobs jobs list`)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"job ids start at 1, not {value}")
    return value


def duration(text: str) -> datetime.timedelta:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or a sum of them (``1d12h``)."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give a number and a unit (s, m, h, d, w), e.g. 7d, "
            "12h, 30m or 1d12h"
        )
    return datetime.timedelta(**_sum_units(parts))


def format_duration(value: datetime.timedelta) -> str:
    """``1d12h``-style text for a duration (the form `duration` reads)."""
    seconds = value.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count:g}{unit}")
    if seconds or not parts:
        parts.append(f"{round(seconds, 3):g}s")
    return "".join(parts)


def _sum_units(parts: list[tuple[str, str]]) -> dict[str, float]:
    amounts: dict[str, float] = {}
    for number, unit in parts:
        amounts[_UNITS[unit]] = amounts.get(_UNITS[unit], 0.0) + float(number)
    return amounts


def status_list(allowed: Sequence[JobStatus]) -> Callable[[str], list[JobStatus]]:
    """An argument type reading ``--status a`` or ``--status a,b`` among ``allowed``."""
    names = ", ".join(status.value for status in allowed)

    def parse(text: str) -> list[JobStatus]:
        found = []
        for name in text.split(","):
            status = _STATUSES.get(name.strip().lower())
            if status not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{name.strip()!r} is not one of {names}; repeat --status or separate "
                    "statuses with commas, e.g. --status failed,aborted"
                )
            assert status is not None
            found.append(status)
        return found

    return parse


def chosen(values: Sequence[list[JobStatus]] | None) -> list[JobStatus]:
    """The statuses of every ``--status``, in order, without duplicates."""
    return list(dict.fromkeys(status for value in values or () for status in value))


# -- formatting --------------------------------------------------------------------------------


def when(moment: datetime.datetime | None) -> str:
    """A timestamp in UTC to the second, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def error_summary(error: str | None, width: int = _ERROR_WIDTH) -> str:
    """One line for an error: a traceback's last line (the exception), else the first line;
    cut to ``width`` characters."""
    if not error:
        return ""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _time_cell(job: Job) -> str:
    if job.scheduled_at is not None and job.status is JobStatus.TODO:
        return f"runs {when(job.scheduled_at)}"
    return f"created {when(job.created_at)}"


def jobs_table(jobs: Sequence[Job]) -> str:
    """One line per job; a TAGS column when some job has tags."""
    with_tags = any(job.tags for job in jobs)
    headers: tuple[str, ...] = ("ID", "QUEUE", "TASK", "STATUS", "ATTEMPTS", "SCHEDULED/CREATED")
    headers += ("TAGS", "LAST ERROR") if with_tags else ("LAST ERROR",)
    rows = [
        (
            str(job.id),
            job.queue,
            job.task_name,
            job.status.value,
            str(job.attempts),
            _time_cell(job),
            *((",".join(job.tags) or "-",) if with_tags else ()),
            error_summary(job.last_error),
        )
        for job in jobs
    ]
    return table(headers, rows)


def job_details(job: Job, history: Sequence[JobEvent]) -> str:
    fields = [
        ("id", str(job.id)),
        ("task", job.task_name),
        ("queue", job.queue),
        ("status", job.status.value),
        (
            "args",
            json.dumps(job.args, ensure_ascii=False)
            if job.args_error is None
            else f"unreadable: {job.args_error}",
        ),
        ("priority", str(job.priority)),
        ("lock", job.lock or "-"),
        ("queueing lock", job.queueing_lock or "-"),
        ("attempts", str(job.attempts)),
        ("created", when(job.created_at)),
        ("scheduled", when(job.scheduled_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("worker id", "-" if job.worker_id is None else str(job.worker_id)),
    ]
    if job.workflow_id is not None:
        fields.append(
            ("workflow", f"{job.workflow_id} (sqla-jobs workflows show {job.workflow_id})")
        )
    if job.tags:
        fields.append(("tags", ", ".join(job.tags)))
    if job.meta:
        fields.append(("meta", json.dumps(dict(job.meta), ensure_ascii=False)))
    if job.unique_key:
        fields.append(("unique key", job.unique_key))
    if job.result is not None:
        fields.append(("result", json.dumps(job.result, ensure_ascii=False)))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines += ["", "history (oldest first):"]
    events = [("", when(e.at), e.label, error_summary(e.error)) for e in history]
    lines += table(("", "AT", "STATUS", "ERROR"), events).splitlines()[1:]
    if job.last_error:
        lines += ["", "last error:"]
        lines += [f"  {line}" for line in job.last_error.rstrip().splitlines()]
    return "\n".join(lines)


def counts_table(counts: dict[tuple[str, JobStatus], int]) -> str:
    queues = sorted({queue for queue, _ in counts})
    headers = ("QUEUE", *(status.value for status in JobStatus), "TOTAL")
    rows = []
    for queue in [*queues, None]:
        cells = [
            sum(n for (q, s), n in counts.items() if s is status and queue in (None, q))
            for status in JobStatus
        ]
        rows.append((queue or "(all)", *map(str, cells), str(sum(cells))))
    return table(headers, rows)


# -- commands ----------------------------------------------------------------------------------


def cmd_list(manager: JobManager, args: argparse.Namespace) -> int:
    found = manager.list_jobs(
        queue=args.queue,
        task_name=args.task,
        status=chosen(args.status) or None,
        lock=args.lock,
        tags=args.tag,
        workflow_id=args.workflow,
        limit=args.limit,
        offset=args.offset,
    )
    if not found:
        print("No jobs." if args.offset == 0 else "No jobs past that offset.")
        return 0
    print(jobs_table(found))
    if len(found) == args.limit:
        print(
            f"(the {args.limit} newest; --limit N shows more, --offset {args.offset + args.limit} "
            "the next ones)",
            file=sys.stderr,
        )
    return 0


def cmd_show(manager: JobManager, args: argparse.Namespace) -> int:
    job = manager.get_job(args.job_id)
    print(job_details(job, manager.get_job_history(args.job_id)))
    return 0


def cmd_counts(manager: JobManager, args: argparse.Namespace) -> int:
    counts = manager.count_jobs(tags=args.tag)
    print(counts_table(counts) if counts else "No jobs.")
    return 0


def cmd_retry(manager: JobManager, args: argparse.Namespace) -> int:
    if not manager.retry_job(args.job_id):
        status = manager.get_job(args.job_id).status
        raise JobStateError(
            f"The status of job {args.job_id} is {status.value}: only failed, cancelled or "
            "aborted jobs can be retried."
        )
    print(f"Job {args.job_id} is back in the queue (todo).")
    return 0


def cmd_cancel(manager: JobManager, args: argparse.Namespace) -> int:
    if not manager.cancel_job(args.job_id):
        status = manager.get_job(args.job_id).status
        hint = (
            f"; `sqla-jobs jobs abort {args.job_id}` asks its worker to stop it"
            if status is JobStatus.DOING
            else ""
        )
        raise JobStateError(
            f"The status of job {args.job_id} is {status.value}: only jobs that have not "
            f"started (todo, or blocked in a workflow) can be cancelled{hint}."
        )
    print(f"Job {args.job_id} cancelled.")
    return 0


def cmd_abort(manager: JobManager, args: argparse.Namespace) -> int:
    status = manager.abort_job(args.job_id)
    if status is JobStatus.CANCELLED:
        # It was waiting and is cancelled now, or it had been cancelled before.
        print(f"Job {args.job_id} is cancelled: it will not run.")
    elif status is JobStatus.ABORTING:
        print(
            f"Job {args.job_id} is aborting: its worker stops it and records it aborted "
            f"(follow with `sqla-jobs jobs show {args.job_id}`)."
        )
    else:
        raise JobStateError(
            f"Job {args.job_id} already finished ({status.value}): nothing to abort."
        )
    return 0


def cmd_delete(manager: JobManager, args: argparse.Namespace) -> int:
    if not manager.delete_job(args.job_id):
        raise JobStateError(
            f"Job {args.job_id} is running: abort it first (`sqla-jobs jobs abort "
            f"{args.job_id}`), then delete it once it has stopped."
        )
    print(f"Job {args.job_id} deleted, with its history.")
    return 0


def cmd_prune(manager: JobManager, args: argparse.Namespace) -> int:
    selected = chosen(args.status) or list(PRUNABLE_STATUSES)
    deleted = manager.prune_jobs(args.older_than, statuses=selected, batch_size=args.batch_size)
    names = ", ".join(status.value for status in selected)
    age = format_duration(args.older_than)
    jobs = "job" if deleted == 1 else "jobs"
    print(f"Deleted {deleted} {jobs} ({names}) that finished more than {age} ago.")
    return 0


# -- the parser --------------------------------------------------------------------------------


def add_tag_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="only jobs having this tag; repeat it for jobs having all of them",
    )


def add_jobs_commands(commands: Any) -> None:
    """Add ``jobs`` and its actions to the command line's subcommands."""
    jobs = commands.add_parser(
        "jobs",
        help="List, inspect, retry, cancel, abort, delete or prune jobs.",
        description="List, inspect, retry, cancel, abort, delete or prune jobs.",
    )
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    def add(name: str, description: str, command: Command) -> argparse.ArgumentParser:
        def handler(args: argparse.Namespace) -> int:
            app = build_app(args)
            with app.open():
                return command(app.job_manager, args)

        return subparser(actions, name, description, handler)

    listing = add("list", "List jobs, newest first, with their last error.", cmd_list)
    listing.add_argument("--queue", help="only jobs of this queue")
    listing.add_argument("--task", help="only jobs of this task (its name)")
    listing.add_argument(
        "--status",
        action="append",
        type=status_list(list(JobStatus)),
        metavar="STATUS",
        help="only jobs in these statuses, comma-separated and/or repeated: "
        + ", ".join(status.value for status in JobStatus),
    )
    listing.add_argument("--lock", help="only jobs holding this lock")
    listing.add_argument(
        "--workflow", type=job_id, metavar="ID", help="only jobs of this workflow (its id)"
    )
    add_tag_filter(listing)
    listing.add_argument(
        "--limit",
        type=int_at_least(1),
        default=50,
        metavar="N",
        help="at most N jobs (default: 50)",
    )
    listing.add_argument(
        "--offset",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="skip the N newest (default: 0)",
    )

    show = add("show", "Show a job's fields, its history and its last error.", cmd_show)
    show.add_argument("job_id", metavar="ID", type=job_id)

    add_tag_filter(add("counts", "Count jobs per queue and status.", cmd_counts))

    for name, description, command in (
        (
            "retry",
            "Put a failed, cancelled or aborted job back in the queue, with fresh attempts.",
            cmd_retry,
        ),
        (
            "cancel",
            "Cancel a job that has not started (todo or blocked): no worker will run it.",
            cmd_cancel,
        ),
        (
            "abort",
            "Stop a job: a waiting one is cancelled, a running one is aborted by its worker.",
            cmd_abort,
        ),
        ("delete", "Delete a job that is not running, with its history.", cmd_delete),
    ):
        add(name, description, command).add_argument("job_id", metavar="ID", type=job_id)

    prune = add("prune", "Delete jobs that finished long enough ago, in batches.", cmd_prune)
    prune.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="finished more than this long ago: 7d, 12h, 30m, 90s, 2w, 1d12h",
    )
    prune.add_argument(
        "--status",
        action="append",
        type=status_list(PRUNABLE_STATUSES),
        metavar="STATUS",
        help="only these statuses, comma-separated and/or repeated (default: "
        + ", ".join(status.value for status in PRUNABLE_STATUSES)
        + ")",
    )
    prune.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=10_000,
        metavar="N",
        help="jobs deleted per transaction (default: 10000)",
    )
