"""The benchmark's outputs: the text table, the Markdown copy and the PNG chart, all built
from the JSON document that run.py writes (so an old latest.json can be re-rendered)."""

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


def _m(figures: Figures, key: str, system: str) -> float | None:
    value = figures.get(key, {}).get(system, {}).get("median")
    return None if value is None else float(value)


def _ratio(figures: Figures, key: str, peer: str) -> float | None:
    ours, theirs = _m(figures, key, OURS), _m(figures, key, peer)
    if ours is None or not theirs:
        return None
    return ours / theirs


def _at_least(key: str, peer: str, factor: float) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        r = _ratio(figures, key, peer)
        return None if r is None else r >= factor

    return check


def _at_most_value(key: str, limit: float) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        v = _m(figures, key, OURS)
        return None if v is None else v <= limit

    return check


def _at_least_value(key: str, limit: float) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        v = _m(figures, key, OURS)
        return None if v is None else v >= limit

    return check


def _all(*checks: Callable[[Figures], bool | None]) -> Callable[[Figures], bool | None]:
    def check(figures: Figures) -> bool | None:
        results = [c(figures) for c in checks]
        if any(r is False for r in results):
            return False
        if any(r is None for r in results):
            return None
        return True

    return check


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    better: str  # "high", "low" or "" (a ratio row: no peer ratios)
    target: str = ""
    check: Callable[[Figures], bool | None] | None = None


def rows(meta: dict[str, Any]) -> list[Row]:
    sizes = meta.get("sizes", {})
    waiting = f"{sizes.get('waiting', 10_000):,}"
    big = f"{sizes.get('big_waiting', 1_000_000):,}"
    batch = f"{sizes.get('batch', 10_000):,}"
    return [
        Row(
            "tput_default",
            f"1. worker throughput, default settings ({waiting} waiting)",
            "jobs/s",
            "high",
            ">=20x procr., >=5x pgq",
            _all(
                _at_least("tput_default", "procrastinate", 20),
                _at_least("tput_default", "pgqueuer", 5),
            ),
        ),
        Row(
            "tput_best",
            "1. worker throughput, best settings of each",
            "jobs/s",
            "high",
            ">=20x procr., >=5x pgq",
            _all(
                _at_least("tput_best", "procrastinate", 20), _at_least("tput_best", "pgqueuer", 5)
            ),
        ),
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
            _at_most_value("latency_p50", 2.0),
        ),
        Row(
            "latency_p99",
            "4. defer -> task start, idle worker, p99",
            "ms",
            "low",
            "<=5 ms",
            _at_most_value("latency_p99", 5.0),
        ),
        Row("tput_big", f"5. worker throughput, {big} waiting", "jobs/s", "high"),
        Row(
            "big_vs_small",
            f"5. {big} waiting / {waiting} waiting",
            "ratio",
            "",
            ">=0.80",
            _at_least_value("big_vs_small", 0.8),
        ),
        Row("tput_one", "6. worker throughput, 1 process", "jobs/s", "high"),
        Row("tput_two", "6. worker throughput, 2 processes", "jobs/s", "high"),
        Row(
            "two_vs_one",
            "6. 2 processes / 1 process",
            "ratio",
            "",
            ">=1.00",
            _at_least_value("two_vs_one", 1.0),
        ),
        Row("rss_default", "7. worker peak RSS, default settings", "MiB", "low"),
        Row(
            "rss_conc10",
            "7. worker peak RSS, concurrency 10",
            "MiB",
            "low",
            "<= procr.",
            lambda f: (
                None
                if _ratio(f, "rss_conc10", "procrastinate") is None
                else _ratio(f, "rss_conc10", "procrastinate") <= 1.0
            ),  # type: ignore[operator]
        ),
        Row("rss_best", "7. worker peak RSS, best settings", "MiB", "low"),
        Row("cpu_us_default", "   worker process CPU per job, default", "us", "low"),
        Row("pgcpu_us_default", "   PostgreSQL backend CPU per job, default", "us", "low"),
        Row("cpu_us_best", "   worker process CPU per job, best", "us", "low"),
        Row("pgcpu_us_best", "   PostgreSQL backend CPU per job, best", "us", "low"),
    ]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MiB":
        return f"{value:.0f}"
    return f"{value:,.0f}"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _cells(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    figures: Figures = data["figures"]
    header = ["figure", "unit"]
    header += [HEADERS[c] for c in COLUMNS]
    header += ["ours/procr.", "ours/pgq", "ours/floor", "target", "met"]
    body = []
    for row in rows(data.get("meta", {})):
        if row.key not in figures:
            continue
        cells = [row.label, row.unit]
        cells += [_fmt(_m(figures, row.key, c), row.unit) for c in COLUMNS]
        for peer in ("procrastinate", "pgqueuer", "raw_sql"):
            cells.append(_fmt_ratio(_ratio(figures, row.key, peer)) if row.better else "-")
        cells.append(row.target or "")
        verdict = row.check(figures) if row.check else None
        cells.append({True: "yes", False: "NO", None: ""}[verdict] if row.check else "")
        body.append(cells)
    return header, body


def table(data: dict[str, Any]) -> str:
    header, body = _cells(data)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    left = {0, len(header) - 2}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out)


