"""The ``sqla-jobs`` command line: run a worker, defer a job, manage the schema, check health,
manage jobs and workflows.

A thin shell over the public API (`App`, `App.run_worker_async`, `App.configure_task`,
`sqla_jobs.migrations`, `JobManager`): it parses arguments, builds or imports the app, and turns
every `JobsError` into one line on stderr and exit status 1. argparse (the standard library)
parses the arguments, so the command line adds no dependency.

One module per topic: `common` (the app, its database's errors, the global options),
`worker`, `defer`, `schema`, `healthchecks`, `jobs`, `queues` (and tasks), `workflows` and
`dashboard`;
each adds its commands to the parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from ..errors import JobsError
from ..logs import configure_logging
from .common import PROG, CliError, Handler, add_global_options, one_line
from .dashboard import add_dashboard_command
from .defer import add_defer_command
from .healthchecks import add_healthchecks_command
from .jobs import add_jobs_commands
from .queues import add_queues_commands
from .schema import add_schema_commands
from .worker import add_worker_command
from .workflows import add_workflows_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="sqla_jobs: a PostgreSQL job queue for SQLAlchemy applications.",
        epilog="Run `sqla-jobs COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    add_global_options(parser, on_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_worker_command(commands)
    add_defer_command(commands)
    add_schema_commands(commands)
    add_healthchecks_command(commands)
    add_jobs_commands(commands)
    add_queues_commands(commands)
    add_workflows_commands(commands)
    add_dashboard_command(commands)
    return parser


def _version() -> str:
    # The package's own version (the one place it is written), not the installed metadata,
    # which an editable install keeps stale until it is installed again.
    from .. import __version__

    return __version__


def _fail(exc: BaseException, verbosity: int) -> int:
    if verbosity:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose + getattr(args, "verbose_after", 0)
    base_level = logging.INFO if args.command in ("worker", "dashboard") else logging.WARNING
    configure_logging(verbosity, args.log_format, base_level=base_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (JobsError, CliError) as exc:
        return _fail(exc, verbosity)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
