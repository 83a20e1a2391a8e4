"""Side-by-side benchmark: sqla_jobs, Procrastinate, PgQueuer and a raw-SQL floor.

Run from the repository root after the README set-up and ``pip install -r
bench/requirements.txt``::

    .venv/bin/python bench/run.py            # full: medians of 3 rounds, ~30 minutes
    .venv/bin/python bench/run.py --quick    # smoke: 1 round, smaller backlogs, ~7 minutes

Every system runs one after another on the same PostgreSQL server, each in a fresh database
per scenario, its workers in their own processes. Worker throughput is measured in steady
state (bench/steady.py), each system at its default settings and at the best the run's own
sweep found. Prints one table and writes bench/results/latest.json and
bench/results/latest.png (see bench/README.md).
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness

sys.path.insert(0, harness.SQLA_JOBS_PATH)  # before anything imports sqla_jobs

import report
import systems
import throughput
from harness import Child, Databases, Results, Server, Sizes, run_once, say

SCENARIOS = ("throughput", "backlog", "batch_defer", "single_defer", "latency", "two_procs")


# ---------------------------------------------------------------------------------------------
# Scenarios other than worker throughput (bench/throughput.py)
# ---------------------------------------------------------------------------------------------


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
    try:
        child.wait_ready()
        child.go()
        time.sleep(1.0)  # let the worker register and LISTEN
        asyncio.run(_defer_probes(system, url, total, sizes.latency_gap))
        out = child.result(timeout=60)
    finally:
        child.close()
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


RUNNERS = {
    "backlog": throughput.scenario_backlog,
    "batch_defer": scenario_batch_defer,
    "single_defer": scenario_single_defer,
    "latency": scenario_latency,
    "two_procs": throughput.scenario_two_procs,
}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _git(path: str, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True)
    return out.stdout.strip()


def environment(server: Server) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("procrastinate", "pgqueuer", "psycopg", "psycopg2-binary", "sqlalchemy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    root = str(harness.ROOT)
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    measured = harness.SQLA_JOBS_PATH
    return {
        "commit": _git(root, "rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
        "sqla_jobs_path": measured,
        "sqla_jobs_commit": _git(measured, "rev-parse", "--short", "HEAD"),
        "python": platform.python_version(),
        "postgresql": server.setting("server_version"),
        # Off on the bench server: nothing analyses a table but the harness's own ANALYZE.
        "autovacuum": server.setting("autovacuum"),
        "shared_buffers": server.setting("shared_buffers"),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", harness.DEFAULT_URL),
        help="server to create the scratch databases on (default: $DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller, 1 round (~7 minutes)")
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
    parser.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the settings sweep: 'best' is the preset from the last full run",
    )
    parser.add_argument(
        "--out", default=str(harness.HERE / "results"), help="directory for latest.*"
    )
    parser.add_argument(
        "--results-md",
        help="also write the table as Markdown here (a full run writes bench/RESULTS.md)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--sqla-jobs-path",
        default=str(harness.ROOT),
        help="directory holding the sqla_jobs package to measure (default: this checkout)",
    )
    args = parser.parse_args(argv)
    for scenario in args.scenarios.split(","):
        if scenario.strip() and scenario.strip() not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    return args


def is_full_run(args: argparse.Namespace) -> bool:
    """Whether this run may replace bench/RESULTS.md: every system and scenario, with the sweep,
    of this checkout. A partial run (a subset, --no-sweep, another checkout: an A/B
    comparison) writes its tables only where --results-md says."""
    chosen = {name.strip() for name in args.systems.split(",") if name.strip()}
    scenarios = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    return (
        not args.quick
        and not args.no_sweep
        and chosen == set(systems.SYSTEMS)
        and scenarios == set(SCENARIOS)
        and Path(args.sqla_jobs_path).resolve() == harness.ROOT.resolve()
    )


def run_scenarios(args: argparse.Namespace, sizes: Sizes, server: Server) -> Results:
    chosen = [systems.SYSTEMS[name.strip()] for name in args.systems.split(",") if name.strip()]
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    res = Results()
    started = time.time()
    for scenario in SCENARIOS:
        if scenario not in scenarios:
            continue
        say(f"== {scenario} ({time.time() - started:.0f} s in)")
        try:
            if scenario == "throughput":
                throughput.scenario_throughput(server, chosen, sizes, res, sweep=not args.no_sweep)
            else:
                RUNNERS[scenario](server, chosen, sizes, res)
        except Exception as exc:  # a scenario's own bug must not lose the others' figures
            res.error(scenario, exc)
    res.notes["settings"] = {
        s.name: {
            "default": s.default_settings,
            "best": throughput.best_settings(s, res),
            "best_from": "sweep" if s.name in res.notes.get("best", {}) else "preset",
            "best_nostats": throughput.best_settings(s, res, "_nostats"),
            "conc10": s.conc10_settings,
        }
        for s in chosen
    }
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python bench/run.py" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    print(f"$ {command}", flush=True)
    sizes = Sizes(args.quick, args.rounds)
    server = Server(args.database_url)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.time()
    load_before, uptime_before = os.getloadavg(), _uptime()
    res = run_scenarios(args, sizes, server)
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "rounds": sizes.rounds,
        "elapsed_s": round(time.time() - started, 1),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "uptime_before": uptime_before,
        "uptime_after": _uptime(),
        "sizes": {k: v for k, v in vars(sizes).items() if not k.startswith("_")},
        "settings": res.notes.pop("settings"),
        **environment(server),
    }
    data = {"meta": meta, "figures": res.figures, "notes": res.notes, "errors": res.errors}
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    print(report.table(data))
    print(f"\n{report.footer(data)}")
    if not args.no_chart:
        report.chart(data, out / "latest.png")
    results_md = args.results_md or (
        str(harness.HERE / "RESULTS.md") if is_full_run(args) else None
    )
    if results_md:
        Path(results_md).write_text(report.markdown(data))
        # Its figures beside it, every round, so that the tables can be rendered again
        # (``bench/report.py bench/RESULTS.json --markdown``) and compared with later runs.
        Path(results_md).with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    say(f"wrote {out / 'latest.json'}" + ("" if args.no_chart else f", {out / 'latest.png'}"))
    return 1 if res.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
