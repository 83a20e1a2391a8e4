"""What dependencies between jobs cost: one worker (default settings) runs a fan-out / fan-in
workflow (a first job, then N jobs in parallel, then one job that reads their N results) and,
in the same run, N + 2 independent jobs; on one database, rounds interleaved. Writes
bench/WORKFLOWS.md.

    .venv/bin/python bench/workflows.py [--jobs 10000] [--rounds 3] [--database-url URL]

Both are timed from the worker's start to the last job's end (the workflow's end is its last
job's), so that the workflow's dependency work (the finish releasing N jobs, the N finishes
counting down the last job's parents, the N results read for it) all counts; the defer is
timed apart. Jobs are no-ops: what is measured is the queue's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

import sqla_jobs
from sqla_jobs import migrations

DEFAULT_SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "sqla_jobs_bench_workflows"
RESULTS = Path(__file__).with_name("WORKFLOWS.md")
QUEUE = "bench"


def prepare(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    url = make_url(server).set(database=DATABASE).render_as_string(hide_password=False)
    migrations.upgrade(url)
    return url


def empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE sqla_jobs_jobs, sqla_jobs_job_events, sqla_jobs_job_dependencies, "
            "sqla_jobs_workflows"
        )
        conn.execute("VACUUM ANALYZE sqla_jobs_jobs")
        conn.execute("VACUUM ANALYZE sqla_jobs_job_dependencies")


def make_app(url: str) -> tuple[sqla_jobs.App, dict[str, Any]]:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=url))
    seen: dict[str, Any] = {}

    @app.task(name="noop", queue=QUEUE)
    async def noop(i: int = 0) -> int:
        return i

    @app.task(name="noop_reading", queue=QUEUE, pass_context=True)
    async def noop_reading(context: sqla_jobs.JobContext, i: int = 0) -> int:
        return i + len(context.parent_results)

    @app.task(name="gather", queue=QUEUE, pass_context=True)
    async def gather(context: sqla_jobs.JobContext) -> int:
        results = context.parent_results
        seen["parents"] = len(results)
        seen["sum"] = sum(results.values())
        return len(results)

    return app, seen


def last_end(url: str) -> tuple[float, int]:
    """The last finish time (epoch seconds) and how many jobs succeeded."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT max(finished_at), count(*) FILTER (WHERE status = 'succeeded') "
            "FROM sqla_jobs_jobs"
        ).fetchone()
    assert row is not None and row[0] is not None
    return row[0].timestamp(), int(row[1])


async def independent(url: str, jobs: int) -> tuple[float, float]:
    """Defer ``jobs + 2`` independent jobs; run them. (defer s, run s)."""
    app, _ = make_app(url)
    async with app.open_async():
        noop = app.tasks["noop"]
        began = time.perf_counter()
        await noop.batch_defer_async(*({"i": i} for i in range(jobs + 2)))
        deferred = time.perf_counter() - began
        started = time.time()
        await app.run_worker_async(wait=False, install_signal_handlers=False, periodic=False)
    end, succeeded = last_end(url)
    assert succeeded == jobs + 2, succeeded
    return deferred, end - started


async def workflow(url: str, jobs: int, step_task: str = "noop") -> tuple[float, float]:
    """Defer a first job, ``jobs`` after it in parallel (tasks ``step_task``), then one that
    gathers their results; run them. (defer s, run s)."""
    app, seen = make_app(url)
    async with app.open_async():
        first, step, gather = app.tasks["noop"], app.tasks[step_task], app.tasks["gather"]
        shape = sqla_jobs.chain(
            first.step(i=0),
            sqla_jobs.group(*(step.step(i=i) for i in range(jobs))),
            gather.step(),
        )
        began = time.perf_counter()
        await app.defer_workflow_async(shape, name="bench fan-out / fan-in")
        deferred = time.perf_counter() - began
        started = time.time()
        await app.run_worker_async(wait=False, install_signal_handlers=False, periodic=False)
    end, succeeded = last_end(url)
    assert succeeded == jobs + 2, succeeded
    # Each of the parallel jobs returned i, or i + 1 (its one parent) when it read them.
    extra = jobs if step_task == "noop_reading" else 0
    assert seen == {"parents": jobs, "sum": jobs * (jobs - 1) // 2 + extra}, seen
    return deferred, end - started


async def workflow_reading(url: str, jobs: int) -> tuple[float, float]:
    """`workflow`, its parallel jobs each reading its parent's result (a context)."""
    return await workflow(url, jobs, step_task="noop_reading")


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = prepare(args.database_url)
    runs = {
        "independent": independent,
        "workflow": workflow,
        "workflow, every job reads its parents' results": workflow_reading,
    }
    figures: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}
    for round_ in range(args.rounds):
        for label, run in runs.items():  # interleaved: the machine's drift touches both alike
            empty(url)
            deferred, ran = asyncio.run(run(url, args.jobs))
            figures[label].append((deferred, ran))
            rate = (args.jobs + 2) / ran
            print(
                f"round {round_ + 1}  {label:48s} defer {deferred * 1000:7.0f} ms  "
                f"run {ran:6.2f} s  {rate:9,.0f} jobs/s"
            )
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    total = args.jobs + 2
    base_run = median([ran for _, ran in figures["independent"]])
    lines = [
        "# Workflows: what dependencies cost",
        "",
        "`bench/workflows.py`: one worker at default settings (concurrency 10) runs "
        f"{total:,} no-op jobs twice: independent (deferred with `batch_defer`), and as one "
        f"workflow: a first job, then {args.jobs:,} jobs in parallel, then one job that reads "
        f"their {args.jobs:,} results (`context.parent_results`). Run time: from the worker's "
        "start to the last job's end (`finished_at`), so the dependency work counts: the "
        f"finish that releases {args.jobs:,} jobs, the {args.jobs:,} finishes that count down "
        "the last job's parents, the results it reads. The parallel jobs' task takes no "
        "context, so their claims read no parents' results (a task that takes none cannot "
        "read them); the third row gives every job a context. Median of "
        f"{args.rounds} interleaved rounds, on an empty table each time.",
        "",
        "| jobs | defer (ms) | run (s) | jobs/s | run time vs independent |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label in runs:
        deferred = median([d for d, _ in figures[label]])
        ran = median([r for _, r in figures[label]])
        lines.append(
            f"| {label} | {deferred * 1000:,.0f} | {ran:.2f} | {total / ran:,.0f} "
            f"| {ran / base_run:.2f}x |"
        )
    lines.append("")
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
