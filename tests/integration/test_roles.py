"""Least privilege, on PostgreSQL: an app role and a worker role given only
`sqla_jobs.grants.grant_statements` do all their work, and are refused everything else (DDL,
TRUNCATE, other roles' tables)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import sqla_jobs
from sqla_jobs.grants import grant_statements, quote_identifier
from sqla_jobs.jobs import JobSpec
from sqla_jobs.periodic import PeriodicTick
from sqla_jobs.worker.database import WorkerDatabase

FORBIDDEN = [
    "CREATE TABLE sneaky (id int)",
    "ALTER TABLE sqla_jobs_jobs ADD COLUMN sneaky int",
    "DROP TABLE sqla_jobs_job_events",
    "TRUNCATE sqla_jobs_jobs",
    "CREATE INDEX sneaky ON sqla_jobs_jobs (queue)",
    "DROP TRIGGER sqla_jobs_status_change ON sqla_jobs_jobs",
    "ALTER TABLE sqla_jobs_jobs DISABLE TRIGGER ALL",
    "ALTER TABLE sqla_jobs_jobs OWNER TO CURRENT_USER",
    "DELETE FROM sqla_jobs_alembic_version",
]


@pytest.fixture
def roles(db_url: str) -> Iterator[dict[str, str]]:
    """An app role and a worker role (login, no password: the test server trusts local
    connections), granted what `grant_statements` gives; their URLs."""
    suffix = uuid.uuid4().hex[:8]
    names = {"app": f"sqla jobs app {suffix}", "worker": f'sqla "worker" {suffix}'}
    with psycopg.connect(db_url, autocommit=True) as owner:
        for name in names.values():
            owner.execute(f"CREATE ROLE {quote_identifier(name)} LOGIN")
        # PostgreSQL before 15 lets every role create in schema public: take that back.
        owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for statement in grant_statements(app_role=names["app"], worker_role=names["worker"]):
            owner.execute(statement)
    try:
        yield {kind: make_conninfo(db_url, user=name) for kind, name in names.items()}
    finally:
        with psycopg.connect(db_url, autocommit=True) as owner:
            for name in names.values():
                owner.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    [name],
                )
                owner.execute(f"DROP OWNED BY {quote_identifier(name)}")
                owner.execute(f"DROP ROLE {quote_identifier(name)}")


def test_the_grants_quote_hostile_names() -> None:
    statements = grant_statements(app_role='a"b; DROP TABLE x', schema="my schema")
    assert statements[0] == 'GRANT USAGE ON SCHEMA "my schema" TO "a""b; DROP TABLE x"'
    assert all(statement.endswith('TO "a""b; DROP TABLE x"') for statement in statements)
    with pytest.raises(ValueError, match="Name an app role"):
        grant_statements()


async def test_the_app_role_defers_reads_and_manages_jobs_and_nothing_else(
    roles: dict[str, str],
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=roles["app"]))
    task = app.configure_task("tests.anything")
    manager = app.job_manager
    async with app.open_async():
        first = await task.defer_async(n=1)
        task.batch_defer(*({"n": n} for n in range(3)))
        await task.batch_defer_async(*({"n": n} for n in range(1500)))  # COPY
        second = task.defer(n=2)
        # Tags and meta (one, batch, COPY) and unique jobs: the table's grants cover them.
        tagged = app.configure_task("tests.anything", tags=["tenant:7"], meta={"m": 1})
        await tagged.defer_async(n=3)
        tagged.batch_defer(*({"n": n} for n in range(1500)))
        unique = app.configure_task("tests.anything", unique=True, on_conflict="return_existing")
        unique_id = unique.defer(n=4)
        assert await unique.defer_async(n=4) == unique_id
        assert len(manager.list_jobs(tags=["tenant:7"], limit=2000)) == 1501
        assert manager.count_jobs(tags=["tenant:7"])
        added = [unique_id, *(job.id for job in manager.list_jobs(tags=["tenant:7"], limit=2000))]
        deleted = manager.run(sqla_jobs.operations.act_on_jobs("delete", added))
        assert sorted(deleted.done) == sorted(added)
        assert manager.get_job(first).args == {"n": 1}
        assert len(manager.list_jobs(limit=2000)) == 1505
        assert manager.count_jobs()
        assert manager.list_workers() == []
        assert manager.cancel_job(first) is True
        assert manager.retry_job(first) is True
        assert [event.status for event in manager.get_job_history(first)][-1].value == "todo"
        assert manager.abort_job(second) is sqla_jobs.JobStatus.CANCELLED
        assert manager.delete_job(second) is True
        assert manager.prune_jobs(datetime.timedelta(0)) == 0
        # Workflows: deferred, read, cancelled (the triggers cascade), deleted.
        run = app.defer_workflow(sqla_jobs.chain(task.step(n=5), task.step(n=6)))
        assert len(manager.get_workflow(run.workflow_id).dependencies) == 1
        assert manager.cancel_workflow(run.workflow_id) == 2
        assert manager.retry_job(run.job_ids[0]) is True
        assert manager.delete_job(run.job_ids[0]) is True
    assert_refused(roles["app"], [*FORBIDDEN, "INSERT INTO sqla_jobs_workers (name) VALUES ('x')"])


async def test_the_worker_role_runs_jobs_and_periodic_ticks_and_nothing_else(
    roles: dict[str, str],
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=roles["worker"]))
    ran: list[Any] = []

    @app.task(name="tests.work", retry=1)
    async def work(n: int) -> None:
        ran.append(n)
        if n == 0:
            await follow_up.defer_async(n=99)  # a task that defers
        if n == 1 and len(ran) < 3:
            raise RuntimeError("once")

    @app.task(name="tests.follow_up")
    def follow_up(n: int) -> None:
        ran.append(n)

    async with app.open_async():
        await work.batch_defer_async({"n": 0}, {"n": 1}, {"n": 2})
        # A workflow whose parent the worker deletes as it succeeds (delete_jobs="successful").
        await app.defer_workflow_async(sqla_jobs.chain(work.step(n=3), follow_up.step(n=4)))
        worker = sqla_jobs.Worker(
            app, sqla_jobs.WorkerOptions(wait=False, delete_jobs="successful")
        )
        await worker.run()
        # The periodic deferrer's statements (a worker waiting for work runs them on its own).
        database = WorkerDatabase(app.connector)
        tick = PeriodicTick(JobSpec(task_name="tests.follow_up", args={"n": 7}), "", 60)
        assert list(await database.defer_periodic([tick])) == [tick.key]
        assert await database.prune_periodic_defers(keep=0, before=120) == 1
    assert sorted(ran) == [0, 1, 1, 2, 3, 4, 99]
    assert_refused(roles["worker"], FORBIDDEN)


def assert_refused(url: str, statements: list[str]) -> None:
    allowed = []
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            try:
                connection.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            allowed.append(statement)
    assert allowed == []
