"""``sqla-jobs schema``: create, upgrade, downgrade or show the job tables, through the Alembic
migrations in `sqla_jobs.migrations` (loaded only by these commands, with SQLAlchemy)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .common import APP_ENV, CliError, build_app, database_errors, schema_option, subparser


def _migrate(args: argparse.Namespace, run: Callable[..., None]) -> tuple[str | None, str | None]:
    """Run ``migrations.upgrade`` or ``downgrade`` to ``args.revision``; the revisions before
    and after."""
    from .. import migrations  # Alembic loads only for the commands that use it

    app = build_app(args)
    engine = app.connector.sqlalchemy_engine()
    try:
        with database_errors(app.connector):
            before = migrations.current(engine, schema=app.schema)
            run(engine, args.revision, schema=app.schema)
            return before, migrations.current(engine, schema=app.schema)
    finally:
        app.close()


def cmd_schema_upgrade(args: argparse.Namespace) -> int:
    from .. import migrations

    before, after = _migrate(args, migrations.upgrade)
    if before == after:
        note = " (head)" if after == migrations.head() else ""
        print(f"The sqla_jobs schema is already at {after}{note}.")
    else:
        print(f"Upgraded the sqla_jobs schema from {before or 'nothing'} to {after}.")
    return 0


def cmd_schema_downgrade(args: argparse.Namespace) -> int:
    from .. import migrations

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
    from .. import migrations

    app = build_app(args)
    try:
        with database_errors(app.connector):
            revision = migrations.current(app.connector.sqlalchemy_engine(), schema=app.schema)
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

    from .. import migrations

    default = "head:base" if args.downgrade else "base:head"
    try:
        text = migrations.sql(
            args.range or default, downgrade=args.downgrade, schema=schema_option(args)
        )
    except CommandError as exc:
        raise CliError(
            f"{exc}. Give a range such as {default} (downgrade ranges go from the newer "
            "revision to the older)."
        ) from exc
    sys.stdout.write(text)
    return 0


def _grants_schema(args: argparse.Namespace) -> str:
    """Where the tables are: ``--schema``, else the schema --app names, else public."""
    named = schema_option(args)
    if named is None and (args.app or os.environ.get(APP_ENV)):
        app = build_app(args)
        named = app.schema
        app.close()
    return named or "public"


def cmd_schema_grants(args: argparse.Namespace) -> int:
    from ..grants import grant_statements

    if args.app_role is None and args.worker_role is None:
        args.parser.error("schema grants needs --app-role NAME, --worker-role NAME, or both")
    try:
        statements = grant_statements(
            app_role=args.app_role, worker_role=args.worker_role, schema=_grants_schema(args)
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not args.apply:
        sys.stdout.write("".join(f"{statement};\n" for statement in statements))
        return 0
    import sqlalchemy

    app = build_app(args)
    try:
        with database_errors(app.connector), app.connector.sqlalchemy_engine().begin() as conn:
            for statement in statements:
                conn.execute(sqlalchemy.text(statement))
    finally:
        app.close()
    roles = " and ".join(
        f"{kind} role {role!r}"
        for kind, role in (("the app", args.app_role), ("the worker", args.worker_role))
        if role is not None
    )
    print(f"Granted {roles} what they need on the sqla_jobs tables ({len(statements)} GRANTs).")
    return 0


def add_schema_commands(commands: Any) -> None:
    """Add ``schema`` and its actions to the command line's subcommands."""
    schema = commands.add_parser(
        "schema",
        help="Create, upgrade, downgrade or show the job tables (Alembic migrations).",
        description="Create, upgrade, downgrade or show the job tables (Alembic migrations).",
    )
    actions = schema.add_subparsers(dest="schema_command", metavar="ACTION", required=True)

    upgrade = subparser(
        actions,
        "upgrade",
        "Create or upgrade the job tables (to the head by default).",
        cmd_schema_upgrade,
    )
    upgrade.add_argument(
        "revision", metavar="REVISION", nargs="?", default="head", help="target (default: head)"
    )
    downgrade = subparser(
        actions,
        "downgrade",
        "Downgrade the job tables to REVISION; `base` drops them and their jobs.",
        cmd_schema_downgrade,
    )
    downgrade.add_argument(
        "revision", metavar="REVISION", nargs="?", help="target revision, or base (required)"
    )
    subparser(
        actions,
        "current",
        "Show the schema revision of the database and whether it is the head.",
        cmd_schema_current,
    )
    sql = subparser(
        actions,
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
    grants = subparser(
        actions,
        "grants",
        "Print (or --apply) the GRANTs a least-privilege app role and worker role need on the "
        "job tables (in --schema, else the app's schema, else public); run them as the tables' "
        "owner. See docs/security.md.",
        cmd_schema_grants,
    )
    grants.add_argument(
        "--app-role", metavar="NAME", help="the role of the web app (defer, read, manage jobs)"
    )
    grants.add_argument("--worker-role", metavar="NAME", help="the role of the workers")
    grants.add_argument(
        "--apply", action="store_true", help="run the GRANTs on the database instead of printing"
    )
