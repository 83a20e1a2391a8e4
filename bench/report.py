"""The benchmark's outputs: the text table, the issue-17 targets, the sweep, the Markdown copy
and the PNG chart, all built from the JSON document that run.py writes (so an old
latest.json can be re-rendered: ``python bench/report.py bench/results/latest.json``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OURS = "sqla_jobs"
COLUMNS = ("sqla_jobs", "procrastinate", "pgqueuer", "raw_sql")
HEADERS = {
    "sqla_jobs": "sqla_jobs",
    "procrastinate": "procrastinate",
    "pgqueuer": "pgqueuer",
    "raw_sql": "raw SQL floor",
}
COLORS = {
    "sqla_jobs": "#1f77b4",
    "procrastinate": "#ff7f0e",
    "pgqueuer": "#2ca02c",
    "raw_sql": "#7f7f7f",
}

Figures = dict[str, dict[str, Any]]
Check = Callable[[Figures], bool | None]


def _m(figures: Figures, key: str, system: str) -> float | None:
    value = figures.get(key, {}).get(system, {}).get("median")
    return None if value is None else float(value)


def _ratio(figures: Figures, key: str, peer: str, ours_key: str | None = None) -> float | None:
    ours, theirs = _m(figures, ours_key or key, OURS), _m(figures, key, peer)
    if ours is None or not theirs:
        return None
    return ours / theirs


def _at_least(key: str, peer: str, factor: float) -> Check:
    def check(figures: Figures) -> bool | None:
        r = _ratio(figures, key, peer)
        return None if r is None else r >= factor

    return check


def _at_most_peer(key: str, peer: str) -> Check:
    def check(figures: Figures) -> bool | None:
        r = _ratio(figures, key, peer)
        return None if r is None else r <= 1.0

    return check


def _value(key: str, test: Callable[[float], bool]) -> Check:
    def check(figures: Figures) -> bool | None:
        v = _m(figures, key, OURS)
        return None if v is None else test(v)

    return check


def _all(*checks: Check) -> Check:
    def check(figures: Figures) -> bool | None:
        results = [c(figures) for c in checks]
        if any(r is False for r in results):
            return False
        if any(r is None for r in results):
            return None
        return True

    return check


def label(settings: dict[str, Any] | None) -> str:
    """Settings as ``key=value,...``; ``default`` for none."""
    if settings is None:
        return "-"
    return ",".join(f"{k}={v}" for k, v in settings.items()) or "default"


# ---------------------------------------------------------------------------------------------
# The main table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    better: str  # "high", "low" or "" (a ratio or text row: no peer ratios)
    target: str = ""
    check: Check | None = None


def _throughput_rows(sizes: dict[str, Any]) -> list[Row]:
    backlog = f"{sizes.get('backlog', 50_000):,}"
    cold = f"{sizes.get('cold_jobs', 10_000):,}"
    steady = f"1. steady state, {backlog} waiting,"
    nostats = "NO statistics"
    return [
        Row("steady_default", f"{steady} default settings, fresh statistics", "jobs/s", "high"),
        Row("steady_best", f"{steady} best settings, fresh statistics", "jobs/s", "high"),
        Row("best_settings", "   best settings (the run's own sweep)", "", ""),
        Row("steady_default_nostats", f"{steady} default settings, {nostats}", "jobs/s", "high"),
        Row("steady_best_nostats", f"{steady} best settings, {nostats}", "jobs/s", "high"),
        Row("best_settings_nostats", "   best settings, NO statistics (its own sweep)", "", ""),
        Row("cold_rate", f"1. cold start: {cold} jobs / (run() to last job)", "jobs/s", "high"),
        Row("cold_launch_s", f"1. cold start: {cold} jobs, process launch to last job", "s", "low"),
        Row("cpu_us_default", "   worker CPU per job, default (steady window)", "us", "low"),
        Row("pgcpu_us_default", "   PostgreSQL CPU per job, default (steady window)", "us", "low"),
        Row("cpu_us_best", "   worker CPU per job, best (steady window)", "us", "low"),
        Row("pgcpu_us_best", "   PostgreSQL CPU per job, best (steady window)", "us", "low"),
        Row("cpu_us_default_nostats", "   worker CPU per job, default, NO statistics", "us", "low"),
        Row(
            "pgcpu_us_default_nostats",
            "   PostgreSQL CPU per job, default, NO statistics",
            "us",
            "low",
        ),
        # Not ours to lower: how busy the rest of the machine was while we measured.
        Row("other_cores_default", "   CPU of other processes meanwhile, default", "cores", ""),
        Row("other_cores_best", "   CPU of other processes meanwhile, best", "cores", ""),
        Row(
            "other_cores_default_nostats",
            "   CPU of other processes meanwhile, default, NO stats",
            "cores",
            "",
        ),
        Row(
            "other_cores_best_nostats",
            "   CPU of other processes meanwhile, best, NO stats",
            "cores",
            "",
        ),
    ]


def _defer_rows(sizes: dict[str, Any]) -> list[Row]:
    batch = f"{sizes.get('batch', 10_000):,}"
    return [
        Row(
            "batch_defer",
            f"2. batch defer, {batch} jobs per call",
            "jobs/s",
            "high",
            ">=3x pgq",
            _at_least("batch_defer", "pgqueuer", 3),
        ),
        Row("copy_defer", f"2. (floor only) COPY {batch} rows", "rows/s", "high"),
        Row(
            "single_sync",
            "3. single defer, sync (SQLAlchemy engine)",
            "jobs/s",
            "high",
            ">=pgq, >=0.9x floor",
            _all(_at_least("single_sync", "pgqueuer", 1), _at_least("single_sync", "raw_sql", 0.9)),
        ),
        Row(
            "single_async",
            "3. single defer, async",
            "jobs/s",
            "high",
            ">=pgq, >=0.9x floor",
            _all(
                _at_least("single_async", "pgqueuer", 1), _at_least("single_async", "raw_sql", 0.9)
            ),
        ),
        Row(
            "latency_p50",
            "4. defer -> task start, idle worker, p50",
            "ms",
            "low",
            "<=2 ms",
            _value("latency_p50", lambda v: v <= 2.0),
        ),
        Row(
            "latency_p99",
            "4. defer -> task start, idle worker, p99",
            "ms",
            "low",
            "<=5 ms",
            _value("latency_p99", lambda v: v <= 5.0),
        ),
    ]


def _scale_rows(sizes: dict[str, Any]) -> list[Row]:
    backlogs = sizes.get("backlogs", [])
    out = [
        Row(
            f"backlog_{n}",
            f"5. steady state, default settings, {n:,} waiting",
            "jobs/s",
            "high",
        )
        for n in backlogs
    ]
    if backlogs:
        out.append(
            Row(
                "big_vs_main",
                f"5. {max(backlogs):,} waiting / {sizes.get('backlog', 50_000):,} waiting",
                "ratio",
                "",
                ">=0.80",
                _value("big_vs_main", lambda v: v >= 0.8),
            )
        )
    return [
        *out,
        Row("tput_one", "6. steady state, 1 worker process", "jobs/s", "high"),
        Row("tput_two", "6. steady state, 2 worker processes", "jobs/s", "high"),
        Row(
            "two_vs_one",
            "6. 2 processes / 1 process",
            "ratio",
            "",
            ">=1.00",
            _value("two_vs_one", lambda v: v >= 1.0),
        ),
        Row("rss_default", "7. worker peak RSS, default settings", "MiB", "low"),
        Row(
            "rss_conc10",
            "7. worker peak RSS, concurrency 10",
            "MiB",
            "low",
            "<= procr.",
            _at_most_peer("rss_conc10", "procrastinate"),
        ),
        Row("rss_best", "7. worker peak RSS, best settings", "MiB", "low"),
    ]


def rows(meta: dict[str, Any]) -> list[Row]:
    sizes = meta.get("sizes", {})
    return _throughput_rows(sizes) + _defer_rows(sizes) + _scale_rows(sizes)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ratio", "ms", "s", "cores"):
        return f"{value:.2f}"
    if unit == "MiB":
        return f"{value:.0f}"
    return f"{value:,.0f}"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _present(data: dict[str, Any], row: Row) -> bool:
    if row.key.startswith("best_settings"):
        return row.key.replace("best_settings", "steady_best") in data["figures"]
    return row.key in data["figures"]


def _row_cells(data: dict[str, Any], row: Row) -> list[str]:
    figures: Figures = data["figures"]
    cells = [row.label, row.unit]
    if row.key.startswith("best_settings"):
        settings = data.get("meta", {}).get("settings", {})
        which = row.key.replace("best_settings", "best")
        # Runs before the sweep without statistics used the fresh one's winner for both.
        cells += [
            label(settings.get(c, {}).get(which, settings.get(c, {}).get("best"))) for c in COLUMNS
        ]
        return [*cells, "-", "-", "-", "", ""]
    cells += [_fmt(_m(figures, row.key, c), row.unit) for c in COLUMNS]
    for peer in ("procrastinate", "pgqueuer", "raw_sql"):
        cells.append(_fmt_ratio(_ratio(figures, row.key, peer)) if row.better else "-")
    cells.append(row.target)
    verdict = row.check(figures) if row.check else None
    cells.append({True: "yes", False: "NO", None: ""}[verdict] if row.check else "")
    return cells


def _cells(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["figure", "unit"]
    header += [HEADERS[c] for c in COLUMNS]
    header += ["ours/procr.", "ours/pgq", "ours/floor", "target", "met"]
    body = [_row_cells(data, r) for r in rows(data.get("meta", {})) if _present(data, r)]
    return header, body


# ---------------------------------------------------------------------------------------------
# The issue-17 targets: cross-row ratios (our default against their best, ...)
# ---------------------------------------------------------------------------------------------

TARGETS: list[tuple[str, str, str, str, float]] = [
    # ours, peer, peer's figure, label, required factor
    ("steady_default", "pgqueuer", "steady_best", "sqla_jobs default / PgQueuer best", 3.0),
    ("steady_best", "pgqueuer", "steady_best", "sqla_jobs best / PgQueuer best", 5.0),
    ("steady_best", "procrastinate", "steady_best", "sqla_jobs best / Procrastinate best", 20.0),
    ("steady_default", "procrastinate", "steady_best", "sqla_jobs default / Procr. best", 0.0),
]


TARGETS_NOTE = (
    "A system's best: the better of the steady rounds of its sweep's winner and of its "
    "default settings."
)


def _steady(figures: Figures, key: str, system: str) -> float | None:
    """A steady-state figure of ``system``; for "best", the better of its sweep winner's and
    its default's steady rounds (the sweep chooses from short probes; in the steady rounds the
    default can come out ahead, and a user would then keep it). The same rule for everyone."""
    value = _m(figures, key, system)
    if key.startswith("steady_best"):
        default = _m(figures, key.replace("steady_best", "steady_default"), system)
        if value is None or (default is not None and default > value):
            return default
    return value


def _target_cells(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    figures: Figures = data["figures"]
    header = ["steady state, jobs/s", "statistics", "ours", "theirs", "ratio", "target", "met"]
    body = []
    for suffix, stats in (("", "fresh"), ("_nostats", "NONE")):
        for ours_key, peer, peer_key, text, factor in TARGETS:
            ours = _steady(figures, ours_key + suffix, OURS)
            theirs = _steady(figures, peer_key + suffix, peer)
            if ours is None or theirs is None:
                continue
            ratio = ours / theirs if theirs else None
            met = "" if not factor or ratio is None else ("yes" if ratio >= factor else "NO")
            body.append(
                [
                    text,
                    stats,
                    _fmt(ours, "jobs/s"),
                    _fmt(theirs, "jobs/s"),
                    _fmt_ratio(ratio),
                    f">={factor:g}x" if factor else "",
                    met,
                ]
            )
    return header, body


def _sweep_cells(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["system", "statistics", "settings", "probes (jobs/s)", "mean", "won"]
    body = []
    sweeps = [
        (stats, system, found)
        for suffix, stats in (("", "fresh"), ("_nostats", "NONE"))
        for system, found in data.get("notes", {}).get("sweep" + suffix, {}).items()
    ]
    for stats, system, found in sorted(sweeps, key=lambda sweep: COLUMNS.index(sweep[1])):
        for probe in found["probes"]:
            rates = probe["rates"]
            won = "<==" if probe["settings"] == found["winner"] else ""
            mean = sum(rates) / len(rates)
            body.append(
                [
                    HEADERS.get(system, system),
                    stats,
                    label(probe["settings"]),
                    " ".join(f"{r:,}" for r in rates),
                    f"{mean:,.0f}",
                    won,
                ]
            )
    return header, body


# ---------------------------------------------------------------------------------------------
# Text and Markdown
# ---------------------------------------------------------------------------------------------


def _text_table(header: list[str], body: list[list[str]], left: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def _md_table(header: list[str], body: list[list[str]], left: int) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|",
    ]
    return out + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]


def table(data: dict[str, Any]) -> str:
    header, body = _cells(data)
    parts = [_text_table(header, body, {0, 1, len(header) - 2})]
    t_header, t_body = _target_cells(data)
    if t_body:
        targets = _text_table(t_header, t_body, {0, 1, 5})
        parts.append(f"Targets (issue 17):\n{targets}\n{TARGETS_NOTE}")
    s_header, s_body = _sweep_cells(data)
    if s_body:
        parts.append("Sweep (short steady probes):\n" + _text_table(s_header, s_body, {0, 1, 2}))
    return "\n\n".join(parts)


def footer(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    sizes = meta.get("sizes", {})
    lines = [
        f"command: {meta.get('command')}",
        f"mode {meta.get('mode')}, {meta.get('rounds')} round(s), medians; "
        f"{meta.get('elapsed_s')} s; commit {meta.get('commit')} "
        f"(sqla_jobs from {meta.get('sqla_jobs_path')} at {meta.get('sqla_jobs_commit')}); "
        f"PostgreSQL {meta.get('postgresql')} (autovacuum {meta.get('autovacuum')}, "
        f"shared_buffers {meta.get('shared_buffers')}); Python {meta.get('python')}; "
        f"{meta.get('cpus')} CPUs",
        f"steady runs: bound {sizes.get('window_s')} s (sweep probes {sizes.get('probe_s')} s); "
        "rate between 20% and 80% of the run's finished jobs",
        f"load average before {_load(meta.get('load_before'))}, "
        f"after {_load(meta.get('load_after'))}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        "settings: "
        + "; ".join(
            f"{name} default {label(s['default'])}, best {label(s['best'])} ({s.get('best_from')})"
            + (
                f", best without statistics {label(s['best_nostats'])}"
                if "best_nostats" in s
                else ""
            )
            for name, s in meta.get("settings", {}).items()
        ),
    ]
    for error in data.get("errors", []):
        lines.append("ERROR " + error.splitlines()[0])
    return "\n".join(lines)


def _load(values: Any) -> str:
    if not values:
        return "?"
    return " ".join(f"{v:.2f}" for v in values)


def markdown(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    out = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py` (see bench/README.md for what each figure measures).",
        "",
        "```",
        f"$ {meta.get('command')}",
        "```",
        "",
        *_md_table(*_cells(data), left=2),
    ]
    t_header, t_body = _target_cells(data)
    if t_body:
        out += ["", "## Targets (issue 17)", "", *_md_table(t_header, t_body, left=2)]
        out += ["", TARGETS_NOTE]
    s_header, s_body = _sweep_cells(data)
    if s_body:
        out += ["", "## Sweep", "", *_md_table(s_header, s_body, left=3)]
    out += ["", "```", footer(data), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Chart
# ---------------------------------------------------------------------------------------------

Panel = tuple[str, list[tuple[str, str]], str, bool]  # title, [(figure, group)], unit, log


def panels(meta: dict[str, Any]) -> list[Panel]:
    backlogs = meta.get("sizes", {}).get("backlogs", [])
    return [
        (
            "1. Steady state, fresh statistics",
            [("steady_default", "default"), ("steady_best", "best")],
            "jobs/s",
            True,
        ),
        (
            "1. Steady state, NO statistics",
            [("steady_default_nostats", "default"), ("steady_best_nostats", "best")],
            "jobs/s",
            True,
        ),
        (
            "1. Cold start vs steady (default)",
            [("cold_rate", "cold start"), ("steady_default", "steady")],
            "jobs/s",
            True,
        ),
        (
            "5. Steady state vs jobs waiting",
            [(f"backlog_{n}", f"{n:,}") for n in backlogs],
            "jobs/s",
            True,
        ),
        (
            "CPU per job, default (steady window)",
            [("cpu_us_default", "worker"), ("pgcpu_us_default", "PostgreSQL")],
            "us",
            True,
        ),
        (
            "CPU per job, best (steady window)",
            [("cpu_us_best", "worker"), ("pgcpu_us_best", "PostgreSQL")],
            "us",
            True,
        ),
        (
            "2. Batch defer (10k/call)",
            [("batch_defer", "batch"), ("copy_defer", "COPY")],
            "jobs/s",
            True,
        ),
        (
            "3. Single defer",
            [("single_sync", "sync (SQLAlchemy)"), ("single_async", "async")],
            "jobs/s",
            False,
        ),
        (
            "4. Defer -> start latency",
            [("latency_p50", "p50"), ("latency_p99", "p99")],
            "ms",
            False,
        ),
        (
            "6. Worker processes (steady)",
            [("tput_one", "1 process"), ("tput_two", "2 processes")],
            "jobs/s",
            True,
        ),
        (
            "7. Worker peak RSS",
            [("rss_default", "default"), ("rss_conc10", "concurrency 10")],
            "MiB",
            False,
        ),
    ]


def _draw(ax: Any, figures: Figures, panel: Panel) -> None:
    title, groups, unit, log = panel
    present = [c for c in COLUMNS if any(_m(figures, k, c) is not None for k, _ in groups)]
    ax.set_title(title, fontsize=11)
    if not present:
        ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    width = 0.8 / len(present)
    for i, system in enumerate(present):
        xs, ys = [], []
        for g, (key, _) in enumerate(groups):
            value = _m(figures, key, system)
            if value is not None:
                xs.append(g + (i - (len(present) - 1) / 2) * width)
                ys.append(value)
        bars = ax.bar(xs, ys, width, label=HEADERS[system], color=COLORS[system])
        labels = [f"{y:,.0f}" if y >= 100 else f"{y:.1f}" for y in ys]
        ax.bar_label(bars, labels=labels, fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), [name for _, name in groups], fontsize=8)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: Figures = data["figures"]
    meta = data.get("meta", {})
    fig, axes = plt.subplots(3, 4, figsize=(20, 13))
    chosen = panels(meta)
    for ax, panel in zip(axes.flat, chosen, strict=False):
        _draw(ax, figures, panel)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.set_visible(False)
    handles: list[Any] = []
    names: list[str] = []
    for ax in axes.flat:
        h, n = ax.get_legend_handles_labels()
        if len(n) > len(names):
            handles, names = h, n
    fig.legend(handles, names, loc="upper center", ncol=4, fontsize=11)
    fig.suptitle(
        f"{meta.get('command', '')}   ({meta.get('mode')}, {meta.get('rounds')} round(s), "
        f"commit {meta.get('commit')}, load {_load(meta.get('load_before'))})",
        fontsize=9,
        y=0.02,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    loaded = json.loads(source.read_text())
    if "--markdown" in sys.argv[2:]:
        print(markdown(loaded), end="")
    else:
        print(table(loaded))
        print()
        print(footer(loaded))
        chart(loaded, source.with_suffix(".png"))
