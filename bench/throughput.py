"""Worker throughput scenarios, all measured in steady state (bench/steady.py):

* ``throughput``: sweep every system's settings (with fresh statistics, and again with none),
  then default and best settings with fresh statistics and with none, alternating systems
  round by round; CPU per job; peak RSS; and the old method, a cold-start drain, as a
  separate row.
* ``backlog``: default settings against the number of jobs waiting.
* ``two_procs``: one worker process against two on the same queue.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import harness
import steady
import systems
from harness import Databases, Results, Server, Sizes, say

Settings = dict[str, Any]


def _key(settings: Settings) -> str:
    return json.dumps(settings, sort_keys=True)


def _label(settings: Settings) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items()) or "default"


# ---------------------------------------------------------------------------------------------
# Sweep
# ---------------------------------------------------------------------------------------------


def _probe(
    system: systems.System, url: str, settings: Settings, sizes: Sizes, *, analyse: bool
) -> float:
    run = steady.fresh_run(
        system, url, settings, backlog=sizes.backlog, seconds=sizes.probe_s, analyse=analyse
    )
    say(f"  {system.name:14} probe {_label(settings):42} {run.rate:9.0f} jobs/s")
    return run.rate


def sweep_system(
    system: systems.System, url: str, sizes: Sizes, *, analyse: bool = True
) -> dict[str, Any]:
    """Probe every setting of the grid once (a short steady run), then what the leader
    calls for (the next step past the grid's edge), then probe the two leaders again: the
    winner has the best mean of its two probes, so one lucky probe cannot win alone."""
    probes: dict[str, list[float]] = {}
    by_key: dict[str, Settings] = {}

    def probe(settings: Settings) -> None:
        by_key[_key(settings)] = settings
        rate = _probe(system, url, settings, sizes, analyse=analyse)
        probes.setdefault(_key(settings), []).append(rate)

    def leaders(count: int) -> list[str]:
        return sorted(probes, key=lambda k: statistics.mean(probes[k]), reverse=True)[:count]

    for settings in system.sweep_grid:
        probe(settings)
    for settings in system.sweep_more(by_key[leaders(1)[0]]):
        if _key(settings) not in probes:
            probe(settings)
    for key in leaders(2):
        probe(by_key[key])
    winner = leaders(1)[0]
    return {
        "bound_s": sizes.probe_s,
        "backlog": sizes.backlog,
        "probes": [
            {"settings": by_key[k], "rates": [round(r) for r in v]} for k, v in probes.items()
        ],
        "winner": by_key[winner],
    }


def find_best(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results, suffix: str = ""
) -> None:
    """The sweep, with fresh statistics (``suffix`` "") or none ("_nostats"): each system's
    best settings go to ``res.notes["best" + suffix]``. A system's best settings differ
    between the two: PgQueuer's best with statistics can be its worst without."""
    analyse = suffix == ""
    with Databases(server, chosen, "sweep" + suffix, res) as dbs:
        for system, url in dbs.each(chosen):
            try:
                found = sweep_system(system, url, sizes, analyse=analyse)
            except Exception as exc:
                dbs.failed(system, exc)
                continue
            res.notes.setdefault("sweep" + suffix, {})[system.name] = found
            res.notes.setdefault("best" + suffix, {})[system.name] = found["winner"]
            say(f"  {system.name:14} best: {_label(found['winner'])}")


def best_settings(system: systems.System, res: Results, suffix: str = "") -> Settings:
    """The winner of the sweep with fresh statistics (``suffix`` "") or none ("_nostats");
    without that sweep, the preset from the last full run."""
    best: Settings = res.notes.get("best" + suffix, {}).get(system.name, system.best_settings)
    return best


# ---------------------------------------------------------------------------------------------
# Steady-state rows: default and best settings, with fresh statistics and with none
# ---------------------------------------------------------------------------------------------

STATS_MODES = (("", True), ("_nostats", False))  # figure suffix, ANALYZE after loading


def _variants(system: systems.System, res: Results, suffix: str) -> dict[str, Settings]:
    return {"default": system.default_settings, "best": best_settings(system, res, suffix)}


RunKey = tuple[str, str, str]  # (variant, statistics suffix, system)


def _record(res: Results, runs: dict[RunKey, list[steady.Run]]) -> None:
    for (variant, suffix, system), rs in runs.items():
        extra = {"settings": rs[0].settings, "runs": [r.summary() for r in rs]}
        res.add(f"steady_{variant}{suffix}", system, [r.rate for r in rs], **extra)
        res.add(f"cpu_us_{variant}{suffix}", system, [r.worker_us for r in rs])
        res.add(f"pgcpu_us_{variant}{suffix}", system, [r.pg_us for r in rs])
        res.add(f"other_cores_{variant}{suffix}", system, [r.other_cores for r in rs])
        if not suffix:
            res.add(f"rss_{variant}", system, [r.rss_mib for r in rs])


def _steady_round(
    dbs: dict[str, Databases],
    chosen: list[systems.System],
    sizes: Sizes,
    res: Results,
    runs: dict[RunKey, list[steady.Run]],
) -> None:
    """One round: every system, default then best settings, with statistics then without.
    Best settings equal to the default are run once and reported under both."""
    for suffix, analyse in STATS_MODES:
        for variant in ("default", "best"):
            for system, url in dbs[suffix].each(chosen):
                variants = _variants(system, res, suffix)
                if variant == "best" and variants["best"] == variants["default"]:
                    shared = runs[("default", suffix, system.name)][-1]
                    runs.setdefault(("best", suffix, system.name), []).append(shared)
                    continue
                try:
                    run = steady.fresh_run(
                        system,
                        url,
                        variants[variant],
                        backlog=sizes.backlog,
                        seconds=sizes.window_s,
                        analyse=analyse,
                    )
                except Exception as exc:
                    dbs[suffix].failed(system, exc)
                    continue
                runs.setdefault((variant, suffix, system.name), []).append(run)
                stats = "stats" if analyse else "NO stats"
                say(
                    f"  {system.name:14} {variant:7} {stats:8} {run.rate:9.0f} jobs/s "
                    f"({run.window.jobs} jobs in {run.window.seconds:.2f} s), CPU/job "
                    f"worker {run.worker_us:.0f} us, server {run.pg_us:.0f} us; "
                    f"others {run.other_cores:.2f} cores"
                )


def _cold_start(
    db: Databases, chosen: list[systems.System], sizes: Sizes, res: Results
) -> dict[str, list[steady.ColdDrain]]:
    """One round of the old method: a new worker (default settings) drains ``cold_jobs``."""
    drains: dict[str, list[steady.ColdDrain]] = {}
    for system, url in db.each(chosen):
        try:
            drain = steady.cold_drain(
                system,
                url,
                system.default_settings,
                jobs=sizes.cold_jobs,
                bound_s=sizes.cold_bound_s,
            )
        except Exception as exc:
            res.error(f"cold start {system.name}", exc)
            continue
        drains.setdefault(system.name, []).append(drain)
        say(
            f"  {system.name:14} cold start: {sizes.cold_jobs} jobs in {drain.run_s:.2f} s "
            f"from run(), {drain.launch_s:.2f} s from launch ({drain.rate:.0f} jobs/s)"
        )
    return drains


def _conc10(db: Databases, chosen: list[systems.System], sizes: Sizes, res: Results) -> None:
    """Peak RSS at concurrency 10 for everyone (one short run each)."""
    for system, url in db.each(chosen):
        try:
            run = steady.fresh_run(
                system,
                url,
                system.conc10_settings,
                backlog=sizes.backlog,
                seconds=sizes.probe_s,
                analyse=True,
            )
        except Exception as exc:
            res.error(f"concurrency 10 {system.name}", exc)
            continue
        res.add("rss_conc10", system.name, [run.rss_mib], settings=system.conc10_settings)


def scenario_throughput(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results, *, sweep: bool
) -> None:
    if sweep:
        say("-- sweep (short steady probes, fresh statistics)")
        find_best(server, chosen, sizes, res)
        say("-- sweep (short steady probes, NO statistics)")
        find_best(server, chosen, sizes, res, "_nostats")
    runs: dict[RunKey, list[steady.Run]] = {}
    colds: dict[str, list[steady.ColdDrain]] = {}
    with (
        Databases(server, chosen, "steady", res) as fresh,
        Databases(server, chosen, "nostats", res) as bare,
    ):
        dbs = {"": fresh, "_nostats": bare}
        for number in range(sizes.rounds):
            say(f"-- steady state, round {number + 1} of {sizes.rounds}")
            _steady_round(dbs, chosen, sizes, res, runs)
            say(f"-- cold start, round {number + 1} of {sizes.rounds}")
            for name, drains in _cold_start(fresh, chosen, sizes, res).items():
                colds.setdefault(name, []).extend(drains)
        say("-- peak RSS at concurrency 10")
        _conc10(fresh, chosen, sizes, res)
    _record(res, runs)
    for name, drains in colds.items():
        res.add("cold_rate", name, [d.rate for d in drains], jobs=sizes.cold_jobs)
        res.add("cold_launch_s", name, [d.launch_s for d in drains], jobs=sizes.cold_jobs)


# ---------------------------------------------------------------------------------------------
# Throughput against backlog size
# ---------------------------------------------------------------------------------------------


def _top_up(url: str, system: systems.System, size: int) -> None:
    """Bring the jobs waiting back to ``size`` (then ANALYZE and CHECKPOINT)."""
    harness.load_jobs(url, system, max(0, size - harness.waiting(url, system)))


def _backlog_run(system: systems.System, url: str, size: int, sizes: Sizes) -> steady.Run:
    """A small backlog is loaded afresh each round (it drains); a big one is loaded once and
    topped up between rounds (a round takes a small part of it)."""
    if size <= sizes.backlog:
        return steady.fresh_run(
            system,
            url,
            system.default_settings,
            backlog=size,
            seconds=sizes.backlog_window_s,
            analyse=True,
        )
    return steady.bounded_run(
        system,
        url,
        system.default_settings,
        seconds=sizes.backlog_window_s,
        prepare=lambda: _top_up(url, system, size),
    )


def _load_big(db: Databases, chosen: list[systems.System], size: int, res: Results) -> None:
    for system, url in db.each(chosen):
        try:
            harness.reset(url, system)
            seconds = harness.load_jobs(url, system, size)
        except Exception as exc:
            db.failed(system, exc)
            continue
        res.notes.setdefault("load_s", {}).setdefault(str(size), {})[system.name] = seconds
        say(f"  {system.name:14} loaded {size:,} jobs in {seconds:.1f} s")


def scenario_backlog(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """Steady-state throughput, default settings, fresh statistics, against the number of
    jobs waiting."""
    with Databases(server, chosen, "backlog", res) as db:
        for size in sizes.backlogs:
            say(f"-- {size:,} waiting")
            if size > sizes.backlog:
                _load_big(db, chosen, size, res)
            runs: dict[str, list[steady.Run]] = {}
            for _round in range(sizes.rounds):
                for system, url in db.each(chosen):
                    try:
                        run = _backlog_run(system, url, size, sizes)
                    except Exception as exc:
                        db.failed(system, exc)
                        continue
                    runs.setdefault(system.name, []).append(run)
                    say(f"  {system.name:14} {size:>9,} waiting {run.rate:9.0f} jobs/s")
            for name, rs in runs.items():
                summaries = [r.summary() for r in rs]
                res.add(f"backlog_{size}", name, [r.rate for r in rs], runs=summaries)
    biggest = f"backlog_{max(sizes.backlogs)}"
    for name in res.figures.get(biggest, {}):
        main = res.median("steady_default", name)
        if main:
            values = res.figures[biggest][name]["rounds"]
            res.add("big_vs_main", name, [v / main for v in values])


# ---------------------------------------------------------------------------------------------
# Two worker processes
# ---------------------------------------------------------------------------------------------


def scenario_two_procs(
    server: Server, chosen: list[systems.System], sizes: Sizes, res: Results
) -> None:
    """One worker process, then two started together, default settings, same backlog."""
    rates: dict[tuple[int, str], list[float]] = {}
    with Databases(server, chosen, "two_procs", res) as db:
        for _round in range(sizes.rounds):
            for system, url in db.each(chosen):
                try:
                    for procs in (1, 2):
                        run = steady.fresh_run(
                            system,
                            url,
                            system.default_settings,
                            backlog=sizes.backlog,
                            seconds=sizes.two_procs_s,
                            analyse=True,
                            procs=procs,
                        )
                        rates.setdefault((procs, system.name), []).append(run.rate)
                except Exception as exc:
                    db.failed(system, exc)
                    continue
                say(
                    f"  {system.name:14} 1 process {rates[(1, system.name)][-1]:9.0f}  "
                    f"2 processes {rates[(2, system.name)][-1]:9.0f} jobs/s"
                )
    for (procs, name), values in rates.items():
        if procs == 2:
            ones = rates[(1, name)][: len(values)]
            res.add("tput_one", name, ones)
            res.add("tput_two", name, values)
            res.add("two_vs_one", name, [t / o for t, o in zip(values, ones, strict=True)])
