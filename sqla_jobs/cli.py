"""The ``sqla-jobs`` command line: run a worker, defer a job, manage the schema, check health.

A thin shell over the public API (`App`, `App.run_worker_async`, `App.configure_task`,
`sqla_jobs.migrations`): it parses arguments, builds or imports the app, and turns every
`JobsError` into one line on stderr and exit status 1. argparse (the standard library) parses
the arguments, so the command line adds no dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .app import App
from .cli_jobs import add_jobs_commands, int_at_least
from .connectors.base import BaseConnector
from .connectors.psycopg import PsycopgConnector
from .connectors.translate import translate_error
from .errors import JobsError
from .logs import configure_logging
from .manager import JobManager
from .worker import WorkerOptions

logger = logging.getLogger("sqla_jobs.cli")

PROG = "sqla-jobs"
APP_ENV = "SQLA_JOBS_APP"
_WORKER_DEFAULTS = WorkerOptions()
#: A worker whose last heartbeat is older than this is reported as probably dead.
_STALE_HEARTBEAT_SECONDS = 60.0


class CliError(Exception):
    """A problem with the command line's own input (``--app``, a revision): one line, exit 1."""


# -- argument types ----------------------------------------------------------------------------


_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, not {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _shutdown_timeout(text: str) -> float | None:
    if text.lower() in ("none", "forever"):
        return None
    return _seconds(text)


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


# -- the app and its database ------------------------------------------------------------------


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (``module`` alone means ``module:app``) and return the App
    it names, calling it first if it is a function that builds one."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    example = "e.g. --app myproject.jobs:app"
    if not module_name:
        raise CliError(f"--app {spec!r} names no module: use module:attribute, {example}")
    # Like `python -m`, look in the current directory first: the project being run.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CliError(
                f"--app {spec!r}: no module named {missing!r}. Run sqla-jobs from the "
                "project's directory or add it to PYTHONPATH, and give the module's dotted "
                f"path, {example}"
            ) from exc
        raise CliError(
            f"--app {spec!r}: importing {module_name!r} failed: {exc}. Install the missing "
            "package in this environment."
        ) from exc
    except Exception as exc:
        raise CliError(
            f"--app {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}. "
            "Fix the module (-v shows the traceback)."
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(
                f"--app {spec!r}: module {module_name!r} has no attribute {attribute!r}. Name "
                f"the variable that holds your sqla_jobs.App: --app {module_name}:<name>"
            ) from None
    if isinstance(target, App):
        return target
    if callable(target) and not isinstance(target, type):
        try:
            built = target()
        except JobsError:
            raise
        except Exception as exc:
            raise CliError(
                f"--app {spec!r}: calling {attribute}() raised {type(exc).__name__}: {exc}. "
                "--app takes an App or a function that needs no arguments and returns one."
            ) from exc
        if isinstance(built, App):
            return built
        raise CliError(
            f"--app {spec!r}: {attribute}() returned {type(built).__name__}, not a "
            "sqla_jobs.App. Return the App from that function."
        )
    raise CliError(
        f"--app {spec!r} is of type {type(target).__name__}, not a sqla_jobs.App. Point --app "
        "at an App (app = sqla_jobs.App(connector=...)) or at a function returning one."
    )


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://...``) as libpq reads it (``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    return url


def build_app(args: argparse.Namespace) -> App:
    """The app the command works on: ``--app``'s (its connector replaced when
    ``--database-url`` is given), else a task-less app on a `PsycopgConnector` configured by
    ``--database-url``, ``DATABASE_URL`` or libpq's ``PG*`` variables."""
    spec = args.app or os.environ.get(APP_ENV)
    url = args.database_url
    if spec:
        app = load_app(spec)
        if url:
            app = app.with_connector(PsycopgConnector(conninfo=libpq_url(url)))
        return app
    conninfo = libpq_url(url or os.environ.get("DATABASE_URL", ""))
    return App(connector=PsycopgConnector(conninfo=conninfo))


def _import_tasks(app: App) -> None:
    try:
        app.import_tasks()
    except Exception as exc:
        raise CliError(
            f"Importing the app's task modules {list(app.import_paths)} raised "
            f"{type(exc).__name__}: {exc}. Fix App(import_paths=...) or the module "
            "(-v shows the traceback)."
        ) from exc


@contextlib.contextmanager
def _database_errors(connector: BaseConnector) -> Iterator[None]:
    """Report SQLAlchemy's errors (migrations, reports) as the connectors report theirs: with
    the same translator."""
    # SQLAlchemy and Alembic are imported here, not at the top: `sqla-jobs worker` never
    # loads them (the worker sends pre-rendered SQL).
    try:
        yield
    except Exception as exc:
        import sqlalchemy.exc

        if isinstance(exc, (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError)):
            raise translate_error(exc, target=connector.describe()) from exc

        from alembic.util import CommandError

        from . import migrations

        if not isinstance(exc, CommandError):
            raise
        raise CliError(
            f"{exc}. Known revisions: base, head, or an id such as {migrations.head()}."
        ) from exc


# -- commands ----------------------------------------------------------------------------------


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
    _import_tasks(app)
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


def cmd_defer(args: argparse.Namespace) -> int:
    app = build_app(args)
    _import_tasks(app)
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


def _migrate(
    args: argparse.Namespace, run: Callable[[Any, str], None]
) -> tuple[str | None, str | None]:
    """Run ``migrations.upgrade`` or ``downgrade`` to ``args.revision``; the revisions before
    and after."""
    from . import migrations  # Alembic loads only for the commands that use it

    app = build_app(args)
    engine = app.connector.sqlalchemy_engine()
    try:
        with _database_errors(app.connector):
            before = migrations.current(engine)
            run(engine, args.revision)
            return before, migrations.current(engine)
    finally:
        app.close()


def cmd_schema_upgrade(args: argparse.Namespace) -> int:
    from . import migrations  # Alembic loads only for the commands that use it

    before, after = _migrate(args, migrations.upgrade)
    if before == after:
        note = " (head)" if after == migrations.head() else ""
        print(f"The sqla_jobs schema is already at {after}{note}.")
    else:
        print(f"Upgraded the sqla_jobs schema from {before or 'nothing'} to {after}.")
    return 0


def cmd_schema_downgrade(args: argparse.Namespace) -> int:
    from . import migrations  # Alembic loads only for the commands that use it

    if args.revision is None:
        args.parser.error(
            "schema downgrade needs the revision to go back to: `sqla-jobs schema downgrade "
            "base` drops every sqla_jobs table and the jobs in them; `sqla-jobs schema "
            "downgrade <revision>` stops at that revision (see `sqla-jobs schema current`)"
        )
    before, after = _migrate(args, migrations.downgrade)
    if before == after:
        print(f"The sqla_jobs schema is already at {after or 'base (no tables)'}.")
    else:
        print(
            f"Downgraded the sqla_jobs schema from {before} to "
            f"{after or 'base: its tables are dropped'}."
        )
    return 0


def cmd_schema_current(args: argparse.Namespace) -> int:
    from . import migrations  # Alembic loads only for the commands that use it

    app = build_app(args)
    try:
        with _database_errors(app.connector):
            revision = migrations.current(app.connector.sqlalchemy_engine())
    finally:
        app.close()
    head = migrations.head()
    if revision is None:
        print("none: no sqla_jobs schema in this database; run `sqla-jobs schema upgrade`")
    elif revision == head:
        print(f"{revision} (head)")
    else:
        print(
            f"{revision} (not the head: this sqla_jobs version's head is {head}; run "
            "`sqla-jobs schema upgrade`)"
        )
    return 0


def cmd_schema_sql(args: argparse.Namespace) -> int:
    from alembic.util import CommandError

    from . import migrations  # Alembic loads only for the commands that use it

    default = "head:base" if args.downgrade else "base:head"
    try:
        text = migrations.sql(args.range or default, downgrade=args.downgrade)
    except CommandError as exc:
        raise CliError(
            f"{exc}. Give a range such as {default} (downgrade ranges go from the newer "
            "revision to the older)."
        ) from exc
    sys.stdout.write(text)
    return 0


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One healthcheck line."""

    name: str
    ok: bool
    message: str
    details: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [f"{'OK' if self.ok else 'FAIL':<4} {self.name}: {self.message}"] + [
            f"       {detail}" for detail in self.details
        ]


def cmd_healthchecks(args: argparse.Namespace) -> int:
    app = build_app(args)
    try:
        checks = run_healthchecks(app.connector)
    finally:
        app.close()
    for check in checks:
        print("\n".join(check.lines()))
    return 0 if all(check.ok for check in checks) else 1


def run_healthchecks(connector: BaseConnector) -> list[Check]:
    """Database reachable, schema at this version's head, workers alive (listed, not judged:
    a deployment may start its workers after its health checks)."""
    from . import migrations  # Alembic loads only for the commands that use it

    engine = connector.sqlalchemy_engine()
    checks: list[Check] = []
    try:
        with _database_errors(connector), engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except JobsError as exc:
        checks.append(Check("database", False, _one_line(str(exc))))
        return checks
    checks.append(Check("database", True, f"connected ({connector.describe()})"))

    head = migrations.head()
    with _database_errors(connector):
        revision = migrations.current(engine)
    if revision is None:
        checks.append(
            Check("schema", False, "no sqla_jobs schema here. Fix: run `sqla-jobs schema upgrade`")
        )
        return checks
    if revision != head:
        checks.append(
            Check(
                "schema",
                False,
                f"at revision {revision}, this sqla_jobs version expects {head}. Fix: run "
                "`sqla-jobs schema upgrade` (or upgrade the sqla_jobs package if the database "
                "is newer)",
            )
        )
        return checks
    checks.append(Check("schema", True, f"revision {revision} (head)"))

    with _database_errors(connector):
        rows = JobManager(connector).list_workers()
    details = []
    for row in rows:
        queues = ",".join(row["queues"]) if row["queues"] is not None else "all"
        seconds = row["heartbeat_age"]
        stale = " (stale: the process may have died)" if seconds > _STALE_HEARTBEAT_SECONDS else ""
        details.append(
            f"{row['name']}: pid {row['pid']} on {row['hostname']}, queues {queues}, "
            f"concurrency {row['concurrency']}, last heartbeat {seconds:.0f} s ago{stale}"
        )
    summary = f"{len(rows)} registered" if rows else "none registered"
    checks.append(Check("workers", True, summary, tuple(details)))
    return checks


# -- the parser --------------------------------------------------------------------------------


class _Unset:
    """Marks --shutdown-timeout as not given (None is a value there: wait for ever)."""

    def __repr__(self) -> str:
        return "default"


_UNSET: Any = _Unset()


def _add_global_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """Global options, accepted before and after the subcommand. After it, defaults are
    suppressed so they do not overwrite a value given before it."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if on_subcommand else value

    def shown(text: str) -> str:
        # A command's help lists its own options; `sqla-jobs --help` lists these.
        return argparse.SUPPRESS if on_subcommand else text

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=default(None),
        help=shown(
            f"the sqla_jobs.App to use, or a function returning it (env {APP_ENV}); "
            "without it, a PsycopgConnector on --database-url"
        ),
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=default(None),
        help=shown(
            "PostgreSQL URL; replaces the app's connector by a PsycopgConnector on it "
            "(default: DATABASE_URL, else libpq's PG* variables)"
        ),
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose_after" if on_subcommand else "verbose",
        default=default(0),
        help=shown(
            "more log output, repeatable (-v info, -vv debug; the worker logs info by "
            "default); shows tracebacks of errors"
        ),
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default("text"),
        help=shown("text, or json: one JSON object per line with the records' extra fields"),
    )


