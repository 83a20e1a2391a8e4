"""Scenario 9: workflows while worker processes are killed outright. A killed worker delays a
workflow; it never loses a step, runs a job before its parents succeeded, or leaves one
blocked for ever."""

from __future__ import annotations

from collections.abc import Callable

from conftest import (
    Ledger,
    WorkerProcess,
    assert_reruns_only_after_kills,
    kill_workers_until_done,
)
from test_workers import FAST_RECOVERY, deferring_app

import sqla_jobs


def test_workers_killed_mid_workflow_delay_it_but_never_lose_or_reorder_a_step(
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    """150 fan-out / fan-in workflows (a job, 4 in parallel, a job that waits for the 4) and
    30 chains of 10 steps (jobs of 30 to 50 ms), on 3 worker processes; every second one of
    them, at random, is killed with SIGKILL (holding claimed jobs, running ones, outcomes not
    yet written: a finish that would release dependents may die with it) and a new one
    starts. Every job ends succeeded, none is left blocked, and no job started before each of
    its parents had succeeded (its every run in the ledger began after its parents' finish was
    written)."""
    app = deferring_app(chaos_db)
    step = app.configure_task("chaos.run").step
    try:
        for _ in range(150):
            app.defer_workflow(
                sqla_jobs.chain(
                    step(seconds=0.03),
                    sqla_jobs.group(*(step(seconds=0.05) for _ in range(4))),
                    step(seconds=0.03),
                )
            )
        for _ in range(30):
            app.defer_workflow(sqla_jobs.chain(*(step(seconds=0.03) for _ in range(10))))
    finally:
        app.close()
    total = 150 * 6 + 30 * 10
    assert ledger.scalar("SELECT count(*) FROM sqla_jobs_job_dependencies") == 150 * 8 + 30 * 9
    args = ("--concurrency", "4", "--polling-interval", "0.5", *FAST_RECOVERY)
    run = kill_workers_until_done(
        ledger, start_worker, chaos_db, args, total=total, every=1.0, seed=9
    )

    assert ledger.statuses() == {"succeeded": total}, [w.output()[-2000:] for w in run.workers]
    early = ledger.rows(
        "SELECT d.job_id, d.parent_id, l.started_at, p.finished_at "
        "FROM sqla_jobs_job_dependencies d "
        "JOIN sqla_jobs_jobs p ON p.id = d.parent_id "
        "JOIN chaos_ledger l ON l.job_id = d.job_id "
        "WHERE l.started_at <= p.finished_at"
    )
    assert early == [], early[:10]
    ran = ledger.scalar("SELECT count(DISTINCT job_id) FROM chaos_ledger")
    assert ran == total
    reruns = assert_reruns_only_after_kills(ledger, run.killed)
    report(
        f"180 workflows ({total} jobs), 3 workers, {len(run.killed)} killed with SIGKILL: "
        f"all succeeded in {run.took:.0f} s, none started before its parents succeeded, none left "
        f"blocked; {reruns} jobs ran twice or more, each after its worker was killed"
    )
