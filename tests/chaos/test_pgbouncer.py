"""Scenario 4: PgBouncer in transaction mode, set up as the README shows (no pool of ours, no
prepared statements): jobs defer and drain through it, and a waiting worker, whose LISTEN
PgBouncer takes but never answers, says so in one warning and wakes by polling."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator

import psycopg_pool
import pytest
from conftest import Ledger, WorkerProcess, wait_until
from server import ChaosServer, PgBouncer

import sqla_jobs

POLLING_INTERVAL = 1.0


@pytest.fixture
def pgbouncer(chaos_server: ChaosServer) -> Iterator[PgBouncer]:
    if not (shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")):
        if os.environ.get("SQLA_JOBS_REQUIRE_PGBOUNCER"):
            pytest.fail("pgbouncer is not installed (apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = PgBouncer(chaos_server, "transaction")
    yield bouncer
    bouncer.close()


def test_through_pgbouncer_in_transaction_mode_jobs_defer_drain_and_wake_a_waiting_worker(
    chaos_server: ChaosServer,
    chaos_db: str,
    pgbouncer: PgBouncer,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    url = pgbouncer.url(chaos_server.dbname(chaos_db))
    app = sqla_jobs.App(
        connector=sqla_jobs.SyncPsycopgConnector(
            pool_factory=psycopg_pool.NullConnectionPool,
            conninfo=url,
            kwargs={"prepare_threshold": None},
        )
    )
    task = app.configure_task("chaos.run")
    try:
        task.batch_defer(*({} for _ in range(2_000)))
        for _ in range(5):
            task.defer()
        worker = start_worker(
            url, "--polling-interval", str(POLLING_INTERVAL), connector="psycopg_pgbouncer"
        )
        started = time.monotonic()
        assert wait_until(lambda: ledger.statuses() == {"succeeded": 2_005}, 60), (
            worker.output() + pgbouncer.log()
        )
        drained_in = time.monotonic() - started

        assert wait_until(lambda: "hears no notification" in worker.output(), 15), worker.output()
        deferred_at = time.monotonic()
        job_id = task.defer()
        assert wait_until(lambda: ledger.finished(job_id), POLLING_INTERVAL + 2), worker.output()
        woke_in = time.monotonic() - deferred_at
        assert worker.alive(), worker.output()
        warnings = [line for line in worker.output().splitlines() if "WARNING" in line]
        assert len(warnings) == 1, warnings
    finally:
        app.close()
    report(
        f"through PgBouncer (transaction mode): 2,005 jobs deferred and drained in "
        f"{drained_in:.1f} s; the waiting worker warned once that LISTEN hears nothing and "
        f"ran a new job {woke_in:.2f} s after its defer (polling every {POLLING_INTERVAL} s)"
    )
