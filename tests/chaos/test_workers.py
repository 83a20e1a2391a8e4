"""Scenarios 1, 5 and 6: worker processes killed outright in a loop, jobs sharing a lock
across processes, and a graceful stop with hundreds of jobs in flight."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from conftest import (
    Ledger,
    WorkerProcess,
    assert_reruns_only_after_kills,
    kill_workers_until_done,
    wait_until,
)

import sqla_jobs

# Recovering workers: a heartbeat every 0.5 s, a worker silent for 2 s is dead.
FAST_RECOVERY = ("--heartbeat-interval", "0.5", "--stalled-timeout", "2")


def deferring_app(url: str) -> sqla_jobs.App:
    return sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=url))


def test_workers_killed_every_two_seconds_lose_no_job_and_rerun_only_what_they_held(
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    """Scenario 1: 3 worker processes share 20,000 jobs; every 2 s one of them, at random, is
    killed with SIGKILL (mid-claim, mid-run, with outcomes not yet written: wherever it is)
    and a new one starts. Every job ends succeeded; a job ran twice only if a killed worker
    held it."""
    total = 20_000
    app = deferring_app(chaos_db)
    try:
        # 10 ms jobs, 4 at a time per worker: a drain of some 20 s, with a kill every 2 s.
        app.configure_task("chaos.run").batch_defer(*({"seconds": 0.01} for _ in range(total)))
    finally:
        app.close()
    args = ("--concurrency", "4", "--polling-interval", "0.5", *FAST_RECOVERY)
    run = kill_workers_until_done(
        ledger, start_worker, chaos_db, args, total=total, every=2.0, seed=1
    )

    assert ledger.statuses() == {"succeeded": total}, [w.output()[-2000:] for w in run.workers]
    reruns = assert_reruns_only_after_kills(ledger, run.killed)
    ran = ledger.scalar("SELECT count(DISTINCT job_id) FROM chaos_ledger")
    assert ran == total
    report(
        f"{total} jobs, 3 workers, {len(run.killed)} killed with SIGKILL: all succeeded in "
        f"{run.took:.0f} s; {reruns} jobs ran twice or more, each after its worker was killed"
    )


def test_jobs_sharing_a_lock_never_overlap_across_three_processes(
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    """Scenario 5: the ledger's exclusion constraint (btree_gist) refuses a run of a lock key
    that overlaps another's in time; a refused run would fail its attempt and show as a
    second attempt. 8 keys x 25 jobs of 20 ms on 3 workers of 3 slots each."""
    workers = [
        start_worker(chaos_db, "--concurrency", "3", "--prefetch", "0", "--polling-interval", "0.2")
        for _ in range(3)
    ]
    app = deferring_app(chaos_db)
    try:
        for _ in range(25):
            for key in range(8):
                name = f"lock-{key}"
                app.configure_task("chaos.run", lock=name).defer(seconds=0.02, key=name)
    finally:
        app.close()
    assert wait_until(lambda: ledger.statuses() == {"succeeded": 200}, 120), [
        w.output()[-2000:] for w in workers
    ]
    attempts = ledger.rows("SELECT attempts, count(*) FROM sqla_jobs_jobs GROUP BY 1")
    assert attempts == [(1, 200)], attempts
    processes = ledger.scalar("SELECT count(DISTINCT pid) FROM chaos_ledger")
    spread = ledger.scalar(
        "SELECT max(finished_at) - min(started_at) FROM chaos_ledger"
    ).total_seconds()
    report(
        f"200 jobs on 8 locks ran on {processes} processes in {spread:.1f} s, none "
        "overlapping another of its lock (checked by the ledger's exclusion constraint)"
    )
    assert processes == 3


def test_sigterm_with_hundreds_of_jobs_in_flight_loses_nothing_and_exits_0(
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    """Scenario 6: 300 jobs of 1 s running and more claimed ahead when SIGTERM comes: the
    running ones finish and are recorded, the rest go back to the queue, the worker exits 0,
    nothing is left doing; a second worker runs the rest, each job exactly once."""
    total = 1_000
    app = deferring_app(chaos_db)
    try:
        app.configure_task("chaos.run").batch_defer(*({"seconds": 1.0} for _ in range(total)))
    finally:
        app.close()
    worker = start_worker(chaos_db, "--concurrency", "300", "--polling-interval", "0.2")
    assert wait_until(lambda: ledger.scalar("SELECT count(*) FROM chaos_ledger") >= 300, 30), (
        worker.output()
    )
    in_flight = ledger.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'doing'")
    stop_sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(40) == 0, worker.output()
    stopped_in = time.monotonic() - stop_sent
    statuses = ledger.statuses()
    assert "doing" not in statuses, statuses
    unrecorded = ledger.scalar(
        "SELECT count(*) FROM chaos_ledger l JOIN sqla_jobs_jobs j ON j.id = l.job_id "
        "WHERE l.finished_at IS NOT NULL AND j.status <> 'succeeded'"
    )
    assert unrecorded == 0, "a run that finished was not recorded"

    drain = start_worker(chaos_db, "--concurrency", "300", "--polling-interval", "0.2")
    assert wait_until(lambda: ledger.statuses() == {"succeeded": total}, 60), drain.output()
    runs = ledger.rows("SELECT count(*), count(DISTINCT job_id) FROM chaos_ledger")[0]
    assert runs == (total, total), f"{runs[0]} runs of {runs[1]} jobs"
    report(
        f"SIGTERM with {in_flight} jobs doing: exit 0 after {stopped_in:.1f} s, "
        f"{statuses.get('succeeded', 0)} recorded, {statuses.get('todo', 0)} back in the "
        f"queue; after a second worker, {total} jobs ran exactly once each"
    )
