"""``sqla-jobs defer``: defer one job of a task, by the task's name, with JSON arguments."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from typing import Any

from .common import build_app, import_tasks, seconds, subparser

logger = logging.getLogger("sqla_jobs.cli")

_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


# -- argument types ----------------------------------------------------------------------------


def json_arguments(text: str) -> dict[str, Any]:
    """The task's keyword arguments, from a JSON object given on the command line."""
    example = 'e.g. \'{"user_id": 42, "notify": true}\''
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({exc.msg} at column {exc.colno}). Pass the task's "
            f"keyword arguments as a JSON object in single quotes, {example}"
        ) from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise argparse.ArgumentTypeError(
            f"{text!r} is a JSON {kind}, not an object. Pass the task's keyword "
            f"arguments as a JSON object, {example}"
        )
    return value


def _aware_datetime(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date and time; e.g. 2030-01-31T09:30:00+01:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone; add one, e.g. {text}+00:00 or {text}Z for UTC"
        )
    return value


# -- the command -------------------------------------------------------------------------------


def cmd_defer(args: argparse.Namespace) -> int:
    app = build_app(args)
    import_tasks(app)
    if app.tasks and args.task not in app.tasks:
        logger.warning(
            "Task %r is not registered on the app (known: %s); deferring it anyway: the worker "
            "that runs it must know it",
            args.task,
            ", ".join(sorted(app.tasks)),
            extra={"task": args.task},
        )
    options: dict[str, Any] = {
        "queue": args.queue,
        "priority": args.priority,
        "lock": args.lock,
        "queueing_lock": args.queueing_lock,
        "schedule_at": args.schedule_at,
        "schedule_in": {"seconds": args.schedule_in} if args.schedule_in is not None else None,
    }
    deferrer = app.configure_task(args.task, **{k: v for k, v in options.items() if v is not None})
    with app.open():
        job_id = deferrer.defer(**args.arguments)
    o = deferrer.options
    when = f", scheduled at {o.scheduled_at.isoformat()}" if o.scheduled_at else ""
    print(job_id)
    print(
        f"Deferred job {job_id}: task {args.task!r} on queue {o.queue!r}{when}",
        file=sys.stderr,
    )
    return 0


# -- the parser --------------------------------------------------------------------------------


def add_defer_command(commands: Any) -> None:
    """Add ``defer`` and its options to the command line's subcommands."""
    defer = subparser(commands, "defer", "Defer one job of a task, by the task's name.", cmd_defer)
    defer.add_argument("task", metavar="TASK", help="name of the task, e.g. myapp.tasks.send")
    defer.add_argument(
        "arguments",
        metavar="JSON",
        nargs="?",
        type=json_arguments,
        default={},
        help="keyword arguments as a JSON object, e.g. '{\"user_id\": 42}' (default: {})",
    )
    defer.add_argument("--queue", help="queue to put the job in (default: the task's queue)")
    defer.add_argument(
        "--priority", type=int, metavar="N", help="higher runs first (default: the task's)"
    )
    defer.add_argument("--lock", help="jobs sharing a lock run one at a time, in order")
    defer.add_argument(
        "--queueing-lock", help="refuse the job if one with this queueing lock is waiting"
    )
    when = defer.add_mutually_exclusive_group()
    when.add_argument(
        "--schedule-in", type=seconds, metavar="SECONDS", help="run no sooner than in SECONDS"
    )
    when.add_argument(
        "--schedule-at",
        type=_aware_datetime,
        metavar="ISO8601",
        help="run no sooner than then, e.g. 2030-01-31T09:30:00+00:00",
    )
