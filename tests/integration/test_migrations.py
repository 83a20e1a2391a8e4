"""The shipped migrations against a real PostgreSQL: schema agreement, triggers, round trips,
the command line at the repository root, and a host application's own Alembic environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from helpers import sqlalchemy_url

import sqla_jobs
from sqla_jobs import migrations, queries
from sqla_jobs.schema import NOTIFY_CHANNEL, VERSION_TABLE, metadata

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def listener(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        for channel in (NOTIFY_CHANNEL, "sqla_jobs_abort", END_CHANNEL):
            connection.execute(f"LISTEN {channel}")
        yield connection


END_CHANNEL = "test_end"


def received(listener: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    """Every notification committed so far (channel, payload), in order, without sleeping.

    PostgreSQL delivers notifications in commit order, so once the listener hears its own
    end marker, everything committed before has arrived.
    """
    listener.execute(f"NOTIFY {END_CHANNEL}")
    notifications = []
    for notification in listener.notifies(timeout=10):
        if notification.channel == END_CHANNEL:
            return notifications
        notifications.append((notification.channel, notification.payload))
    raise AssertionError(f"no end marker within 10 s; received {notifications}")


def events(connection: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return connection.execute(
        "SELECT job_id, status::text, error FROM sqla_jobs_job_events ORDER BY id"
    ).fetchall()


def insert_jobs(
    connection: psycopg.Connection[tuple[object, ...]], *rows: tuple[str, str]
) -> list[int]:
    """Insert (queue, status) rows in one statement, as a batch defer does; their ids."""
    values = ", ".join(["(%s, 'task', %s::sqla_jobs_job_status)"] * len(rows))
    params = [value for row in rows for value in row]
    return [
        row[0]
        for row in connection.execute(
            f"INSERT INTO sqla_jobs_jobs (queue, task_name, status) VALUES {values} RETURNING id",
            params,
        ).fetchall()
    ]


# --- the schema the migrations build is the schema in schema.py ---------------------------


def test_autogenerate_finds_no_difference_between_migrations_and_schema(
    engine: sa.Engine,
) -> None:
    with warnings.catch_warnings():
        # An index that Alembic or SQLAlchemy cannot compare (an expression they do not
        # understand) is skipped with a warning: make that a failure, not a silent pass.
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", sa.exc.SAWarning)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []


def catalog(url: str) -> dict[str, list[tuple[object, ...]]]:
    """What PostgreSQL itself says about our tables, in its own canonical DDL.

    Autogenerate compares neither index predicates nor enum labels; these catalog queries do.
    """
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,
                   is_identity, identity_generation
            FROM information_schema.columns
            WHERE table_name LIKE 'sqla_jobs%%' AND table_name <> %(version_table)s
            ORDER BY table_name, column_name""",
        "indexes": """
            SELECT indexname, indexdef FROM pg_indexes
            WHERE tablename LIKE 'sqla_jobs%%' AND tablename <> %(version_table)s
            ORDER BY indexname""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint
            WHERE conrelid::regclass::text LIKE 'sqla_jobs%%'
              AND conrelid::regclass::text <> %(version_table)s
            ORDER BY conname""",
        "comments": """
            SELECT c.relname, a.attname, col_description(c.oid, a.attnum),
                   obj_description(c.oid, 'pg_class')
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relname LIKE 'sqla_jobs%%' AND c.relkind = 'r'
              AND c.relname <> %(version_table)s
            ORDER BY c.relname, a.attname""",
        "enum_labels": """
            SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
            ORDER BY t.typname, e.enumsortorder""",
    }
    with psycopg.connect(url) as connection:
        return {
            name: connection.execute(query, {"version_table": VERSION_TABLE}).fetchall()
            for name, query in queries.items()
        }


def test_migrated_catalog_equals_the_catalog_create_all_builds(
    db_url: str, empty_db_url: str
) -> None:
    engine = sa.create_engine(sqlalchemy_url(empty_db_url), poolclass=sa.NullPool)
    with engine.begin() as conn:
        metadata.create_all(conn)
    engine.dispose()

    migrated, created = catalog(db_url), catalog(empty_db_url)

    assert migrated["indexes"], "the catalog query found no index: it is looking elsewhere"
    for part in created:
        assert migrated[part] == created[part], part


