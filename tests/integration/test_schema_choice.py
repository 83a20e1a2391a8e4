"""The job tables in a PostgreSQL schema of the user's choice (``App(schema=...)``), with a
hostile name, through every connector: migrations, defer (one, batch, COPY, ``bind=``), the job
manager, the worker (claim, finish, retry, periodic ticks, stalled recovery), the CLI. The
connections' ``search_path`` never includes the schema: every statement names it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

import sqla_jobs
from sqla_jobs import migrations, queries
from sqla_jobs.grants import quote_identifier
from sqla_jobs.jobs import JobSpec
from sqla_jobs.periodic import PeriodicTick
from sqla_jobs.worker.database import WorkerDatabase

#: A space, a double quote, a single quote, a percent sign (the drivers' placeholder mark) and
#: a colon (SQLAlchemy's): each must be quoted or escaped wherever the name appears.
HOSTILE = "a b\"c'd%e:f"


@pytest.fixture(params=[HOSTILE, "jobs"], ids=["hostile", "plain"])
def schema_url(request: pytest.FixtureRequest, empty_db_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database with the job tables at head in schema ``schema``, none in public."""
    schema: str = request.param
    migrations.upgrade(empty_db_url, schema=schema)
    yield empty_db_url, schema


def _tables(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name LIKE 'sqla\\_jobs\\_%'"
        ).fetchall()
    found: dict[str, set[str]] = {}
    for schema, table in rows:
        found.setdefault(schema, set()).add(table)
    return found


def test_migrations_create_every_table_in_the_schema_and_nothing_in_public(
    schema_url: tuple[str, str],
) -> None:
    url, schema = schema_url

    assert _tables(url) == {
        schema: {*sqla_jobs.schema.metadata.tables, sqla_jobs.schema.VERSION_TABLE}
    }
    assert migrations.current(url, schema=schema) == migrations.head()
    assert migrations.current(url) is None  # the search_path's schema has none
    with psycopg.connect(url) as conn:
        search_path = conn.execute("SHOW search_path").fetchone()
    assert search_path is not None and schema not in search_path[0]  # restored, not saved

    migrations.downgrade(url, "base", schema=schema)
    assert _tables(url) == {schema: {sqla_jobs.schema.VERSION_TABLE}}  # Alembic keeps it
    migrations.upgrade(url, schema=schema)  # and back
    assert migrations.current(url, schema=schema) == migrations.head()


