"""Side-by-side benchmark: sqla_jobs, Procrastinate, PgQueuer and a raw-SQL floor.

Run from the repository root after the README set-up and ``pip install -r
bench/requirements.txt``::

    .venv/bin/python bench/run.py            # full: medians of 3 rounds, ~15-20 min
    .venv/bin/python bench/run.py --quick    # smoke: 1 round, small N, ~3 min

Every system runs one after another on the same PostgreSQL server, each in a fresh database
per scenario, its workers in their own processes. Prints one table and writes
bench/results/latest.json and bench/results/latest.png (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _sqla_jobs_path(argv: list[str]) -> str:
    """--sqla-jobs-path, read before anything imports sqla_jobs."""
    for i, arg in enumerate(argv):
        if arg.startswith("--sqla-jobs-path="):
            return arg.split("=", 1)[1]
        if arg == "--sqla-jobs-path" and i + 1 < len(argv):
            return argv[i + 1]
    return str(ROOT)


SQLA_JOBS_PATH = str(Path(_sqla_jobs_path(sys.argv[1:])).resolve())
sys.path.insert(0, SQLA_JOBS_PATH)

import report  # noqa: E402
import systems  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHILD_TIMEOUT = 900.0

SCENARIOS = ("throughput", "batch_defer", "single_defer", "latency", "two_procs", "waiting")


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


class Sizes:
    """How much work each scenario does; --quick shrinks everything."""

    def __init__(self, quick: bool, rounds: int | None) -> None:
        self.quick = quick
        self.rounds = rounds or (1 if quick else 3)
        self.waiting = 2_000 if quick else 10_000  # jobs waiting in the throughput runs
        self.batch = 10_000  # jobs per batch-defer call
        self.single = 300 if quick else 2_000  # single defers per round
        self.single_warmup = 50
        self.latency_samples = 40 if quick else 200  # per round
        self.latency_warmup = 10
        self.latency_gap = 0.02  # seconds between defers: the worker is idle each time
        self.big_waiting = 200_000 if quick else 1_000_000
        self.timed_seconds = 1.5 if quick else 4.0  # aim of scaled runs (two_procs, waiting)

    def scaled(self, rate: float | None, low: int, high: int) -> int:
        """Jobs for a run that should last about ``timed_seconds`` at ``rate`` jobs/s."""
        if not rate:
            return low
        return max(low, min(high, int(rate * self.timed_seconds)))


# ---------------------------------------------------------------------------------------------
# Database helpers
# ---------------------------------------------------------------------------------------------


def url_for(base_url: str, dbname: str) -> str:
    return urlsplit(base_url)._replace(path="/" + dbname).geturl()


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

    def version(self) -> str:
        with self.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"


def load_jobs(url: str, system: systems.System, n: int, task: str) -> float:
    """Insert ``n`` waiting jobs server-side (not timed as defer), then ANALYZE and
    CHECKPOINT so every system starts from settled tables."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(system.load_sql(task), {"n": n})  # type: ignore[call-overload]
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def reset(url: str, system: systems.System) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(system.reset_sql())  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# PostgreSQL CPU of one database's backends, read from /proc (server on this machine)
# ---------------------------------------------------------------------------------------------