def test_current_is_none_before_the_first_upgrade_and_head_after(empty_db_url: str) -> None:
    assert migrations.current(empty_db_url) is None

    migrations.upgrade(empty_db_url)

    assert migrations.current(empty_db_url) == migrations.head() == "0010_workflows"


# --- triggers and the history -------------------------------------------------------------


def history(
    connection: psycopg.Connection[tuple[object, ...]], job_id: int
) -> list[tuple[str, str | None]]:
    """(status, error) of each step of the job's history, through the library's query."""
    rows = connection.execute(queries.job_history.sql, {"job_id": job_id}).fetchall()
    return [(str(status), error) for status, _, error in rows]  # type: ignore[misc]


def stored_events(connection: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return events(connection)


def update(
    connection: psycopg.Connection[tuple[object, ...]], job_id: int, **values: object
) -> None:
    """One UPDATE of a job, setting ``now()`` where a value is "now"."""
    sets = ", ".join(
        f"{column} = now()" if value == "now" else f"{column} = %({column})s"
        for column, value in values.items()
    )
    connection.execute(
        f"UPDATE sqla_jobs_jobs SET {sets} WHERE id = %(id)s",
        {**{k: v for k, v in values.items() if v != "now"}, "id": job_id},
    )


def test_insert_writes_no_event_and_notifies_each_queue_with_work_once(
    connection: psycopg.Connection[tuple[object, ...]],
    listener: psycopg.Connection[tuple[object, ...]],
) -> None:
    ids = insert_jobs(connection, ("emails", "todo"), ("emails", "todo"), ("sms", "todo"))
    insert_jobs(connection, ("reports", "doing"))

    assert stored_events(connection) == []  # creation is the row's created_at
    assert [history(connection, job_id) for job_id in ids] == [[("todo", None)]] * 3
    notified = received(listener)
    assert sorted(notified) == [(NOTIFY_CHANNEL, "emails"), (NOTIFY_CHANNEL, "sms")]


def test_claims_and_ends_write_no_event_and_the_history_reads_them_from_the_row(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    failed, aborted, succeeded, cancelled = insert_jobs(connection, *[("q", "todo")] * 4)
    for job_id in (failed, aborted, succeeded):
        update(connection, job_id, status="doing", started_at="now")
    for job_id, status in [(failed, "failed"), (aborted, "aborted"), (succeeded, "succeeded")]:
        update(connection, job_id, status=status, finished_at="now", last_error=f"boom {job_id}")
    update(connection, cancelled, status="cancelled", finished_at="now")
    # Not a status change: nothing either.
    connection.execute("UPDATE sqla_jobs_jobs SET attempts = attempts + 1")

    assert stored_events(connection) == []
    assert history(connection, failed) == [
        ("todo", None),
        ("doing", None),
        ("failed", f"boom {failed}"),
    ]
    assert history(connection, aborted)[-1] == ("aborted", f"boom {aborted}")
    # A success carries no error, even where the row keeps one from an earlier run.
    assert history(connection, succeeded) == [("todo", None), ("doing", None), ("succeeded", None)]
    assert history(connection, cancelled) == [("todo", None), ("cancelled", None)]


def test_a_retry_keeps_the_run_it_ends_and_its_error_as_events(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    [job_id] = insert_jobs(connection, ("q", "todo"))
    update(connection, job_id, status="doing", started_at="now")
    first_start = connection.execute(
        "SELECT started_at FROM sqla_jobs_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    update(connection, job_id, status="todo", last_error="try again")
    update(connection, job_id, status="doing", started_at="now")
    update(connection, job_id, status="succeeded", finished_at="now")

    assert [(status, error) for _, status, error in stored_events(connection)] == [
        ("doing", None),
        ("todo", "try again"),
    ]
    stored_start = connection.execute(
        "SELECT at FROM sqla_jobs_job_events WHERE status = 'doing'"
    ).fetchone()
    assert stored_start == first_start
    assert history(connection, job_id) == [
        ("todo", None),
        ("doing", None),
        ("todo", "try again"),
        ("doing", None),
        ("succeeded", None),
    ]


def test_a_finished_job_retried_by_hand_keeps_its_run_and_its_end(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    [job_id] = insert_jobs(connection, ("q", "todo"))
    update(connection, job_id, status="doing", started_at="now")
    update(connection, job_id, status="failed", finished_at="now", last_error="boom")
    # As retry_job does: back to todo, the run's times cleared.
    update(connection, job_id, status="todo", started_at=None, finished_at=None)

    assert history(connection, job_id) == [
        ("todo", None),
        ("doing", None),
        ("failed", "boom"),
        ("todo", None),
    ]


def test_abort_request_is_an_event_and_notifies_the_abort_channel_with_the_job_id(
    connection: psycopg.Connection[tuple[object, ...]],
    listener: psycopg.Connection[tuple[object, ...]],
) -> None:
    [running, waiting] = insert_jobs(connection, ("q", "todo"), ("q", "todo"))
    update(connection, running, status="doing", started_at="now")
    received(listener)

    update(connection, running, status="aborting")
    update(connection, waiting, status="doing", started_at="now")
    update(connection, running, status="aborted", finished_at="now", last_error="stopped")

    assert received(listener) == [("sqla_jobs_abort", str(running))]
    assert [status for _, status, _ in stored_events(connection)] == ["aborting"]
    assert history(connection, running) == [
        ("todo", None),
        ("doing", None),
        ("aborting", None),
        ("aborted", "stopped"),
    ]


def test_jobs_back_to_todo_notify_their_queue_once_per_statement(
    connection: psycopg.Connection[tuple[object, ...]],
    listener: psycopg.Connection[tuple[object, ...]],
) -> None:
    insert_jobs(connection, ("emails", "doing"), ("emails", "failed"), ("sms", "todo"))
    received(listener)

    # Two emails jobs come back (a retry, a manual requeue); the sms job was waiting already.
    connection.execute("UPDATE sqla_jobs_jobs SET status = 'todo'")

    assert received(listener) == [(NOTIFY_CHANNEL, "emails")]


def test_deleting_jobs_deletes_their_events(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    gone, kept = insert_jobs(connection, ("q", "doing"), ("q", "doing"))
    connection.execute("UPDATE sqla_jobs_jobs SET status = 'todo', last_error = 'retry'")
    assert len(stored_events(connection)) == 2

    connection.execute("DELETE FROM sqla_jobs_jobs WHERE id = %s", (gone,))

    assert [event[0] for event in stored_events(connection)] == [kept]


def test_notifications_wait_for_the_commit(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url) as connection:
        insert_jobs(connection, ("q", "todo"))
        assert received(listener) == []
        connection.rollback()
    assert received(listener) == []


# --- round trips --------------------------------------------------------------------------


def database_objects(url: str) -> set[tuple[str, str]]:
    """Every object outside the system schemas: relations, types, functions, triggers."""
    query = """
        SELECT 'relation', c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        UNION ALL
        SELECT 'type', t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        UNION ALL
        SELECT 'function', p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL
        SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal
    """
    with psycopg.connect(url) as connection:
        return {(kind, name) for kind, name in connection.execute(query).fetchall()}


def test_downgrade_to_base_leaves_only_the_empty_version_table(empty_db_url: str) -> None:
    before = database_objects(empty_db_url)

    migrations.upgrade(empty_db_url)
    assert database_objects(empty_db_url) - before  # something was created
    migrations.downgrade(empty_db_url)

    # Alembic keeps its version table (empty) after a downgrade to base: that is all.
    assert database_objects(empty_db_url) - before == {
        ("relation", VERSION_TABLE),
        ("relation", f"{VERSION_TABLE}_pkc"),
        ("type", VERSION_TABLE),
        ("type", f"_{VERSION_TABLE}"),
    }
    with psycopg.connect(empty_db_url) as connection:
        assert connection.execute(f"SELECT count(*) FROM {VERSION_TABLE}").fetchone() == (0,)
    assert migrations.current(empty_db_url) is None


def test_upgrade_after_downgrade_to_base_rebuilds_everything(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url)
    built = database_objects(empty_db_url)

    migrations.downgrade(empty_db_url)
    migrations.upgrade(empty_db_url)

    assert database_objects(empty_db_url) == built


def test_upgrade_on_a_callers_connection_stays_in_the_callers_transaction(
    empty_db_url: str,
) -> None:
    engine = sa.create_engine(sqlalchemy_url(empty_db_url, "psycopg"), poolclass=sa.NullPool)
    with engine.connect() as conn:
        conn.begin()
        migrations.upgrade(conn)
        assert migrations.current(conn) == migrations.head()
        conn.rollback()
    engine.dispose()

    assert migrations.current(empty_db_url) is None
    assert ("relation", "sqla_jobs_jobs") not in database_objects(empty_db_url)


def test_upgrade_accepts_an_engine(empty_db_url: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(empty_db_url, "psycopg2"), poolclass=sa.NullPool)

    migrations.upgrade(engine)

    assert migrations.current(engine) == migrations.head()
    engine.dispose()


def test_offline_sql_creates_the_same_database_as_an_online_upgrade(
    db_url: str, empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    script = migrations.sql()

    assert "CREATE TABLE sqla_jobs_jobs" in script
    assert "CREATE TRIGGER sqla_jobs_after_insert" in script
    with psycopg.connect(empty_db_url, autocommit=True) as connection:
        connection.execute(script)  # a whole script, no parameters
    assert migrations.current(empty_db_url) == migrations.head()
    assert database_objects(empty_db_url) == database_objects(db_url)
    assert catalog(empty_db_url) == catalog(db_url)


def test_offline_downgrade_sql_drops_what_upgrade_created(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    script = migrations.sql("head:base", downgrade=True)

    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute(script)
    assert migrations.current(db_url) is None
    assert ("type", "sqla_jobs_job_status") not in database_objects(db_url)


# --- the Alembic command line at the repository root --------------------------------------


def run_alembic(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_repo_alembic_ini_upgrades_the_database_in_database_url(empty_db_url: str) -> None:
    upgraded = run_alembic("upgrade", "head", database_url=empty_db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert migrations.current(empty_db_url) == migrations.head()

    # A table of the host application in the same database is none of our autogenerate's
    # business: `alembic check` must not propose dropping it.
    with psycopg.connect(empty_db_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE host_items (id integer PRIMARY KEY)")
    checked = run_alembic("check", database_url=empty_db_url)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "No new upgrade operations detected" in checked.stdout


def test_repo_alembic_ini_prints_sql_without_a_database() -> None:
    result = run_alembic("upgrade", "head", "--sql", database_url=None)

    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE sqla_jobs_jobs" in result.stdout


def test_repo_alembic_ini_without_database_url_says_what_to_set() -> None:
    result = run_alembic("upgrade", "head", database_url=None)

    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


# --- a host application's own Alembic environment -----------------------------------------

HOST_ENV = """
from alembic import context
from sqlalchemy import Column, Integer, MetaData, Table, Text, engine_from_config, pool

import sqla_jobs.migrations

host_metadata = MetaData()
Table("host_items", host_metadata, Column("id", Integer, primary_key=True), Column("name", Text))

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    sqla_jobs.migrations.upgrade(connection)
    context.configure(
        connection=connection,
        target_metadata=host_metadata,
        include_object=sqla_jobs.migrations.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
"""

HOST_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "host_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text()),
    )


def downgrade():
    op.drop_table("host_items")
"""


@pytest.fixture
def host_config(tmp_path: Path, empty_db_url: str) -> Config:
    """A host application's Alembic environment whose env.py also upgrades the job tables."""
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(textwrap.dedent(HOST_ENV))
    (tmp_path / "migrations" / "versions" / "host_0001.py").write_text(HOST_REVISION)
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(
            """\
            [alembic]
            script_location = %(here)s/migrations
            path_separator = os
            """
        )
    )
    config = Config(tmp_path / "alembic.ini")
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(empty_db_url, "psycopg"))
    return config


def test_host_env_upgrades_its_tables_and_ours_each_in_its_own_version_table(
    host_config: Config, empty_db_url: str
) -> None:
    command.upgrade(host_config, "head")

    with psycopg.connect(empty_db_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("host_0001",)
        ]
        assert connection.execute("SELECT count(*) FROM host_items").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM sqla_jobs_jobs").fetchone() == (0,)
    assert migrations.current(empty_db_url) == migrations.head()

    # Running it again is a no-op for both histories.
    command.upgrade(host_config, "head")
    assert migrations.current(empty_db_url) == migrations.head()


def test_host_autogenerate_with_include_object_ignores_the_job_tables(
    host_config: Config,
) -> None:
    command.upgrade(host_config, "head")

    command.check(host_config)  # raises if autogenerate would change anything


def test_host_autogenerate_without_the_helpers_would_drop_the_job_tables(
    db_url: str,
) -> None:
    host_metadata = sa.MetaData()
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        unfiltered = compare_metadata(context, host_metadata)
        by_object = MigrationContext.configure(
            conn, opts={"include_object": migrations.include_object}
        )
        by_name = MigrationContext.configure(conn, opts={"include_name": migrations.include_name})
        assert compare_metadata(by_object, host_metadata) == []
        assert compare_metadata(by_name, host_metadata) == []
    engine.dispose()

    dropped = {diff[1].name for diff in unfiltered if diff[0] == "remove_table"}
    assert dropped == {*metadata.tables, VERSION_TABLE}


# --- revision 0002: the history across an upgrade and a downgrade ----------------------------

# Lives of four jobs, written as plain SQL so that either revision's triggers record them.
LIVES = """
INSERT INTO sqla_jobs_jobs (id, task_name) VALUES (1, 't'), (2, 't'), (3, 't'), (4, 't');
UPDATE sqla_jobs_jobs SET status = 'doing', started_at = now() WHERE id IN (1, 2, 3);
UPDATE sqla_jobs_jobs SET status = 'todo', last_error = 'try again' WHERE id = 1;
UPDATE sqla_jobs_jobs SET status = 'aborting' WHERE id = 3;
UPDATE sqla_jobs_jobs SET status = 'failed', finished_at = now(), last_error = 'boom'
    WHERE id = 2;
UPDATE sqla_jobs_jobs SET status = 'cancelled', finished_at = now() WHERE id = 4;
UPDATE sqla_jobs_jobs SET status = 'doing', started_at = now() WHERE id = 1;
UPDATE sqla_jobs_jobs SET status = 'aborted', finished_at = now(), last_error = 'stopped'
    WHERE id = 3;
UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() WHERE id = 1;
UPDATE sqla_jobs_jobs SET status = 'todo', started_at = NULL, finished_at = NULL WHERE id = 2;
"""

EXPECTED_LIVES = {
    1: [
        ("todo", None),
        ("doing", None),
        ("todo", "try again"),
        ("doing", None),
        ("succeeded", None),
    ],
    2: [("todo", None), ("doing", None), ("failed", "boom"), ("todo", None)],
    3: [("todo", None), ("doing", None), ("aborting", None), ("aborted", "stopped")],
    4: [("todo", None), ("cancelled", None)],
}


def live(url: str) -> None:
    """Each statement in its own transaction, so that each step has its own time."""
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in LIVES.split(";"):
            if statement.strip():
                connection.execute(statement)


def histories(url: str) -> dict[int, list[tuple[str, str | None]]]:
    with psycopg.connect(url) as connection:
        return {job_id: history(connection, job_id) for job_id in EXPECTED_LIVES}


def histories_0001(url: str) -> dict[int, list[tuple[object, ...]]]:
    """The history as revision 0001 reads it: every event, in id order, with its time."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT job_id, status::text, error, at FROM sqla_jobs_job_events ORDER BY id"
        ).fetchall()
    found: dict[int, list[tuple[object, ...]]] = {}
    for job_id, status, error, at in rows:
        found.setdefault(job_id, []).append((status, error, at))  # type: ignore[arg-type]
    return found


def test_an_upgrade_from_0001_keeps_every_history_as_it_was(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url, "0001_initial")
    live(empty_db_url)
    before = histories_0001(empty_db_url)
    assert {job_id: [step[:2] for step in steps] for job_id, steps in before.items()} == (
        EXPECTED_LIVES
    )

    migrations.upgrade(empty_db_url)

    # The events 0001 wrote repeat what the rows show: the history has each step once.
    assert histories(empty_db_url) == EXPECTED_LIVES
    with psycopg.connect(empty_db_url) as connection:
        times = {
            job_id: [
                row[1] for row in connection.execute(queries.job_history.sql, {"job_id": job_id})
            ]
            for job_id in EXPECTED_LIVES
        }
    assert times == {job_id: [step[2] for step in steps] for job_id, steps in before.items()}


def test_jobs_lived_under_0002_have_their_whole_history_back_after_a_downgrade(
    empty_db_url: str,
) -> None:
    migrations.upgrade(empty_db_url)
    live(empty_db_url)
    assert histories(empty_db_url) == EXPECTED_LIVES

    migrations.downgrade(empty_db_url, "0001_initial")

    after = histories_0001(empty_db_url)
    assert {job_id: [step[:2] for step in steps] for job_id, steps in after.items()} == (
        EXPECTED_LIVES
    )
    # 0001's triggers are back: a new job gets its creation event.
    with psycopg.connect(empty_db_url, autocommit=True) as connection:
        connection.execute("INSERT INTO sqla_jobs_jobs (id, task_name) VALUES (5, 't')")
        assert events(connection)[-1] == (5, "todo", None)
    migrations.upgrade(empty_db_url)
    assert histories(empty_db_url) == EXPECTED_LIVES


# --- revision 0010: workflows across an upgrade and a downgrade -------------------------------


def defer_a_workflow(url: str) -> sqla_jobs.WorkflowRun:
    """A chord whose callback waits (blocked), and a chain whose first step failed."""
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=url))
    step = app.configure_task("t").step
    run = app.defer_workflow(sqla_jobs.chord([step(), step()], step()))
    app.defer_workflow(sqla_jobs.chain(step(), step()))
    app.connector.close()
    return run


def test_a_database_that_used_workflows_downgrades_to_0009_and_back(
    db_url: str, empty_db_url: str
) -> None:
    run = defer_a_workflow(db_url)
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE sqla_jobs_jobs SET status = 'failed', finished_at = now() "
            "WHERE id = (SELECT max(id) - 1 FROM sqla_jobs_jobs)"
        )
        assert connection.execute(
            "SELECT status::text FROM sqla_jobs_jobs ORDER BY id"
        ).fetchall() == [("todo",), ("todo",), ("blocked",), ("failed",), ("cancelled",)]

    migrations.downgrade(db_url, "0009_results")

    # The blocked job is cancelled and says why; 0009's schema, enum included, is back.
    with psycopg.connect(db_url) as connection:
        rows = connection.execute(
            "SELECT id, status::text, last_error FROM sqla_jobs_jobs ORDER BY id"
        ).fetchall()
    assert [row[1] for row in rows] == ["todo", "todo", "cancelled", "failed", "cancelled"]
    assert rows[2][0] == run.job_ids[2]
    assert "downgrade of revision 0010_workflows" in str(rows[2][2])
    migrations.upgrade(empty_db_url, "0009_results")
    assert catalog(db_url) == catalog(empty_db_url)
    assert database_objects(db_url) == database_objects(empty_db_url)

    migrations.upgrade(db_url)
    migrations.upgrade(empty_db_url)
    assert catalog(db_url) == catalog(empty_db_url)
    defer_a_workflow(db_url)  # workflows work again


def test_an_upgrade_and_a_downgrade_through_0010_in_one_transaction(empty_db_url: str) -> None:
    """'blocked' cannot be used in the transaction that adds it: the migrations never do."""
    migrations.upgrade(empty_db_url, "0009_results")
    engine = sa.create_engine(sqlalchemy_url(empty_db_url, "psycopg"), poolclass=sa.NullPool)
    with engine.connect() as conn:
        conn.begin()
        migrations.upgrade(conn)
        migrations.downgrade(conn, "0009_results")
        conn.commit()
    engine.dispose()
    assert migrations.current(empty_db_url) == "0009_results"
