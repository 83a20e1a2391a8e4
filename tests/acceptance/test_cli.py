"""The `sqla-jobs` command line, end to end: real processes, a real database, real signals.

Each test runs ``python -m sqla_jobs`` in a subprocess whose DATABASE_URL is the test's own
fresh database; the tasks of ``apps/cli_demo_app.py`` leave files behind to prove they ran.
Every wait has a deadline, so a hung worker fails its test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sqla_jobs import migrations

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
DEMO_APP = "cli_demo_app:app"
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/nowhere"
TIMEOUT = 60  # seconds any single CLI run may take before the test fails


def cli_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SQLA_JOBS_APP", None)
    env["DATABASE_URL"] = database_url
    paths = [str(REPO), str(APPS), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def cli(
    database_url: str, *args: str, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run one `sqla-jobs` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sqla_jobs", *args],
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WorkerProcess:
    """A `sqla-jobs worker` running in the background, its output going to a file."""

    def __init__(self, database_url: str, log: Path, *args: str) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqla_jobs", "worker", *args],
            env=cli_env(database_url),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: signal.Signals, timeout: float = 10) -> int:
        """Send ``sig``; return the exit status, which must come within ``timeout``."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {timeout} s after {sig.name}:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()


def wait_for(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 20,
    worker: WorkerProcess | None = None,
    database_url: str | None = None,
) -> Any:
    """Poll ``condition`` until true; on timeout fail with the worker's output and, given the
    database, its jobs and sessions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if worker is not None and worker.process.poll() is not None:
            pytest.fail(
                f"worker exited ({worker.process.returncode}) before {what}:\n{worker.output()}"
            )
        time.sleep(0.05)
    report = [f"timed out after {timeout} s waiting for {what}"]
    if worker is not None:
        report.append(f"worker output:\n{worker.output()}")
    if database_url is not None:
        report.append(f"jobs: {query(database_url, 'SELECT * FROM sqla_jobs_jobs')}")
        sessions = query(
            database_url,
            "SELECT state, wait_event, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        report.append(f"sessions: {sessions}")
    pytest.fail("\n".join(report))


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(sql, params).fetchall()


def job_status(database_url: str, job_id: int) -> str:
    rows = query(database_url, "SELECT status::text FROM sqla_jobs_jobs WHERE id = %s", job_id)
    return str(rows[0][0])


def workers(database_url: str) -> list[str]:
    return [row[0] for row in query(database_url, "SELECT name FROM sqla_jobs_workers")]


def tables_exist(database_url: str) -> bool:
    return bool(query(database_url, "SELECT to_regclass('sqla_jobs_jobs') IS NOT NULL")[0][0])


def defer(database_url: str, *args: str) -> int:
    result = cli(database_url, "--app", DEMO_APP, "defer", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sqla-jobs: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def listening(database_url: str) -> bool:
    """True once some session on this database is waiting on LISTEN (the worker's)."""
    rows = query(
        database_url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()",
    )
    return bool(rows[0][0])


# -- schema ------------------------------------------------------------------------------------


def test_schema_upgrade_creates_the_tables_and_current_reports_the_head(empty_db_url: str) -> None:
    before = cli(empty_db_url, "schema", "current")
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("none")
    assert "sqla-jobs schema upgrade" in before.stdout

    upgraded = cli(empty_db_url, "schema", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert migrations.head() in upgraded.stdout
    assert tables_exist(empty_db_url)

    after = cli(empty_db_url, "schema", "current")
    assert after.stdout.strip() == f"{migrations.head()} (head)"

    again = cli(empty_db_url, "schema", "upgrade")
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout


def test_schema_downgrade_refuses_without_a_revision_and_drops_the_tables_to_base(
    db_url: str,
) -> None:
    refused = cli(db_url, "schema", "downgrade")
    assert refused.returncode == 2
    assert "schema downgrade base" in refused.stderr
    assert tables_exist(db_url)

    dropped = cli(db_url, "schema", "downgrade", "base")
    assert dropped.returncode == 0, dropped.stderr
    assert not tables_exist(db_url)
    assert cli(db_url, "schema", "current").stdout.startswith("none")

    restored = cli(db_url, "schema", "upgrade")
    assert restored.returncode == 0, restored.stderr
    assert tables_exist(db_url)


def test_schema_upgrade_to_an_unknown_revision_is_one_line(db_url: str) -> None:
    assert_one_line_error(cli(db_url, "schema", "upgrade", "no_such_revision"), "no_such_revision")


def test_schema_sql_prints_the_ddl_without_a_database() -> None:
    created = cli(UNREACHABLE_URL, "schema", "sql")
    assert created.returncode == 0, created.stderr
    assert "CREATE TABLE sqla_jobs_jobs" in created.stdout
    dropped = cli(UNREACHABLE_URL, "schema", "sql", "--downgrade")
    assert dropped.returncode == 0, dropped.stderr
    assert "DROP TABLE sqla_jobs_jobs" in dropped.stdout


# -- defer and worker --------------------------------------------------------------------------


def test_deferred_job_is_run_by_a_worker_that_drains_and_exits(db_url: str, tmp_path: Path) -> None:
    proof = tmp_path / "proof.txt"
    # No --app: deferring by name works for tasks this process never imported.
    deferred = cli(db_url, "defer", "write_file", json.dumps({"path": str(proof), "text": "hi"}))
    assert deferred.returncode == 0, deferred.stderr
    job_id = int(deferred.stdout.strip())
    assert f"Deferred job {job_id}" in deferred.stderr
    assert job_status(db_url, job_id) == "todo"

    worker = cli(db_url, "worker", "--app", DEMO_APP, "--no-wait")
    assert worker.returncode == 0, worker.stderr
    assert proof.read_text() == "hi"
    assert job_status(db_url, job_id) == "succeeded"
    assert workers(db_url) == []


def test_defer_options_are_stored_on_the_job(db_url: str) -> None:
    job_id = defer(
        db_url,
        "write_file",
        '{"path": "/nonexistent/never-run"}',
        "--queue=mail",
        "--priority=7",
        "--lock=user-1",
        "--queueing-lock=user-1-mail",
        "--schedule-in=3600",
    )
    ((queue, priority, lock, queueing_lock, delay),) = query(
        db_url,
        "SELECT queue, priority, lock, queueing_lock, "
        "extract(epoch FROM scheduled_at - now()) FROM sqla_jobs_jobs WHERE id = %s",
        job_id,
    )
    assert (queue, priority, lock, queueing_lock) == ("mail", 7, "user-1", "user-1-mail")
    assert 3500 < float(delay) <= 3600

    duplicate = cli(db_url, "defer", "write_file", '{"path": "x"}', "--queueing-lock=user-1-mail")
    assert_one_line_error(duplicate, "user-1-mail")


def test_defer_with_app_uses_the_task_s_own_queue(db_url: str, tmp_path: Path) -> None:
    job_id = defer(db_url, "on_reports", json.dumps({"path": str(tmp_path / "r")}))
    assert query(db_url, "SELECT queue FROM sqla_jobs_jobs WHERE id = %s", job_id) == [("reports",)]


def test_defer_at_a_time_without_time_zone_is_refused(db_url: str) -> None:
    result = cli(db_url, "defer", "write_file", "--schedule-at", "2030-01-01T10:00:00")
    assert result.returncode == 2
    assert "time zone" in result.stderr
    assert query(db_url, "SELECT count(*) FROM sqla_jobs_jobs") == [(0,)]


def test_defer_with_invalid_json_names_the_problem_and_an_example(db_url: str) -> None:
    result = cli(db_url, "defer", "write_file", "{path: 1}")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr
    assert '{"user_id": 42' in result.stderr
    assert query(db_url, "SELECT count(*) FROM sqla_jobs_jobs") == [(0,)]


def test_worker_takes_only_the_queues_it_is_given(db_url: str, tmp_path: Path) -> None:
    a, b, c = (tmp_path / name for name in "abc")
    defer(db_url, "write_file", json.dumps({"path": str(a)}), "--queue=a")
    defer(db_url, "write_file", json.dumps({"path": str(b)}), "--queue=b")
    defer(db_url, "write_file", json.dumps({"path": str(c)}), "--queue=c")

    result = cli(db_url, "worker", "--app", DEMO_APP, "--no-wait", "--queues", "a,b", "-q", "a")
    assert result.returncode == 0, result.stderr
    assert a.exists() and b.exists()
    assert not c.exists()


def test_worker_logs_json_lines_with_the_job_fields(db_url: str) -> None:
    job_id = defer(db_url, "no_such_task")
    result = cli(db_url, "worker", "--app", DEMO_APP, "--no-wait", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    (failure,) = [record for record in records if record.get("job_id") == job_id]
    assert failure["level"] == "ERROR"
    assert failure["task"] == "no_such_task"
    assert failure["queue"] == "default"
    assert job_status(db_url, job_id) == "failed"


def test_waiting_worker_runs_a_new_job_then_exits_on_sigterm(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A long polling interval: only NOTIFY can wake the worker in time.
    worker = start_worker(
        db_url, "--app", DEMO_APP, "--name", "cli-test-worker", "--polling-interval", "120"
    )
    wait_for(lambda: workers(db_url) == ["cli-test-worker"], "the worker's row", worker=worker)
    wait_for(lambda: listening(db_url), "the worker to LISTEN", worker=worker)

    health = cli(db_url, "healthchecks")
    assert health.returncode == 0, health.stdout + health.stderr
    assert "cli-test-worker: pid" in health.stdout

    proof = tmp_path / "proof.txt"
    job_id = defer(db_url, "write_file", json.dumps({"path": str(proof)}))
    wait_for(
        lambda: job_status(db_url, job_id) == "succeeded",
        "the job",
        worker=worker,
        database_url=db_url,
    )
    assert proof.read_text() == "done"

    assert worker.stop(signal.SIGTERM, timeout=10) == 0, worker.output()
    assert workers(db_url) == []


def test_sigint_lets_a_running_sync_job_finish_before_exiting(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(db_url, "--app", DEMO_APP, "--polling-interval", "0.2")
    started, finished = tmp_path / "started", tmp_path / "finished"
    job_id = defer(
        db_url,
        "slow_sync",
        json.dumps({"seconds": 2, "started": str(started), "path": str(finished)}),
    )
    wait_for(started.exists, "the job to start", worker=worker, database_url=db_url)

    assert worker.stop(signal.SIGINT, timeout=15) == 0, worker.output()
    assert finished.read_text() == "finished"
    assert job_status(db_url, job_id) == "succeeded"
    assert workers(db_url) == []


@pytest.mark.parametrize("task", ["slow_async", "slow_sync"])
def test_job_outliving_the_shutdown_timeout_goes_back_to_the_queue(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess], task: str
) -> None:
    worker = start_worker(
        db_url, "--app", DEMO_APP, "--polling-interval", "0.2", "--shutdown-timeout", "0.5"
    )
    started, finished = tmp_path / "started", tmp_path / "finished"
    job_id = defer(
        db_url, task, json.dumps({"seconds": 60, "started": str(started), "path": str(finished)})
    )
    wait_for(started.exists, "the job to start", worker=worker, database_url=db_url)

    assert worker.stop(signal.SIGTERM, timeout=10) == 0, worker.output()
    assert job_status(db_url, job_id) == "todo"
    assert not finished.exists()
    assert workers(db_url) == []


# -- errors ------------------------------------------------------------------------------------


def test_worker_on_a_defer_only_connector_fails_at_once_naming_the_async_connectors() -> None:
    # The database is unreachable: the connector is refused before any connection is tried.
    result = cli(UNREACHABLE_URL, "worker", "--app", "cli_psycopg2_app:app")
    assert_one_line_error(result, "Psycopg2Connector", "PsycopgConnector", "AiopgConnector")


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "--no-wait"],
        ["defer", "write_file"],
        ["schema", "current"],
        ["schema", "upgrade"],
    ],
)
def test_unreachable_database_is_one_line_without_traceback(command: list[str]) -> None:
    assert_one_line_error(cli(UNREACHABLE_URL, *command), "Could not connect", "port=1")


def test_unreachable_database_shows_a_traceback_with_verbose() -> None:
    result = cli(UNREACHABLE_URL, "-v", "schema", "current")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sqla-jobs: error: Could not connect")


@pytest.mark.parametrize("command", [["worker", "--no-wait"], ["defer", "write_file"]])
def test_database_without_schema_asks_for_schema_upgrade(
    empty_db_url: str, command: list[str]
) -> None:
    result = cli(empty_db_url, "--app", DEMO_APP, *command)
    assert_one_line_error(result, "sqla-jobs schema upgrade")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_such_module:app", "no module named 'no_such_module'"),
        ("cli_demo_app:missing", "has no attribute 'missing'"),
        ("cli_demo_app:not_an_app", "not a sqla_jobs.App"),
        ("cli_broken_app:app", "RuntimeError: boom while importing"),
    ],
)
def test_bad_app_option_is_one_line_naming_the_fix(spec: str, fragment: str) -> None:
    assert_one_line_error(cli(UNREACHABLE_URL, "--app", spec, "schema", "current"), fragment)


