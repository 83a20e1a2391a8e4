"""``sqla-jobs worker``: run a worker on the app's tasks until stopped (or, with ``--no-wait``,
until nothing is left to run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Any

from ..app import App
from ..worker import WorkerOptions
from .common import CliError, build_app, import_tasks, int_at_least, seconds, subparser

logger = logging.getLogger("sqla_jobs.cli")

_WORKER_DEFAULTS = WorkerOptions()


class _Unset:
    """Marks --shutdown-timeout as not given (None is a value there: wait for ever)."""

    def __repr__(self) -> str:
        return "default"


_UNSET: Any = _Unset()


# -- argument types ----------------------------------------------------------------------------


def parse_queues(values: Sequence[str] | None) -> list[str] | None:
    """Queue names from repeated ``-q a -q b`` and/or comma lists ``--queues a,b``, in order and
    without duplicates; None (every queue) when none were given."""
    if not values:
        return None
    queues: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                raise argparse.ArgumentTypeError(
                    f"empty queue name in {value!r}: give names separated by commas, "
                    "e.g. --queues emails,reports"
                )
            if name not in queues:
                queues.append(name)
    return queues


_positive_int = int_at_least(1)
_non_negative_int = int_at_least(0)


def _positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _shutdown_timeout(text: str) -> float | None:
    if text.lower() in ("none", "forever"):
        return None
    return seconds(text)


def _port(text: str) -> int:
    port = _non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, not {port}")
    return port


# -- the command -------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    app = build_app(args)
    options: dict[str, Any] = {
        "queues": parse_queues(args.queues),
        "concurrency": args.concurrency,
        "name": args.name,
        "wait": args.wait,
        "listen_notify": args.listen_notify,
        "polling_interval": args.polling_interval,
        "delete_jobs": args.delete_jobs,
        "shutdown_timeout": args.shutdown_timeout,
        "heartbeat_interval": args.heartbeat_interval,
        "stalled_timeout": args.stalled_timeout,
        "database_timeout": args.database_timeout,
        "retry_max_delay": args.retry_max_delay,
        "fetch_batch": args.fetch_batch,
        "prefetch": args.prefetch,
        "periodic": args.periodic,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
    }
    # Options left out take WorkerOptions' defaults (None is a value only for the timeout).
    options = {
        key: value
        for key, value in options.items()
        if value is not _UNSET and (value is not None or key == "shutdown_timeout")
    }
    try:
        WorkerOptions(**options)  # options that clash (a stalled timeout under the heartbeat)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    import_tasks(app)
    try:
        asyncio.run(_run_worker(app, options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Stopped before the worker had started: nothing ran, nothing to hand back.
        logger.info("Stopped before the worker started")
    return 0


async def _run_worker(app: App, options: dict[str, Any]) -> None:
    if not app.connector.can_run_worker:
        # Fails at once, with the message naming the async connectors, before any connection.
        await app.run_worker_async(**options)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    # Until the worker installs its own handlers (after connecting), SIGTERM stops the start.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        async with app.open_async():
            await app.run_worker_async(**options)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


# -- the parser --------------------------------------------------------------------------------


def add_worker_command(commands: Any) -> None:
    """Add ``worker`` and its options to the command line's subcommands."""
    worker = subparser(
        commands, "worker", "Run a worker: claim jobs and run them until stopped.", cmd_worker
    )
    d = _WORKER_DEFAULTS
    worker.set_defaults(queues=None)
    worker.add_argument(
        "-q",
        "--queue",
        "--queues",
        dest="queues",
        action="append",
        metavar="QUEUES",
        help="queues to take jobs from, comma-separated and/or repeated (default: every queue)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        default=None,
        help=f"jobs run at the same time (default: {d.concurrency})",
    )
    worker.add_argument(
        "--name",
        default=None,
        help="name shown in the workers table and logs (default: HOSTNAME-ID)",
    )
    worker.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for new jobs (default); --no-wait runs what is runnable and exits",
    )
    worker.add_argument(
        "--listen-notify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wake on NOTIFY when jobs arrive (default); polling is the fallback either way",
    )
    worker.add_argument(
        "--polling-interval",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds between polls for due jobs and retries (default: {d.polling_interval})",
    )
    worker.add_argument(
        "--delete-jobs",
        choices=("never", "successful", "always"),
        default=None,
        help=f"delete jobs once finished (default: {d.delete_jobs})",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=_shutdown_timeout,
        default=_UNSET,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, seconds to let running jobs finish before they go back to "
        f"the queue; 'none' waits for ever (default: {d.shutdown_timeout})",
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds between heartbeats in the workers table (default: {d.heartbeat_interval})",
    )
    worker.add_argument(
        "--stalled-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds without a heartbeat after which a worker counts as dead and live workers "
        "recover its running jobs; more than --heartbeat-interval "
        f"(default: {d.stalled_timeout})",
    )
    worker.add_argument(
        "--database-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for the answer to one statement before giving up on it and "
        f"trying again on a new connection (default: {d.database_timeout})",
    )
    worker.add_argument(
        "--retry-max-delay",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="longest wait between two tries of a failed statement or a lost connection "
        "(waits start at 0.1 s and double, with jitter; LISTEN tries twice as often) "
        f"(default: {d.retry_max_delay})",
    )
    worker.add_argument(
        "--fetch-batch",
        type=_positive_int,
        default=None,
        metavar="N",
        help="most jobs claimed by one statement; the default --prefetch claims up to twice "
        f"as many ahead (default: {d.fetch_batch})",
    )
    worker.add_argument(
        "--prefetch",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="jobs claimed ahead of free slots; 0 claims only for free slots (default: "
        "what the worker starts in ~30 ms, between --concurrency and --fetch-batch)",
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs "
        "sqla_jobs[metrics]; default: none)",
    )
    worker.add_argument(
        "--metrics-host",
        default=None,
        metavar="HOST",
        help=f"the address to serve metrics on (default: {d.metrics_host}, every interface)",
    )
    worker.add_argument(
        "--periodic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="defer the app's periodic tasks at their ticks (default); --no-periodic leaves "
        "that to other workers",
    )
