"""What the execution controls cost and whether they hold: one worker (default settings)
drains no-op jobs with no control, under a concurrency limit it never reaches (the cost of
the controlled claim alone), under one it reaches, and under a rate limit; in one run, on one
database. Writes bench/CONTROLS.md.

    .venv/bin/python bench/controls.py [--jobs 30000] [--database-url URL]

The rate is the steady one: from each run's jobs' own start times (``started_at``), between
20% and 80% of them, so that neither the worker's start nor the drain's tail counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

import sqla_jobs
from sqla_jobs import migrations

DEFAULT_SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "sqla_jobs_bench_controls"
RESULTS = Path(__file__).with_name("CONTROLS.md")
QUEUE = "bench"


def prepare(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    url = make_url(server).set(database=DATABASE).render_as_string(hide_password=False)
    migrations.upgrade(url)
    return url


def load(url: str, jobs: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE sqla_jobs_jobs, sqla_jobs_job_events")
        conn.execute(
            "INSERT INTO sqla_jobs_jobs (queue, task_name, args) "
            "SELECT %s, 'noop', '{}' FROM generate_series(1, %s)",
            (QUEUE, jobs),
        )
        conn.execute("VACUUM ANALYZE sqla_jobs_jobs")


def steady_rate(url: str) -> tuple[float, float]:
    """Jobs started per second between 20% and 80% of the run's starts; and the busiest
    second's starts (for the rate limit)."""
    with psycopg.connect(url) as conn:
        starts = [
            row[0].timestamp()
            for row in conn.execute(
                "SELECT started_at FROM sqla_jobs_jobs WHERE started_at IS NOT NULL "
                "ORDER BY started_at"
            )
        ]
    low, high = int(len(starts) * 0.2), int(len(starts) * 0.8)
    rate = (high - low) / (starts[high] - starts[low])
    busiest, first = 0, 0
    for last, started in enumerate(starts):
        while started - starts[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return rate, busiest


async def run(url: str, setup: Callable[[sqla_jobs.App], Awaitable[None]]) -> float:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=url))

    @app.task(name="noop", queue=QUEUE)
    async def noop() -> None:
        pass

    async with app.open_async():
        for control in await app.job_manager.list_controls_async():
            await app.job_manager.set_queue_limits_async(control.name)
        await setup(app)
        began = time.perf_counter()
        await app.run_worker_async(wait=False, install_signal_handlers=False, periodic=False)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = prepare(args.database_url)

    async def nothing(app: sqla_jobs.App) -> None:
        pass

    def limit(**limits: object) -> Callable[[sqla_jobs.App], Awaitable[None]]:
        async def setup(app: sqla_jobs.App) -> None:
            await app.job_manager.set_queue_limits_async(QUEUE, **limits)  # type: ignore[arg-type]

        return setup

    runs: list[tuple[str, Callable[[sqla_jobs.App], Awaitable[None]], int]] = [
        ("no control", nothing, args.jobs),
        (
            "concurrency limit 1,000 (not reached: the controlled claim's cost)",
            limit(concurrency_limit=1000),
            args.jobs,
        ),
        ("concurrency limit 5 (reached; concurrency 10)", limit(concurrency_limit=5), args.jobs),
        ("rate limit 2,000/s", limit(rate_limit="2000/s"), min(args.jobs, 10_000)),
    ]
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in runs}
    for round_ in range(args.rounds):
        for label, setup, jobs in runs:  # interleaved: the machine's drift touches all alike
            load(url, jobs)
            asyncio.run(run(url, setup))
            rate, busiest = steady_rate(url)
            results[label].append((rate, busiest))
            print(
                f"round {round_ + 1}  {label:66s} {rate:9,.0f} jobs/s  busiest second {busiest:,}"
            )
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    baseline = sorted(r for r, _ in results["no control"])[len(results["no control"]) // 2]
    lines = [
        "# Execution controls: cost and hold",
        "",
        "`bench/controls.py`: one worker at default settings (concurrency 10) drains no-op "
        f"jobs of one queue ({args.jobs:,}; 10,000 under the rate limit), after VACUUM "
        "ANALYZE; the steady rate is the jobs started per second between 20% and 80% of the "
        f"starts; the median of {args.rounds} interleaved rounds.",
        "",
        "| run | jobs/s (median) | vs no control | busiest second (starts) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, _, _ in runs:
        rates = sorted(r for r, _ in results[label])
        median = rates[len(rates) // 2]
        busiest = max(b for _, b in results[label])
        lines.append(f"| {label} | {median:,.0f} | {median / baseline:.2f}x | {busiest:,} |")
    lines.append("")
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
