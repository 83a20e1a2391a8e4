"""bench/run.py as its README runs it, cut to the two systems that need no peer installed: our
worker and the raw-SQL floor (our own claim and finish statements from a bare loop). Not a
timing: the figures are not asserted, only that every run gave one. The floor reads the
claim's rows itself, so a change to the claim's columns that it does not follow fails here,
not in the next full run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqla_jobs.testing import TestServer

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``bench/<script>`` with ``args``, as its README runs it; and its output, for messages."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def test_the_benchmark_runs_our_worker_and_the_raw_floor_to_a_figure_each(
    sqla_jobs_server: TestServer, tmp_path: Path
) -> None:
    result, output = _run(
        "run.py",
        "--quick",
        "--systems=sqla_jobs,raw_sql",
        "--scenarios=throughput",
        "--no-sweep",
        "--no-chart",
        f"--database-url={sqla_jobs_server.admin_url}",
        f"--out={tmp_path}",
    )

    assert result.returncode == 0, output
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["errors"] == [], output
    for figure in ("steady_default", "steady_best", "steady_default_nostats", "cold_rate"):
        for system in ("sqla_jobs", "raw_sql"):
            assert data["figures"][figure][system]["median"] > 0, (figure, system, output)


def test_the_table_design_bench_measures_each_design_and_only_the_queue_tables_update_hot(
    sqla_jobs_server: TestServer,
) -> None:
    result, output = _run(
        "table_design.py", "--jobs=3000", "--batch=500", f"--server={sqla_jobs_server.admin_url}"
    )

    assert result.returncode == 0, output
    rows = {
        cells[0]: cells[1:]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| design")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"current", "current-bare", "queue-table", "queue-table-running"}, output
    for design, figures in rows.items():  # CPU per job: too few jobs here to compare them
        assert all(float(cpu) >= 0 for cpu in figures[:4]), (design, output)
    assert rows["current"][4] == "0%", output  # status is in the partial indexes' predicates
    assert int(rows["queue-table"][4].rstrip("%")) > 50, output
