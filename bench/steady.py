"""Steady-state worker throughput, and the CPU it costs, from a bounded worker run.

A run: waiting jobs are loaded, one or more worker processes start together (``GO``) and run
until the queue is drained or ``seconds`` have passed, whichever comes first (the child stops
its worker itself, gracefully). Then every job's recorded finish time is read back from the
system's own tables. The rate is taken over the *steady window*: from the moment 20% of the
jobs the run finished had finished to the moment 80% had, so that neither the start (imports
are done, but connecting, registering, the first claims, a library's ramp-up) nor the end (the
drain's tail, or the stop) counts. When the run drains its backlog, that is the rate between
20% and 80% drained.

CPU: a thread samples, every 50 ms, the CPU time (``/proc/<pid>/stat``) of the worker
processes and of the PostgreSQL backends serving the run's database (their process title names
it; the server must run on this machine, else the backend figure is 0), and the machine's
(``/proc/stat``). The CPU used between the window's two ends, interpolated between samples, is
divided by the jobs in the window. What the rest of the machine used meanwhile (this harness,
PostgreSQL's own background processes, anyone else's work) is kept with each run, in cores, as
is the CPU time the hypervisor stole: a window measured on a busy machine shows it.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import harness
import psycopg
import systems

#: The share of a run's jobs excluded at its start and, from the other end, at its end.
LOW, HIGH = 0.2, 0.8
#: Seconds a stopped worker gets to wind down (finish its jobs, close) before it is killed.
GRACE_S = 30.0


@dataclasses.dataclass(frozen=True)
class Window:
    """The steady stretch of a run: jobs finished in (start, end], epoch seconds."""

    start: float
    end: float
    jobs: int

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def steady_window(times: Sequence[float], low: float = LOW, high: float = HIGH) -> Window:
    """The window between the finish of the job at ``low`` and of the job at ``high`` of the
    sorted finish ``times``. Jobs sharing the start's timestamp are left out and those sharing
    the end's counted: a batch finished at one instant did its work before that instant."""
    n = len(times)
    if n < 10:
        raise RuntimeError(f"only {n} jobs finished: no steady window")
    start = times[max(0, math.ceil(low * n) - 1)]
    end = times[max(0, math.ceil(high * n) - 1)]
    if end <= start:
        raise RuntimeError(f"{n} jobs finished in too few distinct instants for a window")
    jobs = bisect.bisect_right(times, end) - bisect.bisect_right(times, start)
    return Window(start, end, jobs)


# ---------------------------------------------------------------------------------------------
# CPU of the worker processes and of the database's backends, read from /proc
# ---------------------------------------------------------------------------------------------


