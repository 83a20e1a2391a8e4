"""Steady-state claim and finish rate over a big queue, with or without table statistics.

Loads ``--waiting`` no-op jobs into a fresh database (``claimplan_<random>``, dropped after),
optionally runs ``ANALYZE`` (``--statistics analysed``), or analyses the table when it held ten
waiting jobs (``stale``), then drains it for at most ``--seconds``, and prints one JSON line:
jobs per second between 20% and 80% of the jobs processed (the steady state, not the start
or the tail). ``--mode raw`` sends the claim and finish statements from a bare psycopg loop
(prepared, as the worker sends them); ``--mode worker`` runs a real worker (default options)
and reads the finish times back from the jobs table. Autovacuum is switched off for the table,
as on a server where it is off, or before its first ANALYZE.

    .venv/bin/python bench/claim_plan.py --waiting 200000 --statistics none --mode raw

``--sqla-jobs-path DIR`` measures the package in another checkout (to compare two commits;
alternate the runs, the machine's load changes everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from typing import Any

import psycopg

LOAD = (
    "INSERT INTO sqla_jobs_jobs (queue, task_name, args) "
    "SELECT 'default', 'noop', '{}'::jsonb FROM generate_series(1, %s)"
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--waiting", type=int, default=200_000)
    parser.add_argument("--statistics", choices=["none", "analysed", "stale"], default="none")
    parser.add_argument("--mode", choices=["raw", "worker"], default="raw")
    parser.add_argument("--batch", type=int, default=100, help="claim size of the raw loop")
    parser.add_argument("--queues", nargs="*", default=None, help="claim from these only")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--sqla-jobs-path", default=None)
    return parser.parse_args()


def load(url: str, waiting: int, statistics: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE sqla_jobs_jobs SET (autovacuum_enabled = false)")
        if statistics == "stale":
            conn.execute(LOAD, (10,))
            conn.execute("ANALYZE sqla_jobs_jobs")
            conn.execute("DELETE FROM sqla_jobs_jobs")
        conn.execute(LOAD, (waiting,))
        if statistics == "analysed":
            conn.execute("ANALYZE sqla_jobs_jobs")
        conn.execute("CHECKPOINT")


def raw_loop(
    url: str, batch: int, seconds: float, queues: list[str] | None
) -> list[tuple[float, int]]:
    """(time, jobs done) after each claim and finish."""
    from sqla_jobs import queries

    marks = [(time.perf_counter(), 0)]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            queries.register_worker.sql,
            {"name": "bench", "hostname": "bench", "pid": 0, "queues": None, "concurrency": 1},
        ).fetchone()
        assert row is not None
        worker_id = row[0]
        claim = queries.claim_query(batch, in_queues=queues is not None)
        finish = queries.finish_succeeded
        params: dict[str, Any] = {"worker_id": worker_id}
        if queues is not None:
            params["queues"] = queues
        while marks[-1][0] - marks[0][0] < seconds:
            rows = conn.execute(claim.sql, params, prepare=True).fetchall()
            if not rows:
                break
            ids = [row[0] for row in rows]
            attempts = [row[9] for row in rows]  # the claim returns _JOB_COLUMNS
            params_ = {"worker_id": worker_id, "ids": ids, "attempts": attempts}
            conn.execute(finish.sql, params_, prepare=True)
            marks.append((time.perf_counter(), marks[-1][1] + len(ids)))
    return marks


def worker_run(url: str, seconds: float, queues: list[str] | None) -> list[tuple[float, int]]:
    """(finish time, jobs done) of each job a real worker finished within ``seconds``."""
    import sqla_jobs
    from sqla_jobs.worker import Worker, WorkerOptions

    logging.disable(logging.CRITICAL)
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(**kwargs: Any) -> None:
        return None

    async def run() -> None:
        async with app.open_async():
            options = WorkerOptions(wait=False, install_signal_handlers=False, queues=queues)
            worker = Worker(app, options)
            task = asyncio.create_task(worker.run())
            done, _ = await asyncio.wait([task], timeout=seconds)
            if not done:
                worker.stop()
                await task

    asyncio.run(run())
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM finished_at)::float8 FROM sqla_jobs_jobs "
            "WHERE status = 'succeeded' ORDER BY finished_at"
        ).fetchall()
    return [(row[0], done) for done, row in enumerate(rows, start=1)]


def steady_rate(marks: list[tuple[float, int]]) -> float:
    """Jobs per second between 20% and 80% of the jobs processed."""
    total = marks[-1][1]
    low = next(mark for mark in marks if mark[1] >= 0.2 * total)
    high = next(mark for mark in marks if mark[1] >= 0.8 * total)
    return (high[1] - low[1]) / (high[0] - low[0]) if high[0] > low[0] else float("nan")


def main() -> None:
    args = parse()
    if args.sqla_jobs_path:
        sys.path.insert(0, args.sqla_jobs_path)
    import sqla_jobs
    from sqla_jobs import migrations

    name = f"claimplan_{uuid.uuid4().hex[:8]}"
    url = args.server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        migrations.upgrade(url)
        load(url, args.waiting, args.statistics)
        if args.mode == "raw":
            marks = raw_loop(url, args.batch, args.seconds, args.queues)
        else:
            marks = worker_run(url, args.seconds, args.queues)
        result = {
            "sqla_jobs": sqla_jobs.__file__,
            "waiting": args.waiting,
            "statistics": args.statistics,
            "mode": args.mode,
            "batch": args.batch if args.mode == "raw" else None,
            "queues": args.queues,
            "processed": marks[-1][1],
            "jobs_per_second": round(steady_rate(marks)),
        }
        print(json.dumps(result), flush=True)
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
