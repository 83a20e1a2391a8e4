"""Scenario 2: the database restarts (cleanly or by crashing) or kills the worker's sessions
under a waiting worker. The worker never exits; a job deferred once the server is back starts
within a second (by NOTIFY: the worker polls only every 30 s); the first defer after the
restart succeeds; during the outage a defer fails with one clear line."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from conftest import Ledger, WorkerProcess, wait_until
from server import ChaosServer

import sqla_jobs

OUTAGE = 2.0
# A job deferred once the server is back starts within this long.
START_BOUND = 1.0


@pytest.fixture(params=["psycopg", "aiopg", "sqlalchemy_async"])
def connector_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(
    "fault", ["stop -m fast", "stop -m immediate", "terminate the LISTEN backend", "terminate all"]
)
def test_a_waiting_worker_rides_out_the_fault_and_runs_the_next_job_at_once(
    fault: str,
    connector_kind: str,
    chaos_server: ChaosServer,
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    worker = start_worker(chaos_db, "--polling-interval", "30", connector=connector_kind)
    # Defers go through a sync connector, as from a web app: its pool meets the fault too.
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=chaos_db))
    task = app.configure_task("chaos.run")
    dbname = chaos_server.dbname(chaos_db)
    try:
        assert wait_until(lambda: chaos_server.backend_pids(dbname, "LISTEN%"), 20), worker.output()
        first = task.defer()
        assert wait_until(lambda: ledger.finished(first), 10), worker.output()

        outage_error = ""
        if fault.startswith("stop"):
            chaos_server.stop(fault.split()[-1])
            with pytest.raises(sqla_jobs.ConnectionFailed) as caught:
                task.defer()
            outage_error = str(caught.value)
            assert "\n" not in outage_error
            time.sleep(OUTAGE)
            chaos_server.start()
        elif fault == "terminate the LISTEN backend":
            chaos_server.terminate(chaos_server.backend_pids(dbname, "LISTEN%"))
        else:
            chaos_server.terminate(chaos_server.backend_pids(dbname))

        deferred_at = time.monotonic()
        job_id = task.defer()  # the first defer after the fault: no error
        assert wait_until(lambda: ledger.finished(job_id), 30), worker.output()
        took = time.monotonic() - deferred_at
        assert worker.alive(), worker.output()
        report(
            f"{connector_kind}, {fault}: next job ran {took:.2f} s after its defer"
            + (f"; defer during the outage: {outage_error[:90]}..." if outage_error else "")
        )
        assert took <= START_BOUND, f"started {took:.2f} s after its defer:\n{worker.output()}"
    finally:
        app.close()
