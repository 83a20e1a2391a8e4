"""sqla_jobs' Alembic migrations, and the functions that run them.

The migrations ship inside the package (``script_location = sqla_jobs:migrations``) and
record their revision in their own version table, ``sqla_jobs_alembic_version``, so they never
mix with a host application's ``alembic_version``. Run them from Python::

    from sqla_jobs import migrations

    migrations.upgrade("postgresql://app@db/app")  # or an Engine, or a Connection
    migrations.current(engine)  # "0009_results", or None before the first upgrade

A host application that has its own Alembic environment upgrades the job tables from its
``env.py``, on the connection it already has, and keeps them out of its autogenerate::

    import sqla_jobs.migrations

    def run_migrations_online() -> None:
        connectable = engine_from_config(...)
        with connectable.connect() as connection:
            sqla_jobs.migrations.upgrade(connection)  # our tables, our version table
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                include_object=sqla_jobs.migrations.include_object,
            )
            with context.begin_transaction():
                context.run_migrations()

Listing our ``versions`` directory in the host's ``version_locations`` is not supported: the
version table belongs to the environment, so our revisions would be recorded in the host's
``alembic_version`` where :func:`current` and ``sqla-jobs schema`` cannot see them
(``docs/migrations.md`` says more).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, TypeAlias

import alembic.context
import alembic.op
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, pool
from sqlalchemy.engine import URL

from ..queries import check_schema_name
from ..schema import VERSION_TABLE
from ._env import OWN_TABLES, driver_url, table_name_of

__all__ = [
    "SCRIPT_LOCATION",
    "Bind",
    "alembic_config",
    "current",
    "downgrade",
    "driver_url",
    "head",
    "include_name",
    "include_object",
    "sql",
    "upgrade",
]

#: Where Alembic finds our ``env.py`` and ``versions/``, as a package resource.
SCRIPT_LOCATION = "sqla_jobs:migrations"

#: What the functions below accept as a database: an Engine, a Connection (used as it is,
#: inside its transaction if one is open), or a URL (``postgresql://`` means psycopg 3).
Bind: TypeAlias = Engine | Connection | str | URL


def alembic_config(bind: Bind | None = None, *, schema: str | None = None) -> Config:
    """An Alembic ``Config`` for our migrations, set to run on ``bind``.

    Pass it to any ``alembic.command`` function. Without ``bind``, the environment falls back
    to the ``DATABASE_URL`` environment variable (online) or plain PostgreSQL (``--sql``).
    ``schema``: the PostgreSQL schema of the tables (created if missing; `App`'s
    ``schema``); None puts them in the first schema of the connection's ``search_path``.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["schema"] = check_schema_name(schema)
    if isinstance(bind, Connection | Engine):
        config.attributes["connection"] = bind
    elif isinstance(bind, str | URL):
        url = driver_url(bind).render_as_string(hide_password=False)
        # The ini parser interpolates %(name)s: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    elif bind is not None:
        raise TypeError(
            f"bind must be a SQLAlchemy Engine, Connection or URL, not {type(bind).__name__}"
        )
    return config


def upgrade(bind: Bind, revision: str = "head", *, schema: str | None = None) -> None:
    """Upgrade the job tables on ``bind`` to ``revision`` (the latest by default), in
    PostgreSQL schema ``schema`` if given (see `alembic_config`)."""
    with _host_context_kept():
        command.upgrade(alembic_config(bind, schema=schema), revision)


def downgrade(bind: Bind, revision: str = "base", *, schema: str | None = None) -> None:
    """Downgrade the job tables on ``bind`` to ``revision``; ``"base"`` removes them all (a
    schema named, once created, is left: it may hold other things)."""
    with _host_context_kept():
        command.downgrade(alembic_config(bind, schema=schema), revision)


def current(bind: Bind, *, schema: str | None = None) -> str | None:
    """The revision recorded in our version table on ``bind`` (in ``schema``, if given);
    None if never migrated."""
    opts = {"version_table": VERSION_TABLE, "version_table_schema": check_schema_name(schema)}
    with _connected(bind) as connection:
        began = not connection.in_transaction()
        try:
            context = MigrationContext.configure(connection, opts=opts)
            return context.get_current_revision()
        finally:
            # Leave a caller's connection as it came: a read needs no commit.
            if began and connection.in_transaction():
                connection.rollback()


def head() -> str:
    """The latest revision that this version of sqla_jobs ships."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships a revision
        raise CommandError(f"No migration found in {SCRIPT_LOCATION}")
    return revision


def sql(
    revision_range: str = "base:head", *, downgrade: bool = False, schema: str | None = None
) -> str:
    """The SQL that an upgrade (or a downgrade) over ``revision_range`` would run, as text.

    For a DBA who applies schema changes by hand: ``sql()`` creates everything,
    ``sql("head:base", downgrade=True)`` removes it.
    """
    buffer = io.StringIO()
    config = alembic_config(schema=schema)
    config.output_buffer = buffer
    run = command.downgrade if downgrade else command.upgrade
    with _host_context_kept():
        run(config, revision_range, sql=True)
    return buffer.getvalue()


def include_object(
    object_: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """``include_object`` hook for a host's autogenerate that leaves sqla_jobs' tables out.

    Without it, a host whose metadata does not list our tables would see autogenerate propose
    dropping them (and our version table). Pass it to ``context.configure()``, or call it from
    the host's own hook.
    """
    return table_name_of(object_, type_, name) not in OWN_TABLES


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """``include_name`` hook with the same effect as :func:`include_object`.

    It filters before reflection, so autogenerate does not even read our tables.
    """
    table = name if type_ == "table" else parent_names.get("table_name")
    return table not in OWN_TABLES


@contextlib.contextmanager
def _connected(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    elif isinstance(bind, Engine):
        with bind.connect() as connection:
            yield connection
    else:
        engine = create_engine(driver_url(bind), poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()


@contextlib.contextmanager
def _host_context_kept() -> Iterator[None]:
    """Restore the ``alembic.context`` and ``alembic.op`` of an Alembic run we are nested in.

    Alembic publishes the running environment through those module-level proxies and removes
    them when a command ends; a host ``env.py`` that calls :func:`upgrade` would otherwise
    find ``context.configure()`` gone after our command returned.
    """
    saved = [getattr(module, "_proxy", None) for module in (alembic.context, alembic.op)]
    try:
        yield
    finally:
        for proxy in saved:
            if proxy is not None:
                proxy._install_proxy()
