"""Small helpers shared by the test suite (importable as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import tuple_row


def sqlalchemy_url(libpq_url: str, driver: str = "psycopg2") -> str:
    """Map a libpq URL (``postgresql://...``) to SQLAlchemy's ``postgresql+<driver>://...``."""
    parts = urlsplit(libpq_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a libpq URL: {libpq_url!r}")
    return urlunsplit(parts._replace(scheme=f"postgresql+{driver}"))


def libpq_url(url: str) -> str:
    """A libpq URL for ``url``, dropping a SQLAlchemy driver name (``postgresql+psycopg://``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    return urlunsplit(parts._replace(scheme="postgresql" if scheme == "postgres" else scheme))


def with_dbname(libpq_url: str, dbname: str) -> str:
    """The same server URL, naming another database (host, port, query parameters are kept)."""
    return urlunsplit(urlsplit(libpq_url)._replace(path="/" + dbname))


def dbname_of(libpq_url: str) -> str:
    """The database that a libpq URL names."""
    return urlsplit(libpq_url).path.lstrip("/")


def end_other_connections(conn: psycopg.Connection[Any], timeout: float = 5.0) -> list[int]:
    """End every other connection to ``conn``'s database (``pg_terminate_backend``), as a
    restart or a failover does, and return once they are gone; returns their pids.

    Gone means the server processes have exited, not only left ``pg_stat_activity``: a
    backend leaves that view before its process exits and closes the socket, and until then a
    pooled connection may still look open to its client (its goodbye already read into libpq's
    buffer), so that a statement sent on it fails as a lost connection. The processes are
    waited for when the server runs on this machine (a remote server's pids are not ours)."""
    others = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    cursor = conn.cursor(row_factory=tuple_row)  # whatever rows ``conn`` makes
    while True:
        cursor.execute(f"SELECT pid, pg_terminate_backend(pid) FROM ({others}) AS o")
        ended.update(row[0] for row in cursor.fetchall())
        # Again until none is left: a connection a pool was making may have got in meanwhile.
        if not cursor.execute(others).fetchall() and not any(map(_is_postgres_process, ended)):
            return sorted(ended)
        assert time.monotonic() < deadline, f"the server processes {sorted(ended)} did not end"
        time.sleep(0.01)


def _is_postgres_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().startswith("postgres")
    except OSError:
        return False
