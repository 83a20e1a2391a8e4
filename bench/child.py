"""One measured process: a worker, or a client that defers. Started by run.py.

Usage (internal): ``python bench/child.py '<json spec>'``. The spec names the system, the
role and its parameters. A worker prints ``READY`` once connected and waits for a line on
stdin before it starts, so that several workers start together. A worker with
``max_seconds`` is stopped (its own graceful stop) that long after it starts, drained or not:
no run waits for a slow system to drain. The last line of stdout is ``RESULT <json>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Benchmark the working tree's sqla_jobs (or --sqla-jobs-path), whatever is installed.
_spec_path = json.loads(sys.argv[1]).get("sqla_jobs_path") if len(sys.argv) > 1 else None
sys.path.insert(0, _spec_path or str(Path(__file__).resolve().parent.parent))

import systems  # noqa: E402


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_kib() -> int:
    """Peak resident set size of this process image (VmHWM). Not ru_maxrss: Linux carries
    that over from the parent at fork+exec, so a child would report the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _uvloop(spec: dict[str, Any]) -> None:
    if spec.get("uvloop"):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


#: Seconds a worker told to stop gets before this process reports and exits anyway: PgQueuer
#: takes ~4 s to shut down after its last job (its event loop idles on a timer), time that
#: no figure uses (its outcomes are stored by then: its log buffer flushes every 0.1 s).
EXIT_GRACE_S = 1.5


class _WorkerRun:
    """The state of one worker run: the hook its probe jobs call, the stop callback the
    worker hands over, the time bound and the exit watchdog."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.stop_after: int | None = spec.get("stop_after")
        self.latency_samples: int | None = spec.get("latency_samples")
        self.max_seconds: float | None = spec.get("max_seconds")
        self.seen = 0
        self.latencies: list[float] = []
        self.stop_callback: Callable[[], None] | None = None
        self.stop_reason = "drained"  # unless stopped by count, samples or the bound
        self.forced_exit = False
        self.cpu0 = self.wall0 = self.go = 0.0

    def hook(self, t: float | None) -> None:
        now = time.time()
        self.seen += 1
        if self.latency_samples is not None and t is not None:
            self.latencies.append(now - t)
            if len(self.latencies) >= self.latency_samples:
                self.stop("samples")
        elif self.stop_after is not None and self.seen >= self.stop_after:
            self.stop("count")

    def stop(self, reason: str) -> None:
        if self.stop_callback is None or self.stop_reason != "drained":
            return  # not started, or already stopping
        self.stop_reason = reason
        self.stop_callback()
        asyncio.get_running_loop().call_later(EXIT_GRACE_S, self.exit_now)

    def on_ready(self, stop_callback: Callable[[], None]) -> None:
        # Called by run_worker inside the event loop, just before the worker runs.
        self.stop_callback = stop_callback
        print("READY", flush=True)
        if self.spec.get("wait_go", True):
            sys.stdin.readline()
        self.cpu0 = _cpu_seconds()
        self.wall0 = time.perf_counter()
        self.go = time.time()
        if self.max_seconds is not None:
            asyncio.get_running_loop().call_later(self.max_seconds, self.stop, "bound")

    def result(self) -> dict[str, Any]:
        return {
            "cpu_s": _cpu_seconds() - self.cpu0,
            "wall_s": time.perf_counter() - self.wall0,
            "seen": self.seen,
            "latencies": self.latencies,
            "go": self.go,
            "stop_reason": self.stop_reason,
            "timed_out": self.stop_reason == "bound",
            "forced_exit": self.forced_exit,
        }

    def exit_now(self) -> None:
        self.forced_exit = True
        _report(self.result())
        os._exit(0)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    system = systems.SYSTEMS[spec["system"]]
    state = _WorkerRun(spec)

    async def main() -> None:
        if spec.get("latency_raw"):
            assert isinstance(system, systems.RawFloor)
            await system.run_latency_worker(spec["url"], state.hook, state.on_ready)
        else:
            await system.run_worker(
                spec["url"],
                spec.get("settings", {}),
                drain=spec.get("drain", True),
                hook=state.hook,
                on_ready=state.on_ready,
            )

    _uvloop(spec)
    asyncio.run(main())
    return state.result()


def _report(result: dict[str, Any]) -> None:
    result["rss_kib"] = _peak_rss_kib()
    result["pid"] = os.getpid()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    role = spec["role"]
    system = systems.SYSTEMS[spec["system"]]
    result: dict[str, Any]
    if role == "worker":
        result = run_worker(spec)
    elif role == "batch_defer":
        result = {
            "durations": asyncio.run(system.batch_defer(spec["url"], spec["n"], spec["calls"]))
        }
    elif role == "copy_defer":
        assert isinstance(system, systems.RawFloor)
        result = {
            "durations": asyncio.run(system.copy_defer(spec["url"], spec["n"], spec["calls"]))
        }
    elif role == "single_sync":
        result = {
            "durations": system.single_defer_sync(
                spec["url"], spec["n"], spec["warmup"], spec["rounds"]
            )
        }
    elif role == "single_async":
        result = {
            "durations": asyncio.run(
                system.single_defer_async(spec["url"], spec["n"], spec["warmup"], spec["rounds"])
            )
        }
    else:
        raise SystemExit(f"unknown role {role!r}")
    _report(result)


if __name__ == "__main__":
    main()
