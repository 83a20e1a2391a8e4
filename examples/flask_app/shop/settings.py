"""Where the database is: ``DATABASE_URL``, the one setting this example reads."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url


def database_url() -> str:
    """``DATABASE_URL`` as given (``postgresql://...``, or with a driver named)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError(
            "Set DATABASE_URL to your PostgreSQL database, "
            "e.g. export DATABASE_URL=postgresql://postgres@localhost/shop"
        )
    return url


def sqlalchemy_url() -> str:
    """The URL for the app's engine: psycopg2, whatever driver DATABASE_URL names."""
    url = make_url(database_url()).set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def libpq_url() -> str:
    """The URL for the worker's psycopg connector (libpq reads no driver name)."""
    url = make_url(database_url()).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
