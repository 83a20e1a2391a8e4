"""One measured process: a worker, or a client that defers. Started by run.py.

Usage (internal): ``python bench/child.py '<json spec>'``. The spec names the system, the
role and its parameters. A worker prints ``READY`` once connected and waits for a line on
stdin before it starts, so that several workers start together and start-up is not timed.
The last line of stdout is ``RESULT <json>``.
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


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    system = systems.SYSTEMS[spec["system"]]
    stop_after: int | None = spec.get("stop_after")
    latency_samples: int | None = spec.get("latency_samples")
    seen = 0
    latencies: list[float] = []
    stop: Callable[[], None] | None = None
    started = {"cpu": 0.0, "wall": 0.0}

    def hook(t: float | None) -> None:
        nonlocal seen
        now = time.time()
        seen += 1
        if latency_samples is not None and t is not None:
            latencies.append(now - t)
            if len(latencies) >= latency_samples and stop is not None:
                stop()
        elif stop_after is not None and seen >= stop_after and stop is not None:
            stop()

    def on_ready(stop_callback: Callable[[], None]) -> None:
        nonlocal stop
        stop = stop_callback
        print("READY", flush=True)
        if spec.get("wait_go", True):
            sys.stdin.readline()
        started["cpu"] = _cpu_seconds()
        started["wall"] = time.perf_counter()

    async def main() -> None:
        if spec.get("latency_raw"):
            assert isinstance(system, systems.RawFloor)
            await system.run_latency_worker(spec["url"], hook, on_ready)
        else:
            await system.run_worker(
                spec["url"],
                spec.get("settings", {}),
                drain=spec.get("drain", True),
                hook=hook,
                on_ready=on_ready,
            )

    _uvloop(spec)
    asyncio.run(main())
    return {
        "cpu_s": _cpu_seconds() - started["cpu"],
        "wall_s": time.perf_counter() - started["wall"],
        "seen": seen,
        "latencies": latencies,
    }


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
    result["rss_kib"] = _peak_rss_kib()
    result["pid"] = os.getpid()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
