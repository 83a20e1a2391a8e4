"""The chaos suite: real `sqla-jobs worker` processes, real signals, and a PostgreSQL server
of the suite's own (`server.ChaosServer`), which its tests stop, crash, restart and pause.

Marked ``chaos``: ``python -m pytest -m chaos`` runs it (the default run leaves it out; CI runs
it on its own). Every run of a job writes a row to a ledger (``ledger_app.py``), from which the
tests prove what ran, how often and when. Each scenario prints its figures.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from server import ChaosServer

from sqla_jobs import migrations

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

LEDGER_DDL = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TABLE chaos_ledger (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    key text,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    -- Two runs of one key never overlap in time (an unfinished run reaches to infinity).
    EXCLUDE USING gist (key WITH =, tstzrange(started_at, finished_at) WITH &&)
        WHERE (key IS NOT NULL)
);
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def chaos_server() -> Iterator[ChaosServer]:
    server = ChaosServer()
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE chaos_template")
        migrations.upgrade(server.url("chaos_template"))
        with psycopg.connect(server.url("chaos_template"), autocommit=True) as conn:
            conn.execute(LEDGER_DDL)
        yield server
    finally:
        server.close()


_names = (f"chaos_{i}" for i in itertools.count())


@pytest.fixture
def chaos_db(chaos_server: ChaosServer) -> Iterator[str]:
    """URL of a fresh database with the job tables and the ledger. The server is up when
    the test starts, and is started again after it if the test left it down."""
    if not chaos_server.is_up():
        chaos_server.start()
    name = next(_names)
    chaos_server.admin(f"CREATE DATABASE {name} TEMPLATE chaos_template")
    yield chaos_server.url(name)
    if not chaos_server.is_up():
        chaos_server.start()
    chaos_server.admin(f"DROP DATABASE {name} WITH (FORCE)")


class WorkerProcess:
    """A `sqla-jobs worker` process on ``ledger_app``, its output in a file."""

    def __init__(
        self, url: str, log: Path, connector: str, *args: str, app_name: str = "chaos_worker"
    ) -> None:
        self.log = log
        self._log_file = log.open("w")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CHAOS_CONNECTOR": connector,
            "CHAOS_APP_NAME": app_name,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqla_jobs", "--app", "ledger_app:app", "worker", *args],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(
        url: str, *args: str, connector: str = "psycopg", app_name: str = "chaos_worker"
    ) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        worker = WorkerProcess(url, log, connector, *args, app_name=app_name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


class Ledger:
    """Reads the ledger and the job tables (a connection per call: it survives restarts)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = None) -> Any:
        return self.rows(sql, params)[0][0]

    def finished(self, job_id: int) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM chaos_ledger WHERE job_id = %s AND finished_at IS NOT NULL",
                (job_id,),
            )
        )

    def statuses(self) -> dict[str, int]:
        return dict(self.rows("SELECT status::text, count(*) FROM sqla_jobs_jobs GROUP BY 1"))


@pytest.fixture
def ledger(chaos_db: str) -> Ledger:
    return Ledger(chaos_db)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Any:
    """``report(text)``: print a scenario's figures, past pytest's capture."""

    def write(text: str) -> None:
        with capsys.disabled():
            print(f"\n[{request.node.name}] {text}", flush=True)

    return write


@dataclasses.dataclass
class Killings:
    """What `kill_workers_until_done` did: the workers left running, the pids it killed, and
    how long the jobs took to succeed (or the bound)."""

    workers: list[WorkerProcess]
    killed: set[int]
    took: float


def kill_workers_until_done(
    ledger: Ledger,
    start_worker: Callable[..., WorkerProcess],
    url: str,
    args: tuple[str, ...],
    *,
    total: int,
    every: float,
    seed: int,
    processes: int = 3,
    within: float = 240,
) -> Killings:
    """Run ``processes`` workers with ``args`` until ``total`` jobs succeeded (or ``within``
    seconds); every ``every`` seconds one of them, at random (``seed``), is killed with SIGKILL
    wherever it is and a new one starts. The last tenth of the jobs finishes undisturbed."""
    workers = [start_worker(url, *args) for _ in range(processes)]
    killed: set[int] = set()
    rng = random.Random(seed)
    started = time.monotonic()
    while time.monotonic() < started + within:
        done = ledger.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'succeeded'")
        if done == total:
            break
        time.sleep(every)
        if done < total * 0.9:
            victim = workers.pop(rng.randrange(len(workers)))
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            killed.add(victim.pid)
            workers.append(start_worker(url, *args))
    return Killings(workers, killed, time.monotonic() - started)


def assert_reruns_only_after_kills(ledger: Ledger, killed: set[int]) -> int:
    """Every run of a job but its last was a killed worker's; how many jobs ran more than
    once."""
    reruns = ledger.rows(
        "SELECT job_id, array_agg(pid ORDER BY id) FROM chaos_ledger "
        "GROUP BY job_id HAVING count(*) > 1"
    )
    innocent = [(job, pids) for job, pids in reruns if not set(pids[:-1]) <= killed]
    assert innocent == [], innocent[:10]
    return len(reruns)


def wait_until(condition: Callable[[], Any], within: float, step: float = 0.01) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)