def _subparser(
    subparsers: Any, name: str, description: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=description,
        description=description,
        epilog="Global options (--app, --database-url, -v, --log-format) may also come after "
        "the command: see `sqla-jobs --help`.",
    )
    parser.set_defaults(handler=handler, parser=parser)
    _add_global_options(parser, on_subcommand=True)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="sqla_jobs: a PostgreSQL job queue for SQLAlchemy applications.",
        epilog="Run `sqla-jobs COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    _add_global_options(parser, on_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = _subparser(
        commands, "worker", "Run a worker: claim jobs and run them until stopped.", cmd_worker
    )
    _add_worker_options(worker)

    defer = _subparser(commands, "defer", "Defer one job of a task, by the task's name.", cmd_defer)
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
        "--schedule-in", type=_seconds, metavar="SECONDS", help="run no sooner than in SECONDS"
    )
    when.add_argument(
        "--schedule-at",
        type=_aware_datetime,
        metavar="ISO8601",
        help="run no sooner than then, e.g. 2030-01-31T09:30:00+00:00",
    )

    schema = commands.add_parser(
        "schema",
        help="Create, upgrade, downgrade or show the job tables (Alembic migrations).",
        description="Create, upgrade, downgrade or show the job tables (Alembic migrations).",
    )
    schema_commands = schema.add_subparsers(dest="schema_command", metavar="ACTION", required=True)

    upgrade = _subparser(
        schema_commands,
        "upgrade",
        "Create or upgrade the job tables (to the head by default).",
        cmd_schema_upgrade,
    )
    upgrade.add_argument(
        "revision", metavar="REVISION", nargs="?", default="head", help="target (default: head)"
    )
    downgrade = _subparser(
        schema_commands,
        "downgrade",
        "Downgrade the job tables to REVISION; `base` drops them and their jobs.",
        cmd_schema_downgrade,
    )
    downgrade.add_argument(
        "revision", metavar="REVISION", nargs="?", help="target revision, or base (required)"
    )
    _subparser(
        schema_commands,
        "current",
        "Show the schema revision of the database and whether it is the head.",
        cmd_schema_current,
    )
    sql = _subparser(
        schema_commands,
        "sql",
        "Print the SQL of the migrations, for applying by hand.",
        cmd_schema_sql,
    )
    sql.add_argument(
        "range",
        metavar="RANGE",
        nargs="?",
        help="revision range (default: base:head, or head:base with --downgrade)",
    )
    sql.add_argument("--downgrade", action="store_true", help="print the downgrade SQL instead")

    _subparser(
        commands,
        "healthchecks",
        "Check the database connection and the schema revision; list the workers.",
        cmd_healthchecks,
    )
    add_jobs_commands(commands, _subparser, build_app)
    return parser


def _add_worker_options(worker: argparse.ArgumentParser) -> None:
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
        help="most jobs claimed by one statement, and claimed ahead by the default "
        f"--prefetch (default: {d.fetch_batch})",
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
        "--periodic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="defer the app's periodic tasks at their ticks (default); --no-periodic leaves "
        "that to other workers",
    )


def _version() -> str:
    # The package's own version (the one place it is written), not the installed metadata,
    # which an editable install keeps stale until it is installed again.
    from . import __version__

    return __version__


# -- entry point -------------------------------------------------------------------------------


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fail(exc: BaseException, verbosity: int) -> int:
    if verbosity:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose + getattr(args, "verbose_after", 0)
    base_level = logging.INFO if args.command == "worker" else logging.WARNING
    configure_logging(verbosity, args.log_format, base_level=base_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (JobsError, CliError) as exc:
        return _fail(exc, verbosity)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
