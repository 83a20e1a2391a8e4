"""What every command of the command line shares: the app it works on, its database's errors,
the global options, and the argument types of more than one command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..app import App
from ..connectors.base import BaseConnector
from ..connectors.psycopg import PsycopgConnector
from ..connectors.translate import translate_error
from ..errors import JobsError

PROG = "sqla-jobs"
APP_ENV = "SQLA_JOBS_APP"
SCHEMA_ENV = "SQLA_JOBS_SCHEMA"

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem with the command line's own input (``--app``, a revision): one line, exit 1."""


# -- argument types ----------------------------------------------------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, not {text}")
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
    schema = schema_option(args)
    if spec:
        app = load_app(spec)
        if schema is not None and schema != app.schema:
            raise CliError(
                f"--schema {schema!r} (or {SCHEMA_ENV}) differs from the schema of --app "
                f"{spec!r}, {app.schema!r}: the app's statements name its own schema. Drop "
                "--schema, or set App(schema=...) in the app."
            )
        if url:
            app = app.with_connector(PsycopgConnector(conninfo=libpq_url(url)))
        return app
    conninfo = libpq_url(url or os.environ.get("DATABASE_URL", ""))
    try:
        return App(connector=PsycopgConnector(conninfo=conninfo), schema=schema)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--schema: {exc}") from exc


def schema_option(args: argparse.Namespace) -> str | None:
    """The PostgreSQL schema named by ``--schema`` or ``SQLA_JOBS_SCHEMA``; None if neither."""
    return getattr(args, "schema", None) or os.environ.get(SCHEMA_ENV) or None


def import_tasks(app: App) -> None:
    """Import the app's task modules (``App(import_paths=...)``), as its worker would."""
    try:
        app.import_tasks()
    except Exception as exc:
        raise CliError(
            f"Importing the app's task modules {list(app.import_paths)} raised "
            f"{type(exc).__name__}: {exc}. Fix App(import_paths=...) or the module "
            "(-v shows the traceback)."
        ) from exc


@contextlib.contextmanager
def database_errors(connector: BaseConnector) -> Iterator[None]:
    """Report SQLAlchemy's errors (migrations, reports) as the connectors report theirs: with
    the same translator. Alembic's refusal of a revision is one line naming the known ones."""
    # SQLAlchemy and Alembic are imported here, not at the top: `sqla-jobs worker` never
    # loads them (the worker sends pre-rendered SQL).
    try:
        yield
    except Exception as exc:
        import sqlalchemy.exc

        if isinstance(exc, (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError)):
            raise translate_error(exc, target=connector.describe()) from exc

        from alembic.util import CommandError

        from .. import migrations

        if not isinstance(exc, CommandError):
            raise
        raise CliError(
            f"{exc}. Known revisions: base, head, or an id such as {migrations.head()}."
        ) from exc


def one_line(message: str) -> str:
    return " ".join(message.split())


# -- global options ----------------------------------------------------------------------------


def add_global_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
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
        "--schema",
        metavar="NAME",
        default=default(None),
        help=shown(
            f"the PostgreSQL schema of the job tables, when --app does not name it (env "
            f"{SCHEMA_ENV}; default: the search_path, usually public)"
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


def subparser(
    subparsers: Any, name: str, description: str, handler: Handler
) -> argparse.ArgumentParser:
    """A command's parser, run by ``handler``, that takes the global options too."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=description,
        description=description,
        epilog="Global options (--app, --database-url, --schema, -v, --log-format) may also come "
        "after "
        "the command: see `sqla-jobs --help`.",
    )
    parser.set_defaults(handler=handler, parser=parser)
    add_global_options(parser, on_subcommand=True)
    return parser
