"""A stop while the server is down: SIGTERM reaches a worker whose jobs are running when
PostgreSQL goes down. It cannot record anything; it must still exit, within shutdown_timeout and
its bounded last writes, saying what it could not record; once the server is back, the
stalled-job sweep of another worker reruns those jobs, and none is lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from conftest import Ledger, WorkerProcess, wait_until
from server import ChaosServer

import sqla_jobs

JOBS = 40
SHUTDOWN_TIMEOUT = 2.0
# The last writes (outcomes, jobs handed back, the workers row) are bounded by 5 s in all,
# each try by at least 1 s; the rest is the process's own start and exit.
EXIT_BOUND = SHUTDOWN_TIMEOUT + 10.0


@pytest.mark.parametrize("connector_kind", ["psycopg", "aiopg", "sqlalchemy_async"])
def test_sigterm_with_the_server_down_exits_in_bounded_time_and_loses_no_job(
    connector_kind: str,
    chaos_server: ChaosServer,
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=chaos_db))
    try:
        app.configure_task("chaos.run").batch_defer(*({"seconds": 5.0} for _ in range(JOBS)))
    finally:
        app.close()
    worker = start_worker(
        chaos_db,
        "--concurrency",
        str(JOBS),
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
        connector=connector_kind,
    )
    assert wait_until(lambda: ledger.scalar("SELECT count(*) FROM chaos_ledger") == JOBS, 30), (
        worker.output()
    )

    # A clean stop: the chaos server runs without durability (fsync off), so a crash may lose
    # the jobs themselves, which is not what this scenario is about.
    chaos_server.stop("fast")
    stop_sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    status = worker.wait(EXIT_BOUND + 5)
    stopped_in = time.monotonic() - stop_sent
    output = worker.output()
    assert status == 0, output
    assert stopped_in <= EXIT_BOUND, f"exited {stopped_in:.1f} s after SIGTERM:\n{output}"
    # It says what it could not record, and who will: the stalled-job sweep.
    assert "Could not put the interrupted jobs" in output, output
    assert "until another worker recovers them as stalled" in output, output

    chaos_server.start()
    # A worker that judges others stalled after 2 s of silence recovers and reruns them.
    rescuer = start_worker(
        chaos_db,
        "--concurrency",
        str(JOBS),
        "--heartbeat-interval",
        "0.5",
        "--stalled-timeout",
        "2",
        connector=connector_kind,
    )
    assert wait_until(lambda: ledger.statuses() == {"succeeded": JOBS}, 40), (
        ledger.statuses(),
        rescuer.output(),
    )
    finished = ledger.scalar(
        "SELECT count(DISTINCT job_id) FROM chaos_ledger WHERE finished_at IS NOT NULL"
    )
    assert finished == JOBS
    report(
        f"{connector_kind}: SIGTERM with {JOBS} jobs running and the server down: exit 0 after "
        f"{stopped_in:.1f} s (shutdown_timeout {SHUTDOWN_TIMEOUT:g} s), the jobs it could not "
        f"hand back logged; once the server was back, another worker recovered and ran all "
        f"{JOBS}"
    )