class BackendCpu:
    """Samples the CPU time of the server processes serving ``dbname`` (their process title
    names the database) every 50 ms; ``total()`` is what they used while sampled."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, dbname: str) -> None:
        self.marker = f" {dbname} ".encode()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pids: set[int] = set()
        self._scanned = 0.0

    def __enter__(self) -> BackendCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if self.marker in f.read().replace(b"\0", b" "):
                        self._pids.add(int(entry))
            except OSError:
                continue

    def _sample(self) -> None:
        for pid in list(self._pids):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                self._pids.discard(pid)
                continue
            ticks = int(fields[11]) + int(fields[12])
            self.first.setdefault(pid, ticks)
            self.last[pid] = ticks

    def _run(self) -> None:
        # The first sight of a backend is its baseline: connection set-up before the run
        # is not counted (backends that appear mid-run count from their first sample).
        self._scan()
        self._sample()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            if now - self._scanned > 0.2:
                self._scan()
                self._scanned = now
            self._sample()
        self._sample()

    def total(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last) / self.TICK


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


class Child:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the child)
        spec = {"sqla_jobs_path": SQLA_JOBS_PATH, **spec}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "child.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.fail(f"did not get ready (said {line!r})")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            self.fail(f"timed out after {timeout:.0f} s")
        for line in reversed(out.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
        self.fail(f"exited {self.proc.returncode} without a result")
        raise AssertionError  # unreachable

    def fail(self, what: str) -> None:
        self.proc.kill()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-3000:]
        raise RuntimeError(f"{self.spec['system']} {self.spec['role']}: {what}\n{tail}")


def run_once(spec: dict[str, Any]) -> dict[str, Any]:
    return Child(spec).result()


def run_workers(
    system: systems.System,
    url: str,
    *,
    settings: dict[str, Any],
    procs: int = 1,
    drain: bool = True,
    stop_after: int | None = None,
    uvloop: bool = False,
) -> dict[str, Any]:
    """Start ``procs`` worker processes together, wait for them, and read from the database
    how many jobs they finished and how fast."""
    dbname = urlsplit(url).path.lstrip("/")
    spec = {
        "role": "worker",
        "system": system.name,
        "url": url,
        "settings": settings,
        "drain": drain,
        "stop_after": stop_after,
        "uvloop": uvloop,
    }
    children = [Child(spec) for _ in range(procs)]
    for child in children:
        child.wait_ready()
    since = time.time()
    with BackendCpu(dbname) as pg_cpu:
        for child in children:
            child.go()
        results = [child.result() for child in children]
    with psycopg.connect(url, autocommit=True) as conn:
        stats = system.stats(conn, since)
        row = conn.execute(system.waiting_sql()).fetchone()  # type: ignore[call-overload]
        left = int(row[0]) if row else -1
    seconds = stats.seconds
    if not seconds or seconds <= 0:
        raise RuntimeError(f"{system.name}: no finished job recorded ({stats})")
    return {
        "jobs": stats.done,
        "seconds": seconds,
        "rate": stats.done / seconds,
        "left": left,
        "rss_mib": max(r["rss_kib"] for r in results) / 1024,
        "worker_cpu_s": sum(r["cpu_s"] for r in results),
        "pg_cpu_s": pg_cpu.total(),
    }


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
        print("  ERROR " + text.splitlines()[0], file=sys.stderr)
        self.errors.append(text)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def settings_variants(system: systems.System) -> dict[str, dict[str, Any]]:
    return {
        "default": system.default_settings,
        "best": system.best_settings,
        "conc10": system.conc10_settings,
    }


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
        for system in chosen:
            if system.name in self.urls:
                yield system, self.urls[system.name]

    def failed(self, system: systems.System, exc: BaseException) -> None:
        self.res.error(f"{self.scenario} {system.name}", exc)
        self.urls.pop(system.name, None)


def scenario_throughput(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figures 1 and 7: one worker draining ``sizes.waiting`` jobs; peak RSS; CPU per job.
    Variants with equal settings are run once and reported under each name."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sources: dict[str, dict[str, str]] = {}
    for system in chosen:
        variants = settings_variants(system)
        source: dict[str, str] = {}  # variant -> the variant whose runs it shares
        for key, settings in variants.items():
            same = [k for k in source if variants[k] == settings]
            source[key] = source[same[0]] if same else key
        sources[system.name] = source
    with Databases(server, chosen, "throughput", res) as dbs:
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                variants = settings_variants(system)
                try:
                    for key in dict.fromkeys(sources[system.name].values()):
                        reset(url, system)
                        load_jobs(url, system, sizes.waiting, systems.NOOP)
                        run = run_workers(system, url, settings=variants[key])
                        if run["jobs"] != sizes.waiting or run["left"] != 0:
                            raise RuntimeError(
                                f"{key}: {run['jobs']} of {sizes.waiting} jobs recorded as "
                                f"done, {run['left']} left"
                            )
                        runs.setdefault((system.name, key), []).append(run)
                        say(
                            f"  {system.name:14} throughput {key:8} {run['rate']:9.0f} jobs/s "
                            f"rss {run['rss_mib']:.0f} MiB"
                        )
                except Exception as exc:
                    dbs.failed(system, exc)
    for system in chosen:
        for key, settings in settings_variants(system).items():
            rs = runs.get((system.name, sources[system.name][key]))
            if not rs:
                continue
            res.add(f"tput_{key}", system.name, [r["rate"] for r in rs], settings=settings)
            res.add(f"rss_{key}", system.name, [r["rss_mib"] for r in rs], settings=settings)
            res.add(
                f"cpu_us_{key}",
                system.name,
                [1e6 * r["worker_cpu_s"] / r["jobs"] for r in rs],
                settings=settings,
            )
            res.add(
                f"pgcpu_us_{key}",
                system.name,
                [1e6 * r["pg_cpu_s"] / r["jobs"] for r in rs],
                settings=settings,
            )


def scenario_batch_defer(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figure 2: batch defer of 10,000 jobs per call (raw floor: same statement; also COPY)."""
    rates: dict[str, list[float]] = {}
    with Databases(server, chosen, "batch", res) as dbs:
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                roles = [("batch_defer", system.name)]
                if isinstance(system, systems.RawFloor):
                    roles.append(("copy_defer", "copy"))
                try:
                    for role, into in roles:
                        out = run_once(
                            {
                                "role": role,
                                "system": system.name,
                                "url": url,
                                "n": sizes.batch,
                                "calls": 1,
                            }
                        )
                        rate = sizes.batch / out["durations"][0]
                        rates.setdefault(into, []).append(rate)
                        say(f"  {system.name:14} {role:11} {rate:9.0f} jobs/s")
                except Exception as exc:
                    dbs.failed(system, exc)
    for name, values in rates.items():
        if name == "copy":
            res.add("copy_defer", "raw_sql", values)
        else:
            res.add("batch_defer", name, values)