def _machine_ticks() -> tuple[int, int]:
    """(busy, stolen) ticks of all CPUs since boot: busy is user, nice, system, irq, softirq."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """CPU seconds used over a stretch of time."""

    worker: float  # the worker processes
    backends: float  # the PostgreSQL backends serving the run's database
    other: float  # everything else on the machine
    steal: float  # stolen by the hypervisor


class CpuSampler:
    """Samples, every 50 ms, the CPU seconds used so far by ``worker_pids``, by the backends
    serving ``dbname``, by the whole machine, and stolen from it. ``between(a, b)`` gives
    those four used from epoch time ``a`` to ``b``."""

    TICK = os.sysconf("SC_CLK_TCK")
    PERIOD_S = 0.05

    def __init__(self, dbname: str, worker_pids: Sequence[int]) -> None:
        self.marker = f" {dbname} ".encode()
        self.workers = set(worker_pids)
        self.backends: set[int] = set()
        self.checked: set[int] = set()  # every pid whose command line was read
        self.base: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.samples: list[tuple[float, ...]] = []  # (epoch s, worker, backends, busy, steal)
        self.machine0 = _machine_ticks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._scan()
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _scan(self) -> None:
        # At every sample, so that a backend born mid-run (a raw loop's connection, a pool
        # growing) is counted from its first 50 ms; only new pids' command lines are read.
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.checked:
                continue
            pid = int(entry)
            self.checked.add(pid)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.marker in f.read().replace(b"\0", b" "):
                        self.backends.add(pid)
            except OSError:
                continue

    def _sample(self, first: bool = False) -> None:
        for pid in self.workers | self.backends:
            ticks = _cpu_ticks(pid)
            if ticks is None:
                continue  # exited: its last sample stands
            # A process seen at the start counts from there; one born later counts whole.
            self.base.setdefault(pid, ticks if first else 0)
            self.last[pid] = ticks
        worker = sum(self.last[p] - self.base[p] for p in self.workers if p in self.last)
        backend = sum(self.last[p] - self.base[p] for p in self.backends if p in self.last)
        busy, steal = _machine_ticks()
        totals = (worker, backend, busy - self.machine0[0], steal - self.machine0[1])
        self.samples.append((time.time(), *(t / self.TICK for t in totals)))

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            self._scan()
            self._sample()
        self._sample()

    def _at(self, t: float) -> list[float]:
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return list(self.samples[0][1:])
        if i >= len(times):
            return list(self.samples[-1][1:])
        before, after = self.samples[i - 1], self.samples[i]
        f = (t - before[0]) / (after[0] - before[0]) if after[0] > before[0] else 1.0
        return [a + f * (b - a) for a, b in zip(before[1:], after[1:], strict=True)]

    def between(self, start: float, end: float) -> CpuUse:
        worker, backends, busy, steal = (
            b - a for a, b in zip(self._at(start), self._at(end), strict=True)
        )
        return CpuUse(worker, backends, busy - worker - backends, steal)


# ---------------------------------------------------------------------------------------------
# A bounded worker run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One bounded worker run and its steady window."""

    settings: dict[str, Any]
    procs: int
    seconds: float  # the bound
    go: float  # epoch s when the workers were told to start
    times: list[float]  # finish times (epoch s) of the jobs the run finished, sorted
    left: int  # jobs waiting (or running) after the run
    stopped_by: str  # "bound" (time), "count" (had started them all) or "drained"
    rss_mib: float
    window: Window
    cpu: CpuUse  # in the window

    @property
    def rate(self) -> float:
        return self.window.rate

    @property
    def worker_us(self) -> float:
        return 1e6 * self.cpu.worker / self.window.jobs

    @property
    def pg_us(self) -> float:
        return 1e6 * self.cpu.backends / self.window.jobs

    @property
    def other_cores(self) -> float:
        """Cores' worth of CPU the rest of the machine used during the window."""
        return self.cpu.other / self.window.seconds

    def summary(self) -> dict[str, Any]:
        """What the JSON keeps of a run (not the finish times)."""
        return {
            "settings": self.settings,
            "procs": self.procs,
            "bound_s": self.seconds,
            "finished": len(self.times),
            "left": self.left,
            "stopped_by": self.stopped_by,
            "first_finish_after_go_s": round(self.times[0] - self.go, 3),
            "last_finish_after_go_s": round(self.times[-1] - self.go, 3),
            "window_start_after_go_s": round(self.window.start - self.go, 3),
            "window_s": round(self.window.seconds, 3),
            "window_jobs": self.window.jobs,
            "rate": round(self.rate, 1),
            "worker_us_per_job": round(self.worker_us, 1),
            "pg_us_per_job": round(self.pg_us, 1),
            "other_cores": round(self.other_cores, 2),
            "steal_cores": round(self.cpu.steal / self.window.seconds, 2),
            "rss_mib": round(self.rss_mib, 1),
        }


def worker_spec(
    system: systems.System,
    url: str,
    settings: dict[str, Any],
    seconds: float,
    stop_after: int | None,
) -> dict[str, Any]:
    """A worker that stops after ``seconds``, or once it has started ``stop_after`` jobs
    (all that were loaded: PgQueuer's drain mode lingers up to its dequeue timeout, 30 s,
    after the last job when jobs were still running as it found the queue empty)."""
    return {
        "role": "worker",
        "system": system.name,
        "url": url,
        "settings": settings,
        "drain": True,
        "max_seconds": seconds,
        "stop_after": stop_after,
    }


