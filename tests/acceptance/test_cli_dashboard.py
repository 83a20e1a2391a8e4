"""``sqla-jobs dashboard``: the dashboard served alone, as a real process on a free port."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from test_cli import cli_env

DEADLINE = 30.0


class Served:
    def __init__(self, db_url: str, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / "dashboard.log"
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqla_jobs", "dashboard", "--port", "0", *args],
            env=cli_env(db_url),
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            found = re.search(r"on (http://\S+/) ", self.log.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the dashboard did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=DEADLINE)
        self._out.close()
        return code


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[list[Served]]:
    running: list[Served] = []
    yield running
    for one in running:
        if one.process.poll() is None:
            one.stop()


def defer(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO sqla_jobs_jobs (task_name, queue) VALUES ('t', 'q') RETURNING id"
        ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(db_url: str, job_id: int) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT status FROM sqla_jobs_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_dashboard_serves_the_pages_and_acts_on_a_job(
    db_url: str, tmp_path: Path, served: list[Served]
) -> None:
    job_id = defer(db_url)
    server = Served(db_url, tmp_path)
    served.append(server)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in ("", "jobs", f"jobs/{job_id}", "workers", "periodic", "static/dashboard.js"):
            assert client.get(path).status_code == 200, path
        assert f'value="{job_id}"' in client.get("jobs").text
        origin = server.url.rstrip("/")
        refused = client.post("actions", data={"action": "cancel", "ids": str(job_id)})
        assert refused.status_code == 403 and status_of(db_url, job_id) == "todo"
        done = client.post(
            "actions", data={"action": "cancel", "ids": str(job_id)}, headers={"Origin": origin}
        )
        assert done.status_code == 200 and status_of(db_url, job_id) == "cancelled"
    server.stop()
    assert "dashboard is open" in server.log.read_text()


def test_dashboard_read_only_refuses_actions(
    db_url: str, tmp_path: Path, served: list[Served]
) -> None:
    job_id = defer(db_url)
    server = Served(db_url, tmp_path, "--read-only")
    served.append(server)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert 'name="action"' not in client.get("jobs").text
        origin = server.url.rstrip("/")
        refused = client.post(
            "actions", data={"action": "cancel", "ids": str(job_id)}, headers={"Origin": origin}
        )
    assert refused.status_code == 403 and status_of(db_url, job_id) == "todo"
