"""A task's timeout in a real `sqla-jobs worker` process: an async job is cancelled at its
deadline, a sync job that ignores should_abort() is recorded failed after the grace while its
thread runs on (its late return changes nothing), and the worker goes on running other jobs,
then stops cleanly."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from test_cli import WorkerProcess, cli, job_status, query, wait_for

TIMEOUT_APP = "timeout_app:app"


def defer(database_url: str, task: str, **arguments: object) -> int:
    result = cli(database_url, "--app", TIMEOUT_APP, "defer", task, json.dumps(arguments))
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def last_error(database_url: str, job_id: int) -> str:
    rows = query(database_url, "SELECT last_error FROM sqla_jobs_jobs WHERE id = %s", job_id)
    return str(rows[0][0])


def test_a_worker_process_times_out_a_sync_and_an_async_job_and_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    worker = WorkerProcess(
        db_url,
        tmp_path / "worker.log",
        "--app",
        TIMEOUT_APP,
        "--concurrency",
        "2",
        "--polling-interval",
        "0.2",
    )
    try:
        sync_job = defer(db_url, "stuck_sync", directory=str(files), seconds=12)
        async_job = defer(db_url, "stuck_async", directory=str(files))

        def status_is(job_id: int, status: str) -> bool:
            return job_status(db_url, job_id) == status

        wait_for(lambda: status_is(async_job, "failed"), "the async job's timeout", 30, worker)
        assert (files / "async-cancelled").exists()
        assert "ran past its task's timeout of 1 s; it was cancelled." in last_error(
            db_url, async_job
        )

        wait_for(lambda: status_is(sync_job, "failed"), "the sync job's timeout", 30, worker)
        assert not (files / "sync-returned").exists(), "recorded only once the thread ended"
        assert (
            "its thread, which cannot be interrupted, is left to end (the traceback shows "
            "where it was)." in last_error(db_url, sync_job)
        )

        # The async job's slot is free: the worker goes on beside the leftover thread.
        quick_job = defer(db_url, "quick", directory=str(files))
        wait_for(lambda: status_is(quick_job, "succeeded"), "the next job", 30, worker)
        assert worker.process.poll() is None

        shown = cli(db_url, "--app", TIMEOUT_APP, "jobs", "show", str(sync_job))
        assert shown.returncode == 0, shown.stderr
        assert "failed (timed out)" in shown.stdout
        assert "sqla_jobs.errors.JobTimeout: Job" in shown.stdout

        wait_for((files / "sync-returned").exists, "the sync thread's end", 30, worker)
        wait_for(lambda: "thread still runs" in worker.output(), "the log", 10, worker)
        assert status_is(sync_job, "failed"), "the late return overwrote the failure"
        assert worker.stop(signal.SIGTERM, timeout=20) == 0
    finally:
        worker.kill()
    output = worker.output()
    assert f"Job {sync_job} (stuck_sync) ran past its timeout of 1 s" in output
    assert "Traceback" in output  # the failures, logged with their tracebacks
