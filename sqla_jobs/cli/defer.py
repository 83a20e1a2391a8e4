"""``sqla-jobs defer``: defer one job of a task, by the task's name, with JSON arguments."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import reprlib
import sys
from typing import Any

from ..errors import InvalidJobArguments, InvalidJobOptions
from ..jobs import DEFAULT_QUEUE, MAX_ARGS_DEPTH, JobSpec, Unique, check_options
from .common import build_app, import_tasks, one_line, seconds, subparser

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
    """The task's keyword arguments, from a JSON object given on the command line.

    Only JSON: ``NaN`` and ``Infinity`` (which Python's decoder takes), numbers that overflow a
    float, ints over Python's digit limit and nesting too deep to decode are refused here, as
    usage errors that name the problem, rather than deferred or crashing the command."""
    return _json_object(text, "the task's keyword arguments", _ARGUMENTS_EXAMPLE)


_ARGUMENTS_EXAMPLE = 'e.g. \'{"user_id": 42, "notify": true}\''


def json_object(what: str, example: str) -> Any:
    """An argument type reading a JSON object (``what``), as strictly as `json_arguments`."""

    def parse(text: str) -> dict[str, Any]:
        return _json_object(text, f"the job's {what}", example)

    return parse


def _json_object(text: str, what: str, example: str) -> dict[str, Any]:
    shown = reprlib.repr(text)
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{shown} is not valid JSON ({exc.msg} at column {exc.colno}). Pass {what} as "
            f"a JSON object in single quotes, {example}"
        ) from None
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"{shown} nests arrays and objects too deep to decode; a job's arguments nest at "
            f"most {MAX_ARGS_DEPTH} deep"
        ) from None
    except ValueError as exc:  # NaN, 1e400, or an int over sys.get_int_max_str_digits()
        raise argparse.ArgumentTypeError(f"{shown} is not valid JSON for a job: {exc}") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise argparse.ArgumentTypeError(
            f"{shown} is a JSON {kind}, not an object. Pass {what} as a JSON object, {example}"
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a float (at most about 1.8e308)")
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
    unique = None
    if args.unique or args.unique_key is not None or args.unique_period is not None:
        unique = (args.unique_key, args.unique_period)
    options: dict[str, Any] = {
        "queue": args.queue,
        "priority": args.priority,
        "lock": args.lock,
        "queueing_lock": args.queueing_lock,
        "schedule_at": args.schedule_at,
        "schedule_in": {"seconds": args.schedule_in} if args.schedule_in is not None else None,
        "tags": args.tag,
        "meta": args.meta,
    }
    try:
        # Checked here too: App.configure_task takes an empty queue for the default one.
        check_options(
            JobSpec(
                task_name=args.task,
                args={},
                queue=DEFAULT_QUEUE if args.queue is None else args.queue,
                lock=args.lock,
                queueing_lock=args.queueing_lock,
                tags=args.tag,
            )
        )
        if unique is not None:
            options["unique"] = Unique(key=unique[0], period=unique[1])
            if args.return_existing:
                options["on_conflict"] = "return_existing"
        elif args.return_existing:
            args.parser.error("--return-existing applies to unique jobs: add --unique")
        deferrer = app.configure_task(
            args.task, **{k: v for k, v in options.items() if v is not None}
        )
        with app.open():
            job_id = deferrer.defer(**args.arguments)
    except (InvalidJobArguments, InvalidJobOptions) as exc:
        # What was typed cannot be a job (an empty or too long name, a NUL character, too
        # big arguments): a usage error, exit status 2, as argparse reports bad JSON.
        args.parser.error(one_line(str(exc)))
    o = deferrer.options
    when = f", scheduled at {o.scheduled_at.isoformat()}" if o.scheduled_at else ""
    if o.tags:
        when += f", tags {', '.join(o.tags)}"
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
    defer.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="a tag to find the job by (e.g. tenant:7); repeat it for several",
    )
    defer.add_argument(
        "--meta",
        type=json_object("meta", 'e.g. \'{"request_id": "abc"}\''),
        metavar="JSON",
        help="a JSON object stored with the job, which its task reads as context.meta",
    )
    defer.add_argument(
        "--unique",
        action="store_true",
        help="refuse the job if one of this task with these arguments waits or runs",
    )
    defer.add_argument(
        "--unique-key",
        metavar="KEY",
        help="unique by this key (within the task) instead of the arguments; implies --unique",
    )
    defer.add_argument(
        "--unique-period",
        type=seconds,
        metavar="SECONDS",
        help="unique within periods of SECONDS (one job per period); implies --unique",
    )
    defer.add_argument(
        "--return-existing",
        action="store_true",
        help="with --unique: print the id of the job holding the key instead of failing",
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
