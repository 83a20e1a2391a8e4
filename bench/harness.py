"""What every scenario of run.py shares: sizes, the server and its scratch databases, loading
jobs, the measured child processes and the collected results.

Imports nothing of sqla_jobs itself: run.py puts ``--sqla-jobs-path`` on ``sys.path`` first,
and the children get it in their spec (``SQLA_JOBS_PATH``).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psycopg
import systems

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _sqla_jobs_path(argv: list[str]) -> str:
    """--sqla-jobs-path, read before anything imports sqla_jobs."""
    for i, arg in enumerate(argv):
        if arg.startswith("--sqla-jobs-path="):
            return arg.split("=", 1)[1]
        if arg == "--sqla-jobs-path" and i + 1 < len(argv):
            return argv[i + 1]
    return str(ROOT)


SQLA_JOBS_PATH = str(Path(_sqla_jobs_path(sys.argv[1:])).resolve())


def say(text: str) -> None:
    """Progress, on stderr (stdout carries the table)."""
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


class Sizes:
    """How much work each scenario does; --quick shrinks everything. Every worker run has a
    time bound: a slow system is stopped, never waited for until it drains."""

    def __init__(self, quick: bool, rounds: int | None) -> None:
        self.quick = quick
        self.rounds = rounds or (1 if quick else 3)
        # Steady-state rows: jobs waiting when the worker starts, and the bound of its run.
        # 100,000: a fast worker's window then lasts seconds, not a fraction of one.
        self.backlog = 30_000 if quick else 100_000
        self.window_s = 5.0 if quick else 8.0
        # A sweep probe: the same run with a shorter bound.
        self.probe_s = 2.5 if quick else 4.0
        # Cold start: drain this many from a new worker process, start-up counted.
        self.cold_jobs = 2_000 if quick else 10_000
        self.cold_bound_s = 150.0  # Procrastinate at ~100 jobs/s on a busy machine
        # Throughput against backlog size (default settings), with a shorter bound: 16 runs
        # a round, and the window still holds seconds of steady work.
        self.backlogs = (2_000, 20_000, 200_000) + (() if quick else (1_000_000,))
        self.backlog_window_s = 4.0 if quick else 5.0
        self.two_procs_s = 4.0 if quick else 5.0
        self.batch = 10_000  # jobs per batch-defer call
        self.single = 300 if quick else 2_000  # single defers per round
        self.single_warmup = 50
        self.latency_samples = 40 if quick else 200  # per round
        self.latency_warmup = 10
        self.latency_gap = 0.02  # seconds between defers: the worker is idle each time


# ---------------------------------------------------------------------------------------------
# Database helpers
# ---------------------------------------------------------------------------------------------


def url_for(base_url: str, dbname: str) -> str:
    return urlsplit(base_url)._replace(path="/" + dbname).geturl()


def dbname_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


class Server:
    """The server from --database-url: creates and drops scratch databases on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    @contextlib.contextmanager
    def database(self, system: str, scenario: str) -> Iterator[str]:
        name = f"bench_{system}_{scenario}_{uuid.uuid4().hex[:8]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        try:
            yield url_for(self.url, name)
        finally:
            self.drop(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def setting(self, name: str) -> str:
        with self.admin() as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            return str(row[0]) if row else "?"


def load_jobs(
    url: str, system: systems.System, n: int, *, analyse: bool = True, task: str = systems.PROBE
) -> float:
    """Insert ``n`` waiting jobs server-side (not timed as defer), then ANALYZE (unless
    ``analyse`` is false: the rows without statistics) and CHECKPOINT, so that every system
    starts from settled tables. Returns the seconds it took. The task is ``probe`` by
    default: a no-op that counts, so that a worker can stop once it has started them all."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        if n > 0:
            conn.execute(system.load_sql(task), {"n": n})
        if analyse:
            conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def reset(url: str, system: systems.System) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(system.reset_sql())


def waiting(url: str, system: systems.System) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(system.waiting_sql()).fetchone()
        return int(row[0]) if row else -1


def statistics_rows(url: str, system: systems.System) -> int:
    """Column statistics PostgreSQL holds for the system's jobs table (0: never analysed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_statistic WHERE starelid = %s::regclass",
            (system.jobs_table,),
        ).fetchone()
        return int(row[0]) if row else -1


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


class Child:
    """One bench/child.py process. A worker says READY once connected and starts on GO."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        spec = {"sqla_jobs_path": SQLA_JOBS_PATH, **spec}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "child.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        # A child that hangs before READY must not hang the run: the read is bounded.
        timer = _Killer(self.proc, timeout)
        line = self.proc.stdout.readline()
        timer.cancel()
        if line.strip() != "READY":
            self.fail(f"did not get ready (said {line!r})")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            self.fail(f"timed out after {timeout:.0f} s")
        for line in reversed(out.splitlines()):
            if line.startswith("RESULT "):
                self.close()
                return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
        self.fail(f"exited {self.proc.returncode} without a result")
        raise AssertionError  # unreachable

    def fail(self, what: str) -> None:
        self.proc.kill()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-3000:]
        self.close()
        raise RuntimeError(f"{self.spec['system']} {self.spec['role']}: {what}\n{tail}")

    def close(self) -> None:
        """Kill the process if it still runs (an error elsewhere) and release its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.communicate(timeout=10)
        self.stderr.close()


class _Killer:
    """Kills a process unless cancelled within ``timeout`` seconds."""

    def __init__(self, proc: subprocess.Popen[str], timeout: float) -> None:
        import threading

        self._timer = threading.Timer(timeout, proc.kill)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def run_once(spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    return Child(spec).result(timeout)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.notes: dict[str, Any] = {}

    def add(self, figure: str, system: str, values: list[float], **extra: Any) -> None:
        entry = {"median": statistics.median(values), "rounds": values, **extra}
        self.figures.setdefault(figure, {})[system] = entry

    def median(self, figure: str, system: str) -> float | None:
        value = self.figures.get(figure, {}).get(system, {}).get("median")
        return float(value) if value is not None else None

    def error(self, where: str, exc: BaseException) -> None:
        text = f"{where}: {type(exc).__name__}: {exc}"
        say("  ERROR " + text.splitlines()[0])
        self.errors.append(text)


class Databases:
    """One fresh database per system for a scenario, created (with the system's schema) up
    front and dropped at the end, so that rounds can alternate between systems: load on the
    machine drifts, and alternating spreads it over every system alike."""

    def __init__(
        self, server: Server, chosen: list[systems.System], scenario: str, res: Results
    ) -> None:
        self.stack = contextlib.ExitStack()
        self.urls: dict[str, str] = {}
        self.res = res
        self.scenario = scenario
        for system in chosen:
            try:
                url = self.stack.enter_context(server.database(system.name, scenario))
                system.create_schema(url)
                self.urls[system.name] = url
            except Exception as exc:
                res.error(f"{scenario} {system.name} (schema)", exc)

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def each(self, chosen: list[systems.System]) -> Iterator[tuple[systems.System, str]]:
        """The systems still in the running; one that fails once is left out after."""
        for system in list(chosen):
            if system.name in self.urls:
                yield system, self.urls[system.name]

    def failed(self, system: systems.System, exc: BaseException) -> None:
        self.res.error(f"{self.scenario} {system.name}", exc)
        self.urls.pop(system.name, None)