def test_app_may_be_a_factory_and_come_from_the_environment(db_url: str, tmp_path: Path) -> None:
    proof = tmp_path / "proof.txt"
    defer(db_url, "write_file", json.dumps({"path": str(proof)}))
    env = {**cli_env(db_url), "SQLA_JOBS_APP": "cli_demo_app:create_app"}
    result = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", "worker", "--no-wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert proof.exists()


def test_database_url_option_replaces_the_app_s_connector(db_url: str) -> None:
    # The app's own connector reads DATABASE_URL, which here points nowhere.
    result = cli(
        UNREACHABLE_URL, "--app", DEMO_APP, "defer", "--database-url", db_url, "on_reports"
    )
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout)
    assert query(db_url, "SELECT queue FROM sqla_jobs_jobs WHERE id = %s", job_id) == [("reports",)]


# -- healthchecks and help ---------------------------------------------------------------------


def test_healthchecks_pass_on_a_migrated_database(db_url: str) -> None:
    result = cli(db_url, "healthchecks")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK   database")
    assert lines[1] == f"OK   schema: revision {migrations.head()} (head)"
    assert lines[2] == "OK   workers: none registered"


def test_healthchecks_fail_without_schema_and_name_the_fix(empty_db_url: str) -> None:
    result = cli(empty_db_url, "healthchecks")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("OK   database")
    assert result.stdout.splitlines()[1].startswith("FAIL schema")
    assert "sqla-jobs schema upgrade" in result.stdout


