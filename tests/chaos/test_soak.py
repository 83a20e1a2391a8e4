"""Scenario 7: a bounded soak. One worker runs throughout while jobs keep arriving and other
workers join and leave (SIGTERM, now and then SIGKILL). Afterwards: the server's connections,
the long-lived worker's memory and the queue show no growth and nothing stuck.

``SQLA_JOBS_SOAK_SECONDS`` sets the length (default 90)."""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable

import pytest
from conftest import Ledger, WorkerProcess, wait_until
from server import ChaosServer

import sqla_jobs

SOAK_SECONDS = float(os.environ.get("SQLA_JOBS_SOAK_SECONDS", "90"))
ARGS = (
    "--concurrency",
    "20",
    "--polling-interval",
    "0.5",
    "--heartbeat-interval",
    "0.5",
    "--stalled-timeout",
    "3",
)


def deferring_app(url: str) -> sqla_jobs.App:
    return sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=url))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_workers_joining_and_leaving_for_minutes_leave_no_growth_and_nothing_stuck(
    chaos_server: ChaosServer,
    chaos_db: str,
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str], None],
) -> None:
    dbname = chaos_server.dbname(chaos_db)
    steady = start_worker(chaos_db, *ARGS)
    warm_up = deferring_app(chaos_db)
    try:
        first = warm_up.configure_task("chaos.run").defer()
    finally:
        warm_up.close()
    assert wait_until(lambda: ledger.finished(first), 20), steady.output()
    # The steady worker alone: its LISTEN, its pool, its ledger connection.
    alone_before = len(chaos_server.backend_pids(dbname))
    stop_deferring = threading.Event()
    deferred = 0

    def defer_continuously() -> None:
        nonlocal deferred
        app = deferring_app(chaos_db)
        task = app.configure_task("chaos.run")
        try:
            while not stop_deferring.wait(0.1):
                task.batch_defer(*({} for _ in range(100)))
                deferred += 100
        finally:
            app.close()

    deferrer = threading.Thread(target=defer_continuously, name="soak-deferrer", daemon=True)
    deferrer.start()
    rng = random.Random(7)
    visitors: list[WorkerProcess] = []
    connections: list[int] = []
    memory: list[int] = []
    kills = terms = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < SOAK_SECONDS:
            time.sleep(3)
            if visitors and rng.random() < 0.5:
                leaving = visitors.pop(0)
                if rng.random() < 0.25:
                    leaving.signal(signal.SIGKILL)
                    kills += 1
                else:
                    wait_until(lambda v=leaving: "started (id" in v.output(), 20)
                    leaving.signal(signal.SIGTERM)
                    terms += 1
                    assert leaving.wait(40) == 0, leaving.output()
                leaving.wait(10)
            if len(visitors) < 3:
                visitors.append(start_worker(chaos_db, *ARGS))
            connections.append(len(chaos_server.backend_pids(dbname)))
            memory.append(rss_kib(steady.pid))
    finally:
        stop_deferring.set()
        deferrer.join(30)
        for visitor in visitors:
            # Signals are the worker's once it runs (before, SIGTERM ends the bare process).
            wait_until(lambda v=visitor: "started (id" in v.output(), 20)
            visitor.signal(signal.SIGTERM)
    for visitor in visitors:
        assert visitor.wait(40) == 0, visitor.output()
        terms += 1
    assert steady.alive(), steady.output()[-3000:]
    assert wait_until(lambda: set(ledger.statuses()) == {"succeeded"}, 60), ledger.statuses()
    total = ledger.scalar("SELECT count(*) FROM sqla_jobs_jobs")
    assert total == deferred + 1
    # Everyone else gone (the killed ones too): the steady worker alone holds what it held.
    wait_until(lambda: len(chaos_server.backend_pids(dbname)) <= alone_before, 10)
    alone_after = len(chaos_server.backend_pids(dbname))

    third = max(len(memory) // 3, 1)
    early_memory = statistics.median(memory[:third])
    late_memory = statistics.median(memory[-third:])
    report(
        f"{SOAK_SECONDS:.0f} s, {deferred} jobs, {terms} workers left by SIGTERM and {kills} "
        f"by SIGKILL: all succeeded, none stuck; server connections of the steady worker "
        f"alone {alone_before} before, {alone_after} after (at most {max(connections)} "
        f"with visitors); its RSS {early_memory / 1024:.1f} -> {late_memory / 1024:.1f} MiB"
    )
    assert alone_after == alone_before, connections
    assert late_memory <= early_memory * 1.15 + 4096, memory
