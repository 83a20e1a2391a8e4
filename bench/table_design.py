"""PostgreSQL's CPU per job for our claim and finish, against table designs we did not ship.

Why the jobs table is what it is, in figures. For each design below, in a fresh database
(``tabledesign_<random>``, dropped after), it loads ``--jobs`` no-op jobs, then claims and
finishes them all in batches of ``--batch`` from one bare psycopg connection, and reads the CPU
time of that connection's server process from ``/proc`` (so the server must run on this
machine) before and after each statement: PostgreSQL's CPU per job to load (defer), claim and
finish, and the share of the jobs table's updates that were HOT (heap-only: no new index entry).

* ``current``: the jobs table of the migrations' head, and the statements the worker sends
  (`sqla_jobs.queries`, prepared).
* ``current-bare``: the same without what the hot path could shed without a redesign: the BRIN
  index on ``finished_at`` (the dashboard's last hour), the index of running jobs by worker
  (recovery of a dead worker's jobs) and the row triggers (history, workflows, ``wait_for``).
* ``queue-table``: waiting jobs also have a row in a narrow table of their own (id, queue,
  priority, lock, scheduled_at), which the claim walks and deletes from; the jobs table has no
  index on a column the claim or the finish changes, and a fill factor of 50, so that both
  updates can be HOT. Running jobs are indexed nowhere, and locks, controls and unique keys
  are left out: a lower bound for that design, not a working queue.
* ``queue-table-running``: the narrow table keeps a job while it runs as well (the claim
  marks it with the worker's id, the finish deletes it), with an index of running jobs by
  worker: what recovery and locks need, still without locks, controls or unique keys.

    .venv/bin/python bench/table_design.py --jobs 200000

Alternate runs on a quiet machine: the figures move by ~10% from run to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DESIGNS = ("current", "current-bare", "queue-table", "queue-table-running")

# The columns the worker's claim returns (sqla_jobs.statements._build.CLAIM_COLUMNS).
RETURNING = (
    "id, queue, task_name, CAST(args AS TEXT) AS args, priority, lock, queueing_lock, "
    "scheduled_at, attempts, created_at, started_at, finished_at, last_error, trace_context, "
    "tags, CAST(meta AS TEXT) AS meta, workflow_id, parents_left"
)
ATTEMPTS = 8  # position of attempts in RETURNING


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--designs", nargs="*", choices=DESIGNS, default=list(DESIGNS))
    return parser.parse_args()


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the server process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shed(conn: psycopg.Connection[Any]) -> None:
    """``current-bare``: drop the BRIN index, the running-by-worker index, the row triggers."""
    conn.execute("DROP INDEX ix_sqla_jobs_jobs_finished_at")
    conn.execute("DROP INDEX ix_sqla_jobs_jobs_worker_id_running")
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'sqla_jobs_jobs'::regclass "
        "AND NOT tgisinternal AND tgtype & 1 = 1"  # TRIGGER_TYPE_ROW
    ).fetchall()
    for (name,) in rows:
        conn.execute(f"DROP TRIGGER {name} ON sqla_jobs_jobs")


def queue_tables(conn: psycopg.Connection[Any], *, running: bool) -> None:
    """The ``queue-table`` designs: a narrow table of waiting (and running) jobs, and a jobs
    table whose indexes read no column that the claim or the finish changes."""
    conn.execute(
        "CREATE TABLE jobs (LIKE sqla_jobs_jobs INCLUDING DEFAULTS INCLUDING IDENTITY) "
        "WITH (fillfactor = 50)"
    )
    conn.execute("ALTER TABLE jobs ADD PRIMARY KEY (id)")
    conn.execute("CREATE INDEX ON jobs USING gin (tags) WHERE tags IS NOT NULL")
    conn.execute("CREATE INDEX ON jobs (workflow_id) WHERE workflow_id IS NOT NULL")
    conn.execute(
        "CREATE TABLE queue (id bigint PRIMARY KEY, queue text NOT NULL, priority int NOT NULL, "
        "lock text, scheduled_at timestamptz, worker_id bigint)"
    )
    conn.execute("CREATE INDEX queue_fetch ON queue (priority DESC, id) WHERE worker_id IS NULL")
    if running:
        conn.execute("CREATE INDEX queue_running ON queue (worker_id) WHERE worker_id IS NOT NULL")


def statements(design: str, batch: int) -> tuple[str, str, str]:
    """The load, claim and finish statements of ``design``."""
    if design.startswith("current"):
        from sqla_jobs import queries

        load = (
            "INSERT INTO sqla_jobs_jobs (queue, task_name, args) "
            "SELECT 'default', 'noop', '{}'::jsonb FROM generate_series(1, %(n)s)"
        )
        return load, queries.claim_query(batch, in_queues=False).sql, queries.finish_succeeded.sql
    load = (
        "WITH new AS (INSERT INTO jobs (queue, task_name, args) "
        "SELECT 'default', 'noop', '{}'::jsonb FROM generate_series(1, %(n)s) "
        "RETURNING id, queue, priority, lock, scheduled_at) "
        "INSERT INTO queue (id, queue, priority, lock, scheduled_at) SELECT * FROM new"
    )
    take = (
        "UPDATE queue SET worker_id = %(worker_id)s FROM chosen WHERE queue.id = chosen.id "
        "RETURNING queue.id"
        if design == "queue-table-running"
        else "DELETE FROM queue USING chosen WHERE queue.id = chosen.id RETURNING queue.id"
    )
    claim = (
        # The limit as a sub-select, as in our claim (sqla_jobs.statements.claim): without
        # statistics, a written-in limit makes the planner sort the whole queue.
        "WITH chosen AS (SELECT id FROM (SELECT id FROM queue WHERE worker_id IS NULL "
        "AND (scheduled_at IS NULL OR scheduled_at <= now()) ORDER BY priority DESC, id "
        f"LIMIT (SELECT CAST({batch} AS bigint)) FOR UPDATE SKIP LOCKED) AS ready "
        f"LIMIT {batch}), taken AS ({take}) "
        "UPDATE jobs SET status = 'doing', attempts = attempts + 1, "
        "started_at = clock_timestamp(), worker_id = %(worker_id)s "
        f"WHERE id = any(ARRAY(SELECT id FROM taken)) RETURNING {RETURNING}"
    )
    forget = (
        "WITH gone AS (DELETE FROM queue WHERE id = any(CAST(%(ids)s AS bigint[]))) "
        if design == "queue-table-running"
        else ""
    )
    finish = (
        f"{forget}UPDATE jobs SET status = 'succeeded', finished_at = clock_timestamp(), "
        "has_dependents = CASE WHEN jobs.has_dependents THEN false END "
        "FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(attempts)s AS integer[])) "
        "AS done(id, attempt) WHERE jobs.id = done.id AND jobs.attempts = done.attempt "
        "AND jobs.status = 'doing' AND jobs.worker_id = %(worker_id)s"
    )
    return load, claim, finish


def measure(url: str, design: str, jobs: int, batch: int) -> dict[str, float]:
    load, claim, finish = statements(design, batch)
    table = "sqla_jobs_jobs" if design.startswith("current") else "jobs"
    with psycopg.connect(url, autocommit=True) as conn:
        if design == "current-bare":
            shed(conn)
        elif design.startswith("queue-table"):
            queue_tables(conn, running=design == "queue-table-running")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        spent = {"load": 0.0, "claim": 0.0, "finish": 0.0}

        @contextlib.contextmanager
        def timed(part: str) -> Iterator[None]:
            before = server_cpu(pid)
            yield
            spent[part] += server_cpu(pid) - before

        for start in range(0, jobs, batch):
            with timed("load"):
                conn.execute(load, {"n": min(batch, jobs - start)})
        conn.execute("CHECKPOINT")
        done = 0
        while True:
            with timed("claim"):
                rows = conn.execute(claim, {"worker_id": 1}, prepare=True).fetchall()
            if not rows:
                break
            ran = {
                "worker_id": 1,
                "ids": [row[0] for row in rows],
                "attempts": [row[ATTEMPTS] for row in rows],
            }
            with timed("finish"):
                conn.execute(finish, ran, prepare=True)
            done += len(rows)
        assert done == jobs, f"{design}: {done} of {jobs} jobs claimed"
        # A server process writes its table counters out at most once a second, when idle:
        # have it write them before the next statement reads them (PostgreSQL 15+).
        with contextlib.suppress(psycopg.errors.UndefinedFunction):
            conn.execute("SELECT pg_stat_force_next_flush()")
        updates, hot = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s",
            (table,),
        ).fetchone()  # type: ignore[misc]
    figures = {part: 1e6 * seconds / jobs for part, seconds in spent.items()}
    figures["claim+finish"] = figures["claim"] + figures["finish"]
    figures["hot"] = hot / updates if updates else 0.0
    return figures


def main() -> None:
    args = parse()
    print(
        f"PostgreSQL CPU per job, us ({args.jobs} jobs, batches of {args.batch})\n\n"
        "| design | load | claim | finish | claim + finish | HOT updates |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for design in args.designs:
        name = f"tabledesign_{uuid.uuid4().hex[:8]}"
        url = urlsplit(args.server)._replace(path="/" + name).geturl()
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            from sqla_jobs import migrations

            migrations.upgrade(url)
            f = measure(url, design, args.jobs, args.batch)
        finally:
            with psycopg.connect(args.server, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        print(
            f"| {design} | {f['load']:.1f} | {f['claim']:.1f} | {f['finish']:.1f} "
            f"| {f['claim+finish']:.1f} | {f['hot']:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
