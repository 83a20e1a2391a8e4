"""Least privilege on a server that asks for passwords (``scram-sha-256`` over TCP), as a
production server does: an owner role migrates, an app role defers through the connectors, a
real ``sqla-jobs worker`` process runs the jobs as the worker role, and neither of the two is
allowed DDL, TRUNCATE or the other's tables. A wrong password is refused with an error that
says so and never shows the password, whichever connector and construction form carried it.

The server is this module's own (`password_helpers.ScramServer`), whatever DATABASE_URL says:
the machine's shared server trusts its clients and must not be reconfigured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from password_helpers import (
    ScramServer,
    assert_hidden,
    build_connector,
    connector_forms,
    exception_texts,
    new_password,
    password_token,
)
from psycopg import sql
from test_roles import FORBIDDEN, assert_refused

import sqla_jobs
from sqla_jobs import migrations
from sqla_jobs.grants import grant_statements

if TYPE_CHECKING:
    from conftest import Connectors

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "acceptance" / "apps"
WORKER_TIMEOUT = 60  # seconds the worker process may take to drain the queue


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    password: str
    url: str


@dataclasses.dataclass(frozen=True)
class ScramDatabase:
    server: ScramServer
    dbname: str
    owner: Role
    app: Role
    worker: Role


@pytest.fixture(scope="module")
def scram_db() -> Iterator[ScramDatabase]:
    """A database owned by the owner role, migrated by it, with the app and worker roles
    granted what `grant_statements` gives them; every role logs in with a password."""
    server = ScramServer()
    try:
        suffix = secrets.token_hex(3)
        dbname = f"jobs 'db' {suffix}"
        names = {
            "owner": f"o'wner {suffix}",
            "app": f"sqla jobs app {suffix}",
            "worker": f'sqla "worker" {suffix}',
        }
        roles = {}
        for kind, name in names.items():
            password = new_password()
            server.admin(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            roles[kind] = Role(name, password, server.role_url(name, password, dbname))
        server.admin(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(names["owner"])
            )
        )
        # Schema public belongs to the database's owner (PostgreSQL 15+); on older servers
        # every role could create in it.
        server.admin("REVOKE CREATE ON SCHEMA public FROM PUBLIC", dbname)
        migrations.upgrade(roles["owner"].url)
        with psycopg.connect(roles["owner"].url, autocommit=True) as owner:
            for statement in grant_statements(app_role=names["app"], worker_role=names["worker"]):
                owner.execute(statement)
        yield ScramDatabase(server, dbname, roles["owner"], roles["app"], roles["worker"])
    finally:
        server.close()


def test_the_owner_migrated_and_every_role_logs_in_with_a_scram_password(
    scram_db: ScramDatabase,
) -> None:
    with psycopg.connect(scram_db.owner.url) as owner:
        tables = owner.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE tablename LIKE 'sqla_jobs%%'"
        ).fetchall()
    assert len(tables) >= 5
    assert {owner for _, owner in tables} == {scram_db.owner.name}
    assert migrations.current(scram_db.owner.url) == migrations.head()
    stored = scram_db.server.admin("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin")
    roles = (scram_db.owner, scram_db.app, scram_db.worker)
    assert {name: hashed.split("$")[0] for name, hashed in stored if hashed} == {
        role.name: "SCRAM-SHA-256" for role in roles
    }
    no_password = scram_db.server.role_url(scram_db.app.name, "", scram_db.dbname)
    no_password = no_password.replace(":@", "@", 1)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password).close()


async def test_the_app_role_defers_through_the_connectors_and_a_worker_process_runs_the_jobs(
    scram_db: ScramDatabase, connectors: type[Connectors], tmp_path: Path
) -> None:
    files: dict[str, Path] = {}
    ids: dict[str, int] = {}
    for kind in connectors.ALL:
        app = sqla_jobs.App(connector=connectors.from_dsn(kind, scram_db.app.url))
        task = app.configure_task("write_file")  # cli_demo_app's task
        files[kind] = tmp_path / kind
        if app.connector.can_run_worker:
            async with app.open_async():
                ids[kind] = await task.defer_async(path=str(files[kind]), text=kind)
        else:
            with app.open():
                ids[kind] = task.defer(path=str(files[kind]), text=kind)

    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sqla_jobs", "--app", "cli_demo_app:app", "worker", "--no-wait"],
        env=_cli_env(scram_db.worker.url),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
    )

    assert worker.returncode == 0, worker.stderr
    assert {kind: path.read_text() for kind, path in files.items()} == {k: k for k in files}
    reader = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=scram_db.app.url))
    with reader.open():
        statuses = {kind: reader.job_manager.get_job(i).status.value for kind, i in ids.items()}
    assert statuses == dict.fromkeys(ids, "succeeded")
    assert "permission denied" not in worker.stderr


def test_the_password_forms_cover_every_connector(connectors: type[Connectors]) -> None:
    assert {kind for kind, _ in connector_forms()} == set(connectors.ALL)


@pytest.mark.parametrize("kind", ["app", "worker"])
def test_each_forbidden_statement_is_refused_to_the_app_and_worker_roles(
    scram_db: ScramDatabase, kind: str
) -> None:
    role: Role = getattr(scram_db, kind)
    extra = ["INSERT INTO sqla_jobs_workers (name) VALUES ('x')"] if kind == "app" else []
    assert_refused(role.url, [*FORBIDDEN, *extra])


@pytest.mark.parametrize(("kind", "form"), connector_forms())
async def test_a_wrong_password_is_refused_saying_so_without_showing_it(
    scram_db: ScramDatabase,
    connectors: type[Connectors],
    kind: str,
    form: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = new_password()
    url = scram_db.server.role_url(scram_db.app.name, wrong, scram_db.dbname)
    connector = build_connector(connectors, kind, form, url, monkeypatch)
    app = sqla_jobs.App(connector=connector)

    with pytest.raises(sqla_jobs.ConnectionFailed) as caught:
        if connector.can_run_worker:
            await app.open_async()
        else:
            app.configure_task("tests.anything").defer()
    await app.close_async()

    assert "password authentication failed" in str(caught.value)
    assert_hidden(
        password_token(wrong),
        repr(connector),
        str(connector),
        connector.describe(),
        repr(app),
        *exception_texts(caught.value),
        caplog.text,
        *(repr(record.args) for record in caplog.records),
    )


@pytest.mark.parametrize("verbosity", [[], ["-vv"]], ids=["quiet", "debug"])
def test_the_cli_refuses_a_wrong_password_saying_so_without_showing_it(
    scram_db: ScramDatabase, verbosity: list[str]
) -> None:
    wrong = new_password()
    url = scram_db.server.role_url(scram_db.app.name, wrong, scram_db.dbname)
    result = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", *verbosity, "defer", "tests.anything", "{}"],
        env=_cli_env(url),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
    )

    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert_hidden(password_token(wrong), result.stdout, result.stderr)


def _cli_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("SQLA_JOBS_APP", None)
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(APPS), os.environ.get("PYTHONPATH", "")) if p
    )
    return env
