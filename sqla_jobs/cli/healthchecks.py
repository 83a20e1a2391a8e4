"""``sqla-jobs healthchecks``: the database reachable, the schema at this version's head, the
workers listed. Exit status 0 when every check passes, 1 otherwise."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..app import App
from ..errors import JobsError
from .common import build_app, database_errors, one_line, subparser

#: A worker whose last heartbeat is older than this is reported as probably dead.
_STALE_HEARTBEAT_SECONDS = 60.0


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
        checks = run_healthchecks(app)
    finally:
        app.close()
    for check in checks:
        print("\n".join(check.lines()))
    return 0 if all(check.ok for check in checks) else 1


def run_healthchecks(app: App) -> list[Check]:
    """Database reachable, schema at this version's head, workers alive (listed, not judged:
    a deployment may start its workers after its health checks)."""
    from .. import migrations  # Alembic loads only for the commands that use it

    connector = app.connector
    engine = connector.sqlalchemy_engine()
    checks: list[Check] = []
    try:
        with database_errors(connector), engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except JobsError as exc:
        checks.append(Check("database", False, one_line(str(exc))))
        return checks
    checks.append(Check("database", True, f"connected ({connector.describe()})"))

    head = migrations.head()
    with database_errors(connector):
        revision = migrations.current(engine, schema=app.schema)
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

    with database_errors(connector):
        rows = app.job_manager.list_workers()
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


def add_healthchecks_command(commands: Any) -> None:
    """Add ``healthchecks`` to the command line's subcommands."""
    subparser(
        commands,
        "healthchecks",
        "Check the database connection and the schema revision; list the workers.",
        cmd_healthchecks,
    )