def bounded_run(
    system: systems.System,
    url: str,
    settings: dict[str, Any],
    *,
    seconds: float,
    stop_after: int | None = None,
    procs: int = 1,
    prepare: Callable[[], object] | None = None,
) -> Run:
    """Start ``procs`` worker processes, call ``prepare`` (load the backlog) while they
    import and connect, start them together, and measure the steady window of what they
    finish within ``seconds`` (each stops on its own after ``stop_after`` jobs, if given)."""
    spec = worker_spec(system, url, settings, seconds, stop_after)
    children = [harness.Child(spec) for _ in range(procs)]
    try:
        if prepare is not None:
            prepare()
        for child in children:
            child.wait_ready()
        with CpuSampler(harness.dbname_of(url), [c.pid for c in children]) as cpu:
            go = time.time()
            for child in children:
                child.go()
            results = [child.result(timeout=seconds + GRACE_S) for child in children]
    finally:
        for child in children:
            child.close()
    with psycopg.connect(url, autocommit=True) as conn:
        times = system.finish_times(conn, go)
    left = harness.waiting(url, system)
    stopped_by = "bound" if any(r["timed_out"] for r in results) else results[0]["stop_reason"]
    if stopped_by == "drained" and left != 0:
        raise RuntimeError(f"workers exited on their own with {left} jobs left")
    window = steady_window(times)
    return Run(
        settings=settings,
        procs=procs,
        seconds=seconds,
        go=go,
        times=times,
        left=left,
        stopped_by=stopped_by,
        rss_mib=max(r["rss_kib"] for r in results) / 1024,
        window=window,
        cpu=cpu.between(window.start, window.end),
    )


def fresh_run(
    system: systems.System,
    url: str,
    settings: dict[str, Any],
    *,
    backlog: int,
    seconds: float,
    analyse: bool,
    procs: int = 1,
) -> Run:
    """A bounded run over a freshly loaded backlog (the table emptied first)."""
    harness.reset(url, system)

    def prepare() -> None:
        harness.load_jobs(url, system, backlog, analyse=analyse)
        if not analyse and harness.statistics_rows(url, system):
            raise RuntimeError(f"{system.jobs_table} has statistics in a no-statistics run")

    # With several processes, each stops once it has started all: the last one ends the run.
    return bounded_run(
        system, url, settings, seconds=seconds, stop_after=backlog, procs=procs, prepare=prepare
    )


@dataclasses.dataclass(frozen=True)
class ColdDrain:
    """Draining ``jobs`` with a new worker process: start-up counted."""

    jobs: int
    launch_s: float  # process launch (imports, connecting) to the last job's finish
    run_s: float  # GO (the worker's run() called) to the last job's finish

    @property
    def rate(self) -> float:
        return self.jobs / self.run_s


def cold_drain(
    system: systems.System, url: str, settings: dict[str, Any], *, jobs: int, bound_s: float
) -> ColdDrain:
    """The old method: time a new worker process to drain ``jobs`` jobs, all of them."""
    harness.reset(url, system)
    harness.load_jobs(url, system, jobs)
    launched = time.time()
    child = harness.Child(worker_spec(system, url, settings, bound_s, stop_after=jobs))
    try:
        child.wait_ready()
        go = time.time()
        child.go()
        child.result(timeout=bound_s + GRACE_S)
    finally:
        child.close()
    with psycopg.connect(url, autocommit=True) as conn:
        times = system.finish_times(conn, launched)
    left = harness.waiting(url, system)
    if len(times) != jobs or left:
        raise RuntimeError(
            f"cold drain: {len(times)} of {jobs} done, {left} left after {bound_s:.0f} s"
        )
    return ColdDrain(jobs, times[-1] - launched, times[-1] - go)