def test_a_host_alembic_run_keeps_its_search_path(empty_db_url: str) -> None:
    """Inside the host's transaction (its env.py calls upgrade on its connection), our
    migrations point the search_path at our schema only while they run."""
    engine = sa.create_engine(migrations.driver_url(empty_db_url), poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL search_path TO public")
        migrations.upgrade(connection, schema=HOSTILE)
        assert connection.exec_driver_sql("SHOW search_path").scalar_one() == "public"
        connection.exec_driver_sql("CREATE TABLE host_table (id int)")
    assert "host_table" in {name for name in sa.inspect(engine).get_table_names(schema="public")}
    assert migrations.current(engine, schema=HOSTILE) == migrations.head()
    engine.dispose()


async def test_every_connector_defers_manages_and_runs_jobs_in_the_schema(
    schema_url: tuple[str, str], connector_kind: str, connectors: type
) -> None:
    url, schema = schema_url
    app = sqla_jobs.App(connector=connectors.from_dsn(connector_kind, url), schema=schema)
    seen: list[dict[str, object]] = []

    @app.task(name="record", retry=1)
    def record(**kwargs: object) -> None:
        if kwargs.get("fail_once") and not any(s.get("fail_once") for s in seen):
            seen.append(kwargs)
            raise RuntimeError("first attempt fails")
        seen.append(kwargs)

    manager = app.job_manager
    await app.open_async()
    try:
        one = await record.configure(queue="q", lock="l", queueing_lock="ql").defer_async(n=1)
        with pytest.raises(sqla_jobs.AlreadyEnqueued):
            await record.configure(queueing_lock="ql").defer_async(n=2)
        batch = await record.batch_defer_async(*[{"n": i} for i in range(3)])
        big = await record.batch_defer_async(
            *[{"n": i} for i in range(manager.copy_threshold + 5)]
        )  # COPY where the connector can
        retried = await record.defer_async(fail_once=True)
        cancelled = await record.defer_async(n=-1)
        assert await manager.cancel_job_async(cancelled)
        # Tags and meta (one, batch, COPY), the tags' filters, a unique job (its index).
        tagged = record.configure(tags=["t:1"], meta={"m": 1})
        tagged_ids = [await tagged.defer_async(n=10), *tagged.batch_defer({"n": 11})]
        tagged_ids += await tagged.batch_defer_async(
            *[{"n": i} for i in range(manager.copy_threshold)]
        )
        listed_by_tag = await manager.list_jobs_async(tags=["t:1"], limit=10_000)
        assert sorted(job.id for job in listed_by_tag) == sorted(tagged_ids)
        assert listed_by_tag[0].meta == {"m": 1}
        by_tag = await manager.count_jobs_async(tags=["t:1"])
        assert by_tag == {("default", sqla_jobs.JobStatus.TODO): len(tagged_ids)}
        unique = record.configure(unique=True, on_conflict="return_existing")
        unique_id = await unique.defer_async(n=20)
        assert unique.defer(n=20) == unique_id
        assert unique.batch_defer({"n": 20}) == [unique_id]
        with pytest.raises(sqla_jobs.AlreadyEnqueued):
            record.configure(unique=True).defer(n=20)

        assert (await manager.get_job_async(one)).queue == "q"
        listed = await manager.list_jobs_async(queue="q")
        assert [job.id for job in listed] == [one]
        counts = await manager.count_jobs_async()
        extra = len(tagged_ids) + 1
        assert counts[("default", sqla_jobs.JobStatus.TODO)] == 3 + len(big) + 1 + extra

        if app.connector.can_run_worker:
            worker_app = app
        else:
            worker_app = app.with_connector(sqla_jobs.PsycopgConnector(conninfo=url))
            await worker_app.open_async()
        try:
            await worker_app.run_worker_async(
                wait=False, install_signal_handlers=False, polling_interval=0.1
            )
        finally:
            if worker_app is not app:
                await worker_app.close_async()

        statuses = {job.id: job.status for job in await manager.list_jobs_async(limit=10_000)}
        assert statuses.pop(cancelled) == sqla_jobs.JobStatus.CANCELLED
        assert await manager.retry_job_async(cancelled)
        assert set(statuses.values()) == {sqla_jobs.JobStatus.SUCCEEDED}
        assert len(statuses) == 1 + len(batch) + len(big) + 1 + extra
        history = [event.status for event in await manager.get_job_history_async(retried)]
        assert history == ["todo", "doing", "todo", "doing", "succeeded"]  # via the trigger
        assert await manager.delete_job_async(one)
        assert await manager.prune_jobs_async(older_than=datetime.timedelta(0)) > 0
    finally:
        await app.close_async()

    assert set(_tables(url)) == {schema}  # nothing was written anywhere else


def test_deferring_in_the_hosts_transaction_writes_to_the_schema(
    schema_url: tuple[str, str],
) -> None:
    url, schema = schema_url
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=url), schema=schema)
    engine = sa.create_engine(migrations.driver_url(url), poolclass=sa.NullPool)
    with engine.begin() as connection:
        job_id = app.configure_task("t", bind=connection).defer(x=1)
    with engine.connect() as connection:
        table = f"{quote_identifier(schema)}.sqla_jobs_jobs".replace("%", "%%")
        row = connection.exec_driver_sql(
            f"SELECT task_name FROM {table} WHERE id = %(id)s", {"id": job_id}
        ).one()
    assert row.task_name == "t"
    engine.dispose()