def footer(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    lines = [
        f"command: {meta.get('command')}",
        f"mode {meta.get('mode')}, {meta.get('rounds')} round(s), medians; "
        f"{meta.get('elapsed_s')} s; commit {meta.get('commit')}; "
        f"PostgreSQL {meta.get('postgresql')}; Python {meta.get('python')}; "
        f"{meta.get('cpus')} CPUs",
        f"load average before {_load(meta.get('load_before'))}, "
        f"after {_load(meta.get('load_after'))}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        "settings: "
        + "; ".join(
            f"{name} default {json.dumps(s['default'])} best {json.dumps(s['best'])}"
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
    header, body = _cells(data)
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
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    out += ["", "```", footer(data), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Chart
# ---------------------------------------------------------------------------------------------

PANELS: list[tuple[str, list[tuple[str, str]], str, bool]] = [
    # title, [(figure key, group label)], unit, log scale
    (
        "1. Worker throughput",
        [("tput_default", "default"), ("tput_best", "best")],
        "jobs/s",
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
    ("4. Defer -> start latency", [("latency_p50", "p50"), ("latency_p99", "p99")], "ms", False),
    ("5. Jobs waiting", [("tput_default", "small"), ("tput_big", "big")], "jobs/s", True),
    (
        "6. Worker processes",
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
    (
        "CPU per job (default settings)",
        [("cpu_us_default", "worker"), ("pgcpu_us_default", "PostgreSQL")],
        "us",
        False,
    ),
]


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: Figures = data["figures"]
    meta = data.get("meta", {})
    fig, axes = plt.subplots(2, 4, figsize=(20, 9.5))
    for ax, (title, groups, unit, log) in zip(axes.flat, PANELS, strict=True):
        present = [c for c in COLUMNS if any(_m(figures, k, c) is not None for k, _ in groups)]
        width = 0.8 / max(1, len(present))
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
        ax.set_xticks(range(len(groups)), [label for _, label in groups])
        ax.set_title(title, fontsize=11)
        if not present:
            ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="grey")
            ax.set_yticks([])
            continue
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.25)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=11)
    fig.suptitle(
        f"{meta.get('command', '')}   ({meta.get('mode')}, {meta.get('rounds')} round(s), "
        f"commit {meta.get('commit')}, load {_load(meta.get('load_before'))})",
        fontsize=9,
        y=0.02,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    # Re-render from a JSON file: python bench/report.py bench/results/latest.json
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    loaded = json.loads(source.read_text())
    print(table(loaded))
    print()
    print(footer(loaded))
    chart(loaded, source.with_suffix(".png"))
