"""sqla_jobs.migrations without a database: URLs, the Alembic config, the script directory,
offline SQL and the autogenerate filters."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from helpers import libpq_url, sqlalchemy_url
from sqlalchemy.engine import make_url

from sqla_jobs import migrations
from sqla_jobs.schema import VERSION_TABLE, jobs, metadata


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app@db:5432/app", "postgresql+psycopg://app@db:5432/app"),
        ("postgres://app@db/app", "postgresql+psycopg://app@db/app"),
        ("postgresql+psycopg2://app@db/app", "postgresql+psycopg2://app@db/app"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql+psycopg://postgres:@/postgres?host=/tmp/pg",
        ),
    ],
)
def test_driver_url_maps_libpq_urls_to_psycopg_and_keeps_a_named_driver(
    given: str, expected: str
) -> None:
    assert migrations.driver_url(given) == make_url(expected)


def test_alembic_config_points_at_the_packaged_migrations() -> None:
    config = migrations.alembic_config()

    assert config.get_main_option("script_location") == "sqla_jobs:migrations"
    assert config.get_main_option("sqlalchemy.url") is None
    assert "connection" not in config.attributes


def test_alembic_config_keeps_a_password_with_percent_signs_intact() -> None:
    config = migrations.alembic_config("postgresql://app:p%25ss%40word@db/app")

    url = make_url(config.get_main_option("sqlalchemy.url") or "")
    assert url.drivername == "postgresql+psycopg"
    assert url.password == "p%ss@word"


@pytest.mark.parametrize("kind", ["engine", "connection"])
def test_alembic_config_hands_an_engine_or_connection_to_env_py(kind: str) -> None:
    engine = sa.create_engine("postgresql+psycopg://app@db/app")
    # A Connection cannot be made without a server; any Connection instance will do here.
    bind = engine if kind == "engine" else sa.Connection.__new__(sa.Connection)

    config = migrations.alembic_config(bind)

    assert config.attributes["connection"] is bind
    assert config.get_main_option("sqlalchemy.url") is None


def test_alembic_config_refuses_what_is_not_a_database() -> None:
    with pytest.raises(TypeError, match="Engine, Connection or URL"):
        migrations.alembic_config(42)  # type: ignore[arg-type]


def test_head_is_the_single_revision_of_the_sqla_jobs_branch() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())

    head = "0010_workflows"
    assert migrations.head() == head
    assert script.get_heads() == [head]
    assert script.get_revision("sqla_jobs@head").revision == head
    assert [revision.revision for revision in script.walk_revisions()] == [
        head,
        "0009_results",
        "0008_tags_meta_unique",
        "0007_controls",
        "0006_finished_at_brin",
        "0005_trace_context",
        "0004_trigger_search_path",
        "0003_queueing_lock_index",
        "0002_history_from_job_rows",
        "0001_initial",
    ]


def test_sql_renders_the_whole_schema_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    script = migrations.sql()

    for statement in [
        f"CREATE TABLE {VERSION_TABLE}",
        "CREATE TYPE sqla_jobs_job_status AS ENUM",
        *(f"CREATE TABLE {name} " for name in metadata.tables),
        "CREATE INDEX ix_sqla_jobs_jobs_fetch ON sqla_jobs_jobs (priority DESC, id)",
        *(f"CREATE TRIGGER sqla_jobs_after_{op}" for op in ("insert", "update", "delete")),
        "FOR EACH STATEMENT",
        f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0001_initial')",
        "CREATE TRIGGER sqla_jobs_status_change",
        "FOR EACH ROW",
        f"UPDATE {VERSION_TABLE} SET version_num='0002_history_from_job_rows'",
        f"UPDATE {VERSION_TABLE} SET version_num='0003_queueing_lock_index'",
        "ALTER FUNCTION sqla_jobs_status_change() SET search_path FROM CURRENT",
        f"UPDATE {VERSION_TABLE} SET version_num='0004_trigger_search_path'",
        "ALTER TABLE sqla_jobs_jobs ADD COLUMN trace_context TEXT",
        f"UPDATE {VERSION_TABLE} SET version_num='0005_trace_context'",
        "CREATE INDEX ix_sqla_jobs_jobs_finished_at ON sqla_jobs_jobs USING brin (finished_at)",
        f"UPDATE {VERSION_TABLE} SET version_num='0006_finished_at_brin'",
        "CREATE TABLE sqla_jobs_controls",
        f"UPDATE {VERSION_TABLE} SET version_num='0007_controls'",
        "ALTER TABLE sqla_jobs_jobs ADD COLUMN tags TEXT[]",
        "CREATE INDEX ix_sqla_jobs_jobs_tags ON sqla_jobs_jobs USING gin (tags)",
        "CREATE UNIQUE INDEX uq_sqla_jobs_jobs_unique_key ON sqla_jobs_jobs (unique_key)",
        f"UPDATE {VERSION_TABLE} SET version_num='0008_tags_meta_unique'",
        "ALTER TABLE sqla_jobs_jobs ADD COLUMN result JSONB",
        "CREATE TRIGGER sqla_jobs_awaited_job_finished",
        "CREATE TRIGGER sqla_jobs_awaited_job_deleted",
        f"UPDATE {VERSION_TABLE} SET version_num='0009_results'",
        "ALTER TYPE sqla_jobs_job_status ADD VALUE IF NOT EXISTS 'blocked'",
        "CREATE TRIGGER sqla_jobs_dependents",
        "SET search_path FROM CURRENT",
        f"UPDATE {VERSION_TABLE} SET version_num='0010_workflows'",
        "COMMIT;",
    ]:
        assert statement in script


def test_sql_for_a_downgrade_drops_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    script = migrations.sql("head:base", downgrade=True)

    assert "DROP TYPE sqla_jobs_job_status" in script
    for name in metadata.tables:
        assert f"DROP TABLE {name}" in script
    for op in ("insert", "update", "delete"):
        assert f"DROP FUNCTION sqla_jobs_after_{op}()" in script


def test_host_filters_exclude_our_tables_and_their_parts_but_not_the_hosts() -> None:
    host_table = sa.Table("host_items", sa.MetaData(), sa.Column("id", sa.Integer))
    index = next(iter(jobs.indexes))

    assert not migrations.include_object(jobs, jobs.name, "table", False, None)
    assert not migrations.include_object(jobs.c.queue, "queue", "column", False, None)
    assert not migrations.include_object(index, index.name, "index", False, None)
    assert not migrations.include_object(None, VERSION_TABLE, "table", True, None)
    assert migrations.include_object(host_table, "host_items", "table", False, None)
    assert migrations.include_object(host_table.c.id, "id", "column", False, None)

    assert not migrations.include_name(jobs.name, "table", {"schema_name": None})
    assert not migrations.include_name("queue", "column", {"table_name": jobs.name})
    assert migrations.include_name("host_items", "table", {"schema_name": None})
    assert migrations.include_name("public", "schema", {})


def test_sqlalchemy_url_helper_names_the_driver() -> None:
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert sqlalchemy_url("postgresql://u@/db?host=/tmp", "psycopg") == (
        "postgresql+psycopg://u@/db?host=/tmp"
    )
    with pytest.raises(ValueError, match="not a libpq URL"):
        sqlalchemy_url("mysql://u@h/db")


def test_libpq_url_helper_drops_a_sqlalchemy_driver_name() -> None:
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert libpq_url("postgresql://u@/db?host=/tmp") == "postgresql://u@/db?host=/tmp"


def test_revision_ids_fit_alembics_version_column() -> None:
    """Alembic's version_num is a varchar(32): a longer id fails the upgrade at its very end."""
    script = ScriptDirectory.from_config(migrations.alembic_config())

    too_long = [r.revision for r in script.walk_revisions() if len(r.revision) > 32]

    assert too_long == []