async def test_the_workers_own_statements_work_in_the_schema(
    schema_url: tuple[str, str],
) -> None:
    """Registering, heartbeats, recovery of a dead worker's jobs and periodic ticks, which
    draw job ids from the schema's sequence."""
    url, schema = schema_url
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=url), schema=schema)
    database = WorkerDatabase(app.connector, app.statements)
    async with app.open_async():
        await database.check_schema()
        dead = await database.register_worker(name="dead", queues=None, concurrency=1)
        live = await database.register_worker(name="live", queues=None, concurrency=1)
        job_id = await app.configure_task("t").defer_async()
        assert [job.id for job in await database.claim(worker_id=dead, queues=None, limit=5)] == [
            job_id
        ]
        assert await database.heartbeat(live)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {quote_identifier(schema).replace('%', '%%')}.sqla_jobs_workers "
                "SET last_heartbeat = now() - interval '1 hour' WHERE id = %s",
                [dead],
            )
        recovered = await database.recover_stalled_jobs(
            worker_id=live, worker_name="live", stalled_timeout=60, strategies={}
        )
        assert [job.stalled.job.id for job in recovered] == [job_id]
        tick = PeriodicTick(spec=JobSpec(task_name="tick", args={}), periodic_id="", timestamp=1)
        deferred = await database.defer_periodic([tick])
        tick_job = deferred[tick.key]
        assert tick_job is not None
        assert (await app.job_manager.get_job_async(tick_job)).task_name == "tick"


@pytest.mark.parametrize("kind", ["psycopg", "aiopg"])
async def test_execution_controls_work_in_the_schema(
    schema_url: tuple[str, str], kind: str
) -> None:
    """Pauses and limits, and the controlled claim with the statements it sends ahead, all
    name the schema (psycopg 3 through client-side binding, aiopg as it is)."""
    url, schema = schema_url
    connector: sqla_jobs.BaseConnector = (
        sqla_jobs.PsycopgConnector(conninfo=url)
        if kind == "psycopg"
        else sqla_jobs.AiopgConnector(dsn=url)
    )
    app = sqla_jobs.App(connector=connector, schema=schema)
    database = WorkerDatabase(app.connector, app.statements)
    async with app.open_async():
        worker = await database.register_worker(name="w", queues=None, concurrency=1)
        for n in range(5):
            await app.configure_task("t", queue="limited").defer_async(n=n)
            await app.configure_task("t", queue="paused").defer_async(n=n)
        manager = app.job_manager
        await manager.set_queue_limits_async("limited", concurrency_limit=2, rate_limit="10/s")
        await manager.pause_queue_async("paused")
        assert await database.claim(worker_id=worker, queues=None, limit=5) == []
        for queues in (None, ["limited", "paused"]):
            claimed = await database.claim(
                worker_id=worker, queues=queues, limit=5, controlled=True
            )
            assert [job.queue for job in claimed] == (
                ["limited", "limited"] if queues is None else []
            )
        assert {(c.name, c.paused) for c in await manager.list_controls_async()} == {
            ("limited", False),
            ("paused", True),
        }


def test_the_statements_name_the_schema_quoted_and_nothing_else_changes() -> None:
    statements = queries.for_schema(HOSTILE)
    quoted = '"a b""c\'d%%e:f".'  # %-doubled: the drivers read %% as %
    in_literal = quoted.replace("'", "''")  # inside '...'::regclass
    for default in queries.ALL:
        sql = statements[default].sql
        if "sqla_jobs_" not in default.sql:  # pg_notify
            assert sql == default.sql
            continue
        assert quoted in sql or in_literal in sql, default.name
        assert sql.replace(in_literal, "").replace(quoted, "") == default.sql, default.name
    assert queries.for_schema(HOSTILE) is statements  # rendered once per schema
    assert queries.for_schema(None) is queries.DEFAULT


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        ("", "must not be empty"),
        ("x" * 64, "at most 63 bytes"),
        ("a\x00b", "NUL"),
        ("\ud800", "lone surrogate"),
        (42, "must be a string"),
    ],
)
def test_a_schema_name_postgresql_would_refuse_or_cut_is_refused_at_once(
    schema: object, error: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(), schema=schema)  # type: ignore[arg-type]


