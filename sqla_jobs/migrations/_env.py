"""The body of every Alembic ``env.py`` that runs sqla_jobs' migrations.

Both the ``env.py`` shipped in the package (``script_location = sqla_jobs:migrations``) and the
one at the repository root call :func:`run_env`, so the two environments cannot drift apart.
Our revisions are always recorded in :data:`~sqla_jobs.schema.VERSION_TABLE`, never in a host
application's ``alembic_version``.
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.schema import CreateSchema

from ..grants import quote_identifier
from ..queries import check_schema_name
from ..schema import VERSION_TABLE, metadata

#: Names of every table our migrations own, the version table included.
OWN_TABLES = frozenset({*metadata.tables, VERSION_TABLE})

# libpq URL schemes (and Heroku's alias) that we map to SQLAlchemy's psycopg 3 driver.
_LIBPQ_DRIVERNAMES = frozenset({"postgresql", "postgres"})


def driver_url(url: str | URL, driver: str = "psycopg") -> URL:
    """Return ``url`` as a SQLAlchemy URL, naming ``driver`` if it named none.

    ``postgresql://`` and ``postgres://`` (what libpq, ``DATABASE_URL`` and most platforms
    use) become ``postgresql+psycopg://``; a URL that already names a driver is kept.
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername in _LIBPQ_DRIVERNAMES:
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    return parsed


def table_name_of(object_: Any, type_: str, name: str | None) -> str | None:
    """Name of the table that an autogenerate object belongs to (the object itself if a table)."""
    if type_ == "table":
        return name
    table = getattr(object_, "table", None)
    return getattr(table, "name", None)


def include_own_object(
    object_: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate filter of our own environment: compare only sqla_jobs' tables.

    Without it, an autogenerate run against a database shared with a host application would
    propose dropping every host table.
    """
    return table_name_of(object_, type_, name) in OWN_TABLES


def _configured_url() -> URL | None:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    return driver_url(url) if url else None


def _configure_logging() -> None:
    file_name = context.config.config_file_name
    if file_name is not None and context.config.file_config.has_section("loggers"):
        logging.config.fileConfig(file_name, disable_existing_loggers=False)


def configured_schema() -> str | None:
    """The PostgreSQL schema the tables go in: ``config.attributes["schema"]`` (what
    `sqla_jobs.migrations` functions set), else the ``sqla_jobs_schema`` option of the ini
    file; None: the first schema of the connection's ``search_path``."""
    schema = context.config.attributes.get("schema")
    if schema is None:
        schema = context.config.get_main_option("sqla_jobs_schema") or None
    return check_schema_name(schema)


def _in_schema(schema: str | None) -> str | None:
    """Point the migration's transaction at ``schema``: created if missing, and first (and
    only) in the ``search_path``, so that the revisions, which name no schema, create and
    change the tables there. Returns the ``search_path`` to restore."""
    if schema is None:
        return None
    context.execute(CreateSchema(schema, if_not_exists=True))
    quoted = quote_identifier(schema)
    if context.is_offline_mode():
        # As text(): a colon in the name would read as a parameter unless escaped.
        context.execute(text(f"SET LOCAL search_path TO {quoted}".replace(":", "\\:")))
        return None
    bind = context.get_bind()
    before: str = bind.exec_driver_sql("SELECT current_setting('search_path')").scalar_one()
    bind.exec_driver_sql("SELECT set_config('search_path', %(path)s, true)", {"path": quoted})
    return before


def _restore_search_path(before: str | None) -> None:
    # A host's transaction (its own env.py calling upgrade) goes on with its own search_path.
    if before is not None:
        context.get_bind().exec_driver_sql(
            "SELECT set_config('search_path', %(path)s, true)", {"path": before}
        )


def _run_offline() -> None:
    url = _configured_url()
    schema = configured_schema()
    context.configure(
        url=url,
        dialect_name=None if url is not None else "postgresql",
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=include_own_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        _in_schema(schema)
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    schema = configured_schema()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=include_own_object,
    )
    # When the caller's connection already has a transaction open, Alembic runs inside it and
    # leaves the commit to the caller; otherwise it begins and commits its own.
    with context.begin_transaction():
        before = _in_schema(schema)
        context.run_migrations()
        _restore_search_path(before)


def _run_online() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_on(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run_on(connection)
        return
    if given is not None:
        raise CommandError(
            "config.attributes['connection'] must be a SQLAlchemy Connection or Engine, "
            f"not {type(given).__name__}"
        )
    url = _configured_url()
    if url is None:
        raise CommandError(
            "No database to migrate: set sqlalchemy.url in the Alembic config, "
            "or the DATABASE_URL environment variable (postgresql://user@host/dbname)"
        )
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


def run_env(*, configure_logging: bool = False) -> None:
    """Run sqla_jobs' migrations in the current Alembic environment, offline or online.

    The database comes from ``config.attributes["connection"]`` (a Connection or Engine),
    else ``sqlalchemy.url``, else ``DATABASE_URL``. ``configure_logging`` applies the logging
    sections of the ``.ini`` file, for the command line; a library call leaves logging alone.
    """
    if configure_logging:
        _configure_logging()
    if context.is_offline_mode():
        _run_offline()
    else:
        _run_online()
