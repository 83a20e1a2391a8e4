"""Scenario 3: a hung server. Every backend of worker A is stopped (SIGSTOP) while A runs a
job, for longer than the stalled timeout, then resumed. A's statements get no answer: its
client-side timeouts (database_timeout) fire instead of hanging; worker B judges A stalled and
runs the job again; when A's backends resume, A's late statements (its heartbeat, the finish of
its run) change nothing that B did."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from conftest import Ledger, WorkerProcess, wait_until
from server import ChaosServer

import sqla_jobs

# A judges nothing stalled before 2 s of silence; a statement waits 4 s for its answer (then
# psycopg waits up to 5 s more for the cancellation to take, and drops the connection).
ARGS = (
    "--heartbeat-interval", "0.5", "--stalled-timeout", "2", "--database-timeout", "4",
    "--polling-interval", "0.5",
)  # fmt: skip
PAUSE = 8.0


@pytest.mark.timeout(120)
def test_a_hung_server_fires_client_timeouts_and_the_late_completion_changes_nothing(
    chaos_server: ChaosServer,
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    dbname = chaos_server.dbname(chaos_db)
    a = start_worker(chaos_db, *ARGS, app_name="worker_a")
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=chaos_db))
    try:
        job_id = app.configure_task("chaos.run").defer(seconds=3.0)
    finally:
        app.close()
    assert wait_until(
        lambda: ledger.rows("SELECT pid FROM chaos_ledger WHERE job_id = %s", (job_id,)), 20
    ), a.output()
    # A runs the job: stop every session of A's (its pool, its LISTEN), not the ledger's.
    paused = [
        row[0]
        for row in chaos_server.admin(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'worker_a'",
            (dbname,),
        )
    ]
    assert paused, a.output()
    for pid in paused:
        chaos_server.pause(pid)
    paused_at = time.monotonic()
    b = start_worker(chaos_db, *ARGS, app_name="worker_b")
    try:
        # B finds A silent past the stalled timeout and runs the job again (attempt 2).
        assert wait_until(
            lambda: ledger.scalar(
                "SELECT count(*) FROM chaos_ledger WHERE job_id = %s AND finished_at IS NOT "
                "NULL AND attempt = 2",
                (job_id,),
            ),
            PAUSE,
        ), b.output()
        assert wait_until(
            lambda: (
                ledger.rows("SELECT status::text FROM sqla_jobs_jobs WHERE id = %s", (job_id,))
                == [("succeeded",)]
            ),
            PAUSE,
        ), b.output()
        time.sleep(max(0.0, PAUSE - (time.monotonic() - paused_at)))
    finally:
        for pid in paused:
            chaos_server.resume(pid)
    after_b = ledger.rows(
        "SELECT status::text, attempts, worker_id, finished_at, xmin::text FROM sqla_jobs_jobs "
        "WHERE id = %s",
        (job_id,),
    )
    # A's late statements run now: its heartbeat, the finish of its own run.
    assert wait_until(lambda: "declared stalled" in a.output(), 30), a.output()
    time.sleep(2)
    assert (
        ledger.rows(
            "SELECT status::text, attempts, worker_id, finished_at, xmin::text "
            "FROM sqla_jobs_jobs WHERE id = %s",
            (job_id,),
        )
        == after_b
    ), "A's late completion changed the job"
    assert a.alive() and b.alive(), a.output()
    timeouts = a.output().count("no answer within 4 s")
    assert timeouts >= 1, a.output()
    runs = ledger.rows(
        "SELECT attempt, pid FROM chaos_ledger WHERE job_id = %s ORDER BY id", (job_id,)
    )
    report(
        f"A's {len(paused)} backends stopped for {PAUSE:.0f} s: {timeouts} of A's statements "
        f"timed out client-side; B recovered and ran the job (runs: {runs}); after A's "
        f"backends resumed, the job's row was unchanged: {after_b[0][:3]}"
    )