def test_healthchecks_fail_on_an_unreachable_database() -> None:
    result = cli(UNREACHABLE_URL, "healthchecks")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL database: Could not connect")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["defer"],
        ["schema"],
        ["schema", "upgrade"],
        ["schema", "downgrade"],
        ["schema", "current"],
        ["schema", "sql"],
        ["healthchecks"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = cli(UNREACHABLE_URL, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(['sqla-jobs', *command])}")


def test_version_is_printed() -> None:
    result = cli(UNREACHABLE_URL, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sqla-jobs ")


def test_schema_grants_prints_the_grants_and_applies_them(db_url: str) -> None:
    role = f'jobs "web" {os.getpid()}'
    printed = cli(db_url, "schema", "grants", "--app-role", role)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[0] == (
        'GRANT USAGE ON SCHEMA "public" TO "jobs ""web"" ' + f'{os.getpid()}";'
    )
    quoted = f'"jobs ""web"" {os.getpid()}"'
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute(f"CREATE ROLE {quoted}")
    try:
        applied = cli(db_url, "schema", "grants", "--app-role", role, "--apply")
        assert applied.returncode == 0, applied.stderr
        assert "Granted the app role" in applied.stdout
        [(can_insert, can_truncate)] = query(
            db_url,
            "SELECT has_table_privilege(%s, 'sqla_jobs_jobs', 'INSERT'), "
            "has_table_privilege(%s, 'sqla_jobs_jobs', 'TRUNCATE')",
            role,
            role,
        )
        assert (can_insert, can_truncate) == (True, False)
    finally:
        with psycopg.connect(db_url, autocommit=True) as owner:
            owner.execute(f"DROP OWNED BY {quoted}")
            owner.execute(f"DROP ROLE {quoted}")

    missing = cli(db_url, "schema", "grants")
    assert missing.returncode == 2
    assert "needs --app-role NAME, --worker-role NAME, or both" in missing.stderr
