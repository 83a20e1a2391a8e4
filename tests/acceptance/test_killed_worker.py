"""A worker killed outright (SIGKILL) mid-job: another worker, started as a real
`sqla-jobs worker` process, finds the job stalled and retries it or fails it as the task's retry
strategy says.

The tasks of ``apps/stalled_app.py`` write ``started-<attempt>`` when a run starts, so the test
knows which run is going on before it kills the worker running it.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli import (
    WorkerProcess,
    assert_one_line_error,
    cli,
    job_status,
    query,
    wait_for,
    workers,
)

from sqla_jobs import queries

STALLED_APP = "stalled_app:app"
# The workers that recover: a heartbeat every 0.2 s, a worker silent for 1 s is dead.
RECOVERING = ("--heartbeat-interval", "0.2", "--stalled-timeout", "1", "--polling-interval", "0.2")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(database_url: str, name: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(
            database_url,
            tmp_path / f"{name}.log",
            "--app",
            STALLED_APP,
            "--name",
            name,
            *args,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def defer(database_url: str, task: str, directory: Path) -> int:
    arguments = json.dumps({"directory": str(directory)})
    result = cli(database_url, "--app", STALLED_APP, "defer", task, arguments)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def sigkill(worker: WorkerProcess) -> None:
    worker.process.send_signal(signal.SIGKILL)
    assert worker.process.wait(10) == -signal.SIGKILL


def job_row(database_url: str, job_id: int) -> tuple[str, int, str | None, int | None]:
    rows = query(
        database_url,
        "SELECT status::text, attempts, last_error, worker_id FROM sqla_jobs_jobs WHERE id = %s",
        job_id,
    )
    status, attempts, last_error, worker_id = rows[0]
    return status, attempts, last_error, worker_id


def events(database_url: str, job_id: int) -> list[tuple[str, str | None]]:
    rows = query(database_url, queries.job_history.sql.replace("%(job_id)s", "%s"), job_id)
    return [(str(status), error) for status, _, error in rows]


def worker_id(database_url: str, name: str) -> int:
    rows = query(database_url, "SELECT id FROM sqla_jobs_workers WHERE name = %s", name)
    assert rows, f"worker {name!r} is not registered"
    return int(rows[0][0])


def test_job_of_a_killed_worker_is_retried_by_another_worker_and_succeeds(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    job_id = defer(db_url, "long_job", tmp_path)
    doomed = start_worker(db_url, "doomed", "--polling-interval", "0.2")
    wait_for((tmp_path / "started-1").exists, "the first run", worker=doomed, database_url=db_url)
    doomed_id = worker_id(db_url, "doomed")
    sigkill(doomed)
    assert job_row(db_url, job_id)[:2] == ("doing", 1)  # nobody recorded anything

    rescuer = start_worker(db_url, "rescuer", *RECOVERING)
    wait_for(
        lambda: job_status(db_url, job_id) == "succeeded",
        "the job to be retried and succeed",
        worker=rescuer,
        database_url=db_url,
    )

    assert (tmp_path / "finished").read_text() == "2"
    status, attempts, last_error, _ = job_row(db_url, job_id)
    assert (status, attempts) == ("succeeded", 2)
    history = events(db_url, job_id)
    assert [status for status, _ in history] == ["todo", "doing", "todo", "doing", "succeeded"]
    recovery = history[2][1]
    assert recovery is not None
    assert f"worker 'doomed' (id {doomed_id}) stopped heartbeating" in recovery
    assert "Worker 'rescuer'" in recovery
    assert "retry strategy allows another run" in recovery
    assert last_error == recovery  # a success keeps the last error, as after any retry
    assert workers(db_url) == ["rescuer"], "the dead worker's row is removed"
    assert "recovered from a stalled worker" in rescuer.output()
    assert "Removed stalled worker 'doomed'" in rescuer.output()


def test_job_whose_worker_is_killed_on_its_last_attempt_fails_with_the_recovery_error(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    job_id = defer(db_url, "always_long_job", tmp_path)  # retry=1: two runs in all
    first = start_worker(db_url, "first", "--polling-interval", "0.2")
    wait_for((tmp_path / "started-1").exists, "the first run", worker=first, database_url=db_url)
    sigkill(first)

    # The second worker recovers the job, then runs its second (last) attempt itself.
    second = start_worker(db_url, "second", *RECOVERING)
    wait_for((tmp_path / "started-2").exists, "the retry", worker=second, database_url=db_url)
    second_id = worker_id(db_url, "second")
    sigkill(second)

    third = start_worker(db_url, "third", *RECOVERING)
    wait_for(
        lambda: job_status(db_url, job_id) == "failed",
        "the job to fail",
        worker=third,
        database_url=db_url,
    )

    status, attempts, last_error, failed_on = job_row(db_url, job_id)
    assert (status, attempts, failed_on) == ("failed", 2, second_id)
    assert last_error is not None
    assert f"worker 'second' (id {second_id}) stopped heartbeating" in last_error
    assert "no retry is left after 2 attempts (max_attempts=2)" in last_error
    assert [status for status, _ in events(db_url, job_id)] == [
        "todo",
        "doing",
        "todo",
        "doing",
        "failed",
    ]
    assert events(db_url, job_id)[-1][1] == last_error
    assert not (tmp_path / "finished").exists()
    assert not (tmp_path / "started-3").exists()
    assert workers(db_url) == ["third"]


def test_stalled_timeout_not_above_the_heartbeat_interval_is_one_line(db_url: str) -> None:
    result = cli(
        db_url,
        "--app",
        STALLED_APP,
        "worker",
        "--heartbeat-interval",
        "2",
        "--stalled-timeout",
        "2",
    )
    assert_one_line_error(result, "stalled_timeout (2.0 s) must exceed heartbeat_interval")
