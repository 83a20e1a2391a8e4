"""``sqla-jobs queues ...`` and ``sqla-jobs tasks ...``: list the queues with their jobs and
controls; pause, resume and limit a queue or a task (`sqla_jobs.controls`).

A thin shell over `JobManager`'s control methods, registered by `sqla_jobs.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..controls import QUEUE, TASK, Control, Limits, Rate, parse_rate
from ..errors import InvalidJobOptions
from ..manager import JobManager
from ..statuses import JobStatus
from .common import build_app, int_at_least, subparser

_NONE = "none"


def _limit_value(text: str) -> int | None:
    if text.strip().lower() == _NONE:
        return None
    return int_at_least(1)(text)


def _rate_value(text: str) -> Rate | None:
    if text.strip().lower() == _NONE:
        return None
    try:
        return parse_rate(text, what="--rate")
    except InvalidJobOptions as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _describe(control: Control | None) -> tuple[str, str, str]:
    if control is None:
        return "no", "-", "-"
    limits = control.limits
    return (
        "PAUSED" if control.paused else "no",
        str(limits.concurrency_limit) if limits.concurrency_limit is not None else "-",
        str(limits.rate_limit) if limits.rate_limit is not None else "-",
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def cmd_list(manager: JobManager, args: argparse.Namespace) -> int:
    controls = {(c.scope, c.name): c for c in manager.list_controls()}
    counts = manager.count_jobs()
    queues = sorted({queue for queue, _ in counts} | {n for s, n in controls if s == QUEUE})
    rows: list[tuple[str, ...]] = []
    if args.scope == QUEUE:
        for queue in queues:
            waiting = counts.get((queue, JobStatus.TODO), 0)
            running = counts.get((queue, JobStatus.DOING), 0) + counts.get(
                (queue, JobStatus.ABORTING), 0
            )
            rows.append(
                (queue, str(waiting), str(running), *_describe(controls.get((QUEUE, queue))))
            )
        header: tuple[str, ...] = ("QUEUE", "WAITING", "RUNNING", "PAUSED", "CONCURRENCY", "RATE")
        print(_table(header, rows) if rows else "No queues: no job, no control.")
    else:
        tasks = [c for (scope, _), c in controls.items() if scope == TASK]
        rows = [(c.name, *_describe(c)) for c in tasks]
        header = ("TASK", "PAUSED", "CONCURRENCY", "RATE")
        print(_table(header, rows) if rows else "No task is paused or limited.")
    return 0


def cmd_pause(manager: JobManager, args: argparse.Namespace) -> int:
    if args.scope == QUEUE:
        manager.pause_queue(args.name)
    else:
        manager.pause_task(args.name)
    print(
        f"{args.scope.capitalize()} {args.name!r} paused: no worker starts its jobs until "
        f"`sqla-jobs {args.scope}s resume {args.name}` (running jobs finish; defers go on)."
    )
    return 0


def cmd_resume(manager: JobManager, args: argparse.Namespace) -> int:
    if args.scope == QUEUE:
        manager.resume_queue(args.name)
    else:
        manager.resume_task(args.name)
    print(f"{args.scope.capitalize()} {args.name!r} resumed.")
    return 0


def cmd_limit(manager: JobManager, args: argparse.Namespace) -> int:
    current = next(
        (c for c in manager.list_controls() if (c.scope, c.name) == (args.scope, args.name)),
        None,
    )
    limits = current.limits if current is not None else Limits()
    concurrency = limits.concurrency_limit if args.concurrency is ... else args.concurrency
    rate = limits.rate_limit if args.rate is ... else args.rate
    setter = manager.set_queue_limits if args.scope == QUEUE else manager.set_task_limits
    setter(args.name, concurrency_limit=concurrency, rate_limit=rate)
    running = f"at most {concurrency} running at once" if concurrency else "no concurrency limit"
    started = f"at most {rate} started" if rate is not None else "no rate limit"
    print(f"{args.scope.capitalize()} {args.name!r}: {running}, {started}.")
    return 0


Command = Callable[[JobManager, argparse.Namespace], int]


def add_queues_commands(commands: Any) -> None:
    """Add ``queues`` and ``tasks`` and their actions to the command line's subcommands."""
    for scope, plural, description in (
        (QUEUE, "queues", "List queues; pause, resume or limit one."),
        (TASK, "tasks", "List paused or limited tasks; pause, resume or limit one."),
    ):
        parser = commands.add_parser(plural, help=description, description=description)
        actions = parser.add_subparsers(dest=f"{plural}_command", metavar="ACTION", required=True)

        def add(
            name: str, text: str, command: Command, scope: str = scope, actions: Any = actions
        ) -> argparse.ArgumentParser:
            def handler(args: argparse.Namespace) -> int:
                args.scope = scope
                app = build_app(args)
                with app.open():
                    return command(app.job_manager, args)

            return subparser(actions, name, text, handler)

        what = "queue" if scope == QUEUE else "task (its name)"
        listing = (
            "List the queues: jobs waiting and running, paused or not, their limits."
            if scope == QUEUE
            else "List the tasks that are paused or limited."
        )
        add("list", listing, cmd_list)
        add(
            "pause",
            f"Pause a {scope}: no worker starts its jobs (running ones finish; defers go on).",
            cmd_pause,
        ).add_argument("name", metavar="NAME", help=what)
        add(
            "resume", f"Resume a paused {scope}: workers start its jobs at once.", cmd_resume
        ).add_argument("name", metavar="NAME", help=what)
        limit = add(
            "limit",
            f"Limit a {scope}'s jobs across all workers: how many run at once, how many "
            "start per period. Options left out keep their value; 'none' removes a limit.",
            cmd_limit,
        )
        limit.add_argument("name", metavar="NAME", help=what)
        limit.add_argument(
            "--concurrency",
            type=_limit_value,
            default=...,
            metavar="N|none",
            help="at most N of its jobs running at once",
        )
        limit.add_argument(
            "--rate",
            type=_rate_value,
            default=...,
            metavar="RATE|none",
            help="at most so many started per period: 100/s, 10/m, 5/h, 1/d, 30/5s",
        )
