"""Small helpers shared by the test suite (importable as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
