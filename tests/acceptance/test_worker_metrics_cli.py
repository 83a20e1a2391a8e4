"""`sqla-jobs worker --metrics-port`: a real worker process serves its metrics over HTTP, and a
taken port is a one-line error before anything starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"


def env_for(database_url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("SQLA_JOBS_APP", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(APPS)) if p)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_worker_process_serves_its_metrics(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "sqla_jobs", "worker", "--app", "cli_demo_app:app",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        env=env_for(db_url), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        proof = tmp_path / "proof.txt"
        deferred = subprocess.run(
            [sys.executable, "-m", "sqla_jobs", "--app", "cli_demo_app:app", "defer",
             "write_file", json.dumps({"path": str(proof)})],
            env=env_for(db_url), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert deferred.returncode == 0, deferred.stderr
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except (urllib.error.URLError, ConnectionError):
                pass
            if 'outcome="succeeded",queue="default",task="write_file"} 1.0' in text:
                break
            time.sleep(0.1)
        assert 'outcome="succeeded",queue="default",task="write_file"} 1.0' in text, text
        assert proof.read_text() == "done"
        assert "Metrics at http://127.0.0.1:" in (tmp_path / "worker.log").read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, (tmp_path / "worker.log").read_text()
        log.close()


def test_a_taken_metrics_port_is_one_line_and_registers_nothing(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sqla_jobs", "worker", "--app", "cli_demo_app:app",
             "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
            env=env_for(db_url), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Choose another metrics port" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM sqla_jobs_workers").fetchone() == (0,)