def scenario_single_defer(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figure 3: one job per transaction, sync (SQLAlchemy engine) and async."""
    rates: dict[tuple[str, str], list[float]] = {}
    with Databases(server, chosen, "single", res) as dbs:
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                try:
                    for role in ("single_sync", "single_async"):
                        out = run_once(
                            {
                                "role": role,
                                "system": system.name,
                                "url": url,
                                "n": sizes.single,
                                "warmup": sizes.single_warmup,
                                "rounds": 1,
                            }
                        )
                        rate = sizes.single / out["durations"][0]
                        rates.setdefault((role, system.name), []).append(rate)
                        say(f"  {system.name:14} {role:12} {rate:9.0f} jobs/s")
                except Exception as exc:
                    dbs.failed(system, exc)
    for (role, name), values in rates.items():
        res.add(role, name, values)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _defer_probes(system: systems.System, url: str, count: int, gap: float) -> None:
    defer, close = await system.latency_client(url)
    try:
        for _ in range(count):
            await defer(time.time())
            await asyncio.sleep(gap)
    finally:
        await close()


def _latency_round(system: systems.System, url: str, sizes: Sizes) -> list[float]:
    total = sizes.latency_warmup + sizes.latency_samples
    child = Child(
        {
            "role": "worker",
            "system": system.name,
            "url": url,
            "settings": system.default_settings,
            "drain": False,
            "latency_samples": total,
            "latency_raw": isinstance(system, systems.RawFloor),
        }
    )
    child.wait_ready()
    child.go()
    time.sleep(1.0)  # let the worker register and LISTEN
    asyncio.run(_defer_probes(system, url, total, sizes.latency_gap))
    out = child.result(timeout=60)
    samples = [1000 * s for s in out["latencies"][sizes.latency_warmup :]]
    if len(samples) < sizes.latency_samples:
        raise RuntimeError(f"only {len(samples)} latency samples")
    return samples


def scenario_latency(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figure 4: defer call to the task's first line, with an idle worker (default settings).
    Each round is a new worker process and ``sizes.latency_samples`` jobs."""
    p50: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    with Databases(server, chosen, "latency", res) as dbs:
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                try:
                    samples = _latency_round(system, url, sizes)
                except Exception as exc:
                    dbs.failed(system, exc)
                    continue
                p50.setdefault(system.name, []).append(_percentile(samples, 0.5))
                p99.setdefault(system.name, []).append(_percentile(samples, 0.99))
                say(
                    f"  {system.name:14} latency p50 {p50[system.name][-1]:6.2f} ms "
                    f"p99 {p99[system.name][-1]:6.2f} ms"
                )
    for name in p50:
        res.add("latency_p50", name, p50[name])
        res.add("latency_p99", name, p99[name])


def scenario_two_procs(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figure 6: two worker processes against one, default settings, same queue size."""
    ones: dict[str, list[float]] = {}
    twos: dict[str, list[float]] = {}
    jobs: dict[str, int] = {}
    for system in chosen:
        rate = res.median("tput_default", system.name)
        jobs[system.name] = sizes.scaled(rate, 2_000 if sizes.quick else 4_000, 50_000)
    with Databases(server, chosen, "two_procs", res) as dbs:
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                n = jobs[system.name]
                try:
                    for procs, into in ((1, ones), (2, twos)):
                        reset(url, system)
                        load_jobs(url, system, n, systems.NOOP)
                        run = run_workers(
                            system, url, settings=system.default_settings, procs=procs
                        )
                        if run["jobs"] != n or run["left"] != 0:
                            raise RuntimeError(
                                f"{run['jobs']} of {n} jobs done, {run['left']} left"
                            )
                        into.setdefault(system.name, []).append(run["rate"])
                except Exception as exc:
                    dbs.failed(system, exc)
                    continue
                say(
                    f"  {system.name:14} 1 proc {ones[system.name][-1]:9.0f}  "
                    f"2 procs {twos[system.name][-1]:9.0f} jobs/s"
                )
    for name in twos:
        one, two = ones[name][: len(twos[name])], twos[name]
        res.add("tput_one", name, one, jobs=jobs[name])
        res.add("tput_two", name, two, jobs=jobs[name])
        res.add("two_vs_one", name, [t / o for t, o in zip(two, one, strict=True)])


def scenario_waiting(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Figure 5: throughput (default settings) with 1,000,000 jobs waiting, against the
    10,000-job figure. Loaded once; each round runs K jobs and stops."""
    rates: dict[str, list[float]] = {}
    loads: dict[str, float] = {}
    ks: dict[str, int] = {}
    for system in chosen:
        ks[system.name] = sizes.scaled(res.median("tput_default", system.name), 2_000, 40_000)
    with Databases(server, chosen, "waiting", res) as dbs:
        for system, url in list(dbs.each(chosen)):
            try:
                loads[system.name] = load_jobs(url, system, sizes.big_waiting, systems.PROBE)
            except Exception as exc:
                dbs.failed(system, exc)
                continue
            say(f"  {system.name:14} loaded {sizes.big_waiting} jobs in {loads[system.name]:.1f} s")
        for _round in range(sizes.rounds):
            for system, url in list(dbs.each(chosen)):
                k = ks[system.name]
                try:
                    run = run_workers(
                        system, url, settings=system.default_settings, drain=False, stop_after=k
                    )
                    if run["jobs"] < k:
                        raise RuntimeError(f"only {run['jobs']} of {k} jobs recorded as done")
                except Exception as exc:
                    dbs.failed(system, exc)
                    continue
                rates.setdefault(system.name, []).append(run["rate"])
                say(f"  {system.name:14} {sizes.big_waiting} waiting {run['rate']:9.0f} jobs/s")
    for name, values in rates.items():
        res.add("tput_big", name, values, jobs_per_round=ks[name], load_s=loads.get(name))
        small = res.median("tput_default", name)
        if small:
            res.add("big_vs_small", name, [r / small for r in values])


RUNNERS = {
    "throughput": scenario_throughput,
    "batch_defer": scenario_batch_defer,
    "single_defer": scenario_single_defer,
    "latency": scenario_latency,
    "two_procs": scenario_two_procs,
    "waiting": scenario_waiting,
}


# ---------------------------------------------------------------------------------------------
# Sweep (finding the "best" settings)
# ---------------------------------------------------------------------------------------------

SWEEP: dict[str, list[dict[str, Any]]] = {
    "sqla_jobs": [
        {"concurrency": c, "fetch_batch": b} for c in (10, 30, 100, 300) for b in (30, 100, 300)
    ],
    "procrastinate": [{"concurrency": c} for c in (1, 5, 10, 20, 50, 100)],
    "pgqueuer": [{"batch_size": b} for b in (10, 25, 50, 100, 200)],
    "raw_sql": [{"batch": b} for b in (10, 50, 100, 300, 1000)],
}


def sweep(server: Server, chosen: list[systems.System], sizes: Sizes) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for system in chosen:
        with server.database(system.name, "sweep") as url:
            system.create_schema(url)
            for settings in SWEEP[system.name]:
                rates = []
                for _ in range(sizes.rounds):
                    reset(url, system)
                    load_jobs(url, system, sizes.waiting, systems.NOOP)
                    rates.append(run_workers(system, url, settings=settings)["rate"])
                rate = statistics.median(rates)
                found.setdefault(system.name, []).append({"settings": settings, "rate": rate})
                print(f"{system.name:14} {json.dumps(settings):45} {rate:9.0f} jobs/s", flush=True)
    return found


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def environment(server: Server) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("procrastinate", "pgqueuer", "psycopg", "psycopg2-binary", "sqlalchemy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "commit": commit + ("+dirty" if dirty else ""),
        "sqla_jobs_path": SQLA_JOBS_PATH,
        "python": platform.python_version(),
        "postgresql": server.version(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", DEFAULT_URL),
        help="server to create the scratch databases on (default: $DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small N, 1 round (~3 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (median is reported)")
    parser.add_argument(
        "--systems",
        default=",".join(systems.SYSTEMS),
        help="comma-separated subset of: " + ", ".join(systems.SYSTEMS),
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated subset of: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="directory for latest.*")
    parser.add_argument(
        "--results-md",
        help="also write the table as Markdown here (a full run writes bench/RESULTS.md)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--sweep", action="store_true", help="try a grid of worker settings")
    parser.add_argument(
        "--sqla-jobs-path",
        default=str(ROOT),
        help="directory holding the sqla_jobs package to measure (default: this checkout)",
    )
    args = parser.parse_args(argv)

    command = "python bench/run.py" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    print(f"$ {command}", flush=True)
    chosen = [systems.SYSTEMS[name.strip()] for name in args.systems.split(",") if name.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for scenario in scenarios:
        if scenario not in RUNNERS:
            parser.error(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    sizes = Sizes(args.quick, args.rounds)
    server = Server(args.database_url)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.sweep:
        found = sweep(server, chosen, sizes)
        (out / "sweep.json").write_text(json.dumps(found, indent=2) + "\n")
        return 0

    started = time.time()
    res = Results()
    load_before = os.getloadavg()
    for scenario in SCENARIOS:
        if scenario in scenarios:
            say(f"== {scenario}")
            RUNNERS[scenario](server, chosen, sizes, res)
    elapsed = time.time() - started
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "rounds": sizes.rounds,
        "elapsed_s": round(elapsed, 1),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "sizes": {k: v for k, v in vars(sizes).items() if not k.startswith("_")},
        "settings": {
            s.name: {
                "default": s.default_settings,
                "best": s.best_settings,
                "conc10": s.conc10_settings,
            }
            for s in chosen
        },
        **environment(server),
    }
    data = {"meta": meta, "figures": res.figures, "errors": res.errors}
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    table = report.table(data)
    print(table)
    print(f"\n{report.footer(data)}")
    if not args.no_chart:
        report.chart(data, out / "latest.png")
    results_md = args.results_md or (None if args.quick else str(HERE / "RESULTS.md"))
    if results_md:
        Path(results_md).write_text(report.markdown(data))
    say(f"wrote {out / 'latest.json'}" + ("" if args.no_chart else f", {out / 'latest.png'}"))
    return 1 if res.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