def test_the_command_line_takes_the_schema(schema_url: tuple[str, str], tmp_path: object) -> None:
    url, schema = schema_url
    env = {**os.environ, "DATABASE_URL": url, "SQLA_JOBS_SCHEMA": schema}
    env.pop("SQLA_JOBS_APP", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sqla_jobs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    current = cli("schema", "current")
    assert current.returncode == 0 and "(head)" in current.stdout, current
    deferred = cli("defer", "some_task", '{"a": 1}')
    assert deferred.returncode == 0, deferred
    listed = cli("jobs", "list")
    assert listed.returncode == 0 and "some_task" in listed.stdout, listed
    health = cli("healthchecks")
    assert health.returncode == 0, health
    grants = cli("schema", "grants", "--app-role", "web")
    assert f'{quote_identifier(schema)}."sqla_jobs_jobs"' in grants.stdout, grants
    elsewhere = cli("--schema", "nowhere", "schema", "current")
    assert "none" in elsewhere.stdout, elsewhere


async def test_an_abort_in_one_schema_leaves_the_same_job_id_of_another_schema_running(
    empty_db_url: str,
) -> None:
    """Two apps in one database, each in its schema: their job ids overlap, and the abort
    NOTIFY (a job id) reaches the workers of both. Only the job asked to abort stops."""
    url = empty_db_url
    apps = {}
    started = {name: asyncio.Event() for name in ("a", "b")}
    release = asyncio.Event()
    for name in ("a", "b"):
        migrations.upgrade(url, schema=f"tenant_{name}")
        app = sqla_jobs.App(
            connector=sqla_jobs.PsycopgConnector(conninfo=url), schema=f"tenant_{name}"
        )

        @app.task(name="tests.long")
        async def long(tenant: str) -> str:
            started[tenant].set()
            await release.wait()
            return tenant

        apps[name] = app

    def status(name: str, job_id: int) -> str:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                f"SELECT status FROM {quote_identifier('tenant_' + name)}.sqla_jobs_jobs "
                "WHERE id = %s",
                (job_id,),
            ).fetchone()
        assert row is not None
        return str(row[0])

    async def reaches(name: str, job_id: int, wanted: str) -> bool:
        for _ in range(100):  # 5 s
            if status(name, job_id) == wanted:
                return True
            await asyncio.sleep(0.05)
        return False

    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.open_async())
        ids = {
            name: await app.tasks["tests.long"].defer_async(tenant=name)
            for name, app in apps.items()
        }
        assert ids["a"] == ids["b"]  # each schema has its own id sequence
        workers = {
            name: sqla_jobs.Worker(
                app,
                sqla_jobs.WorkerOptions(
                    wait=True,
                    install_signal_handlers=False,
                    heartbeat_interval=60,
                    stalled_timeout=360,
                ),
            )
            for name, app in apps.items()
        }
        runs = [asyncio.create_task(worker.run()) for worker in workers.values()]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(event.wait() for event in started.values())), timeout=10
            )
            aborted = await apps["a"].job_manager.abort_job_async(ids["a"])
            assert aborted is sqla_jobs.JobStatus.ABORTING
            assert await reaches("a", ids["a"], "aborted")  # through NOTIFY: the heartbeat is 60 s
            await asyncio.sleep(0.3)
            assert status("b", ids["b"]) == "doing"  # the same id, in the other schema
            release.set()
            assert await reaches("b", ids["b"], "succeeded")
        finally:
            release.set()
            for worker in workers.values():
                worker.stop()
            await asyncio.wait_for(asyncio.gather(*runs), timeout=10)
