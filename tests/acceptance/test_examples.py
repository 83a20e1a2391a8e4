"""The examples, end to end: each app handles real requests (Flask's test client, httpx against
the FastAPI app with its lifespan), a real worker process started the way the example's README
says runs the jobs, and the jobs' effects are read back from the database.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
FLASK_APP = REPO / "examples" / "flask_app"
FASTAPI_APP = REPO / "examples" / "fastapi_app"
TIMEOUT = 30.0  # seconds any one wait may take before the test fails


class WorkerProcess:
    """``python -m sqla_jobs --app ... worker`` run from an example's directory."""

    def __init__(self, directory: Path, app: str, database_url: str, log: Path) -> None:
        env = dict(os.environ)
        env.pop("SQLA_JOBS_APP", None)
        env["DATABASE_URL"] = database_url
        paths = [str(REPO), str(directory), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sqla_jobs", "--app", app, "worker", "--concurrency", "4"],
            cwd=directory,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {TIMEOUT} s after SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Path, str, str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(directory: Path, app: str, database_url: str) -> WorkerProcess:
        worker = WorkerProcess(directory, app, database_url, tmp_path / f"w{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def import_example(
    monkeypatch: pytest.MonkeyPatch, directory: Path, module: str, database_url: str
) -> ModuleType:
    """Import an example's module as the example's own process would: DATABASE_URL set, its
    directory on sys.path (both undone after the test, and its modules forgotten)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.syspath_prepend(str(directory))
    return importlib.import_module(module)


@pytest.fixture(autouse=True)
def _forget_example_packages() -> Iterator[None]:
    yield
    for name in list(sys.modules):
        if name.partition(".")[0] in ("shop", "newsletter"):
            del sys.modules[name]


def wait_for(
    read: Callable[[], Any], what: str, worker: WorkerProcess, timeout: float = TIMEOUT
) -> Any:
    """Poll ``read`` until it returns something true; fail with the worker's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value:
            return value
        if worker.process.poll() is not None:
            pytest.fail(
                f"worker exited ({worker.process.returncode}) before {what}:\n{worker.output()}"
            )
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; worker:\n{worker.output()}")


def one_value(database_url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def query_rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def job_statuses(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT task_name, status::text FROM sqla_jobs_jobs ORDER BY id"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


# -- examples/flask_app ------------------------------------------------------------------------


def test_flask_example_confirms_an_order_through_a_real_worker(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    start_worker: Callable[[Path, str, str], WorkerProcess],
) -> None:
    shop = import_example(monkeypatch, FLASK_APP, "shop", db_url)
    app = shop.create_app({"TESTING": True})
    db = shop.models.db
    with app.app_context():
        db.create_all()  # what `flask --app shop init-db` does
        # The connector the web process defers through is on Flask-SQLAlchemy's engine.
        assert app.extensions["sqla_jobs"].connector.engine is db.engine
    worker = start_worker(FLASK_APP, "shop.jobs:queue", db_url)
    client = app.test_client()

    created = client.post("/orders", json={"item": "book"})
    assert created.status_code == 201, created.text
    order_id = created.get_json()["id"]
    assert client.post("/orders", json={}).status_code == 400

    confirmed_at = wait_for(
        lambda: one_value(db_url, "SELECT confirmed_at FROM shop_orders WHERE id = %s", order_id),
        "the order's confirmation",
        worker,
    )
    assert client.get(f"/orders/{order_id}").get_json()["confirmed_at"] == confirmed_at.isoformat()

    reminded = client.post(f"/orders/{order_id}/remind")
    assert reminded.status_code == 202, reminded.text
    wait_for(
        lambda: one_value(db_url, "SELECT reminders FROM shop_orders WHERE id = %s", order_id),
        "the reminder",
        worker,
    )
    assert client.post("/orders/999/remind").status_code == 404

    # The checkout workflow: charge, then ship and email the receipt, then the summary that
    # reads both results; deferred with the order's change in the request's transaction.
    checkout = client.post(f"/orders/{order_id}/checkout")
    assert checkout.status_code == 202, checkout.text
    assert len(checkout.get_json()["job_ids"]) == 4
    assert client.post(f"/orders/{order_id}/checkout").status_code == 409
    assert client.post("/orders/999/checkout").status_code == 404
    summary = wait_for(
        lambda: one_value(db_url, "SELECT summary FROM shop_orders WHERE id = %s", order_id),
        "the checkout's summary",
        worker,
    )
    order = client.get(f"/orders/{order_id}").get_json()
    assert order["charge_id"] == f"ch_{order_id:06d}"
    assert order["tracking_number"] == f"TRK-{order_id:06d}"
    assert summary == (
        f"order {order_id}: shipped as {order['tracking_number']}, "
        f"receipt sent at {order['receipt_sent_at']}"
    )
    # The summary started after the shipping and the receipt had both succeeded.
    ends = dict(
        query_rows(
            db_url,
            "SELECT task_name, finished_at FROM sqla_jobs_jobs WHERE workflow_id = %s",
            checkout.get_json()["workflow_id"],
        )
    )
    started = one_value(
        db_url,
        "SELECT started_at FROM sqla_jobs_jobs WHERE task_name = 'summarize_order'",
    )
    assert started > max(ends["ship_order"], ends["email_receipt"]) > ends["charge_order"]

    # The dashboard, mounted at /jobs, shows the jobs through the same engine.
    page = client.get("/jobs/jobs?task=send_confirmation")
    assert page.status_code == 200 and "send_confirmation" in page.text, page.text
    assert client.get("/jobs").status_code == 308
    assert client.get("/jobs/", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 403

    assert worker.stop() == 0, worker.output()
    assert job_statuses(db_url) == [
        ("send_confirmation", "succeeded"),
        ("send_reminder", "succeeded"),
        ("charge_order", "succeeded"),
        ("ship_order", "succeeded"),
        ("email_receipt", "succeeded"),
        ("summarize_order", "succeeded"),
    ]
    with app.app_context():
        db.engine.dispose()


# -- examples/fastapi_app ----------------------------------------------------------------------


async def test_fastapi_example_welcomes_a_subscriber_through_a_real_worker(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    start_worker: Callable[[Path, str, str], WorkerProcess],
) -> None:
    main = import_example(monkeypatch, FASTAPI_APP, "newsletter.main", db_url)
    init_db = importlib.import_module("newsletter.init_db")
    await init_db.main()  # what `python -m newsletter.init_db` does
    worker = start_worker(FASTAPI_APP, "newsletter.jobs:queue", db_url)

    def welcomes(subscriber_id: int) -> int:
        query = "SELECT welcomes FROM newsletter_subscribers WHERE id = %s"
        return int(one_value(db_url, query, subscriber_id) or 0)

    transport = httpx.ASGITransport(app=main.api)
    async with (
        main.lifespan(main.api),
        httpx.AsyncClient(transport=transport, base_url="http://newsletter") as client,
    ):
        created = await client.post("/subscribers", json={"email": "ada@example.com"})
        assert created.status_code == 201, created.text
        subscriber_id = created.json()["id"]
        duplicate = await client.post("/subscribers", json={"email": "ada@example.com"})
        assert duplicate.status_code == 409, duplicate.text

        wait_for(lambda: welcomes(subscriber_id) == 1, "the welcome job", worker)
        fetched = (await client.get(f"/subscribers/{subscriber_id}")).json()
        assert fetched["welcomes"] == 1 and fetched["welcomed_at"] is not None

        again = await client.post(f"/subscribers/{subscriber_id}/welcome")
        assert again.status_code == 202, again.text
        wait_for(lambda: welcomes(subscriber_id) == 2, "the second welcome", worker)
        assert worker.stop() == 0, worker.output()

        # No worker now: the next welcome waits, and its queueing lock refuses a second one.
        assert (await client.post(f"/subscribers/{subscriber_id}/welcome")).status_code == 202
        refused = await client.post(f"/subscribers/{subscriber_id}/welcome")
        assert refused.status_code == 409, refused.text
        assert (await client.get("/subscribers/999")).status_code == 404

        # The dashboard, mounted at /jobs: the waiting welcome, and cancelling it.
        page = await client.get("/jobs/jobs?status=todo")
        assert page.status_code == 200 and "send_welcome" in page.text, page.text
        (waiting,) = re.findall(r'name="ids" value="(\d+)"', page.text)
        cancelled = await client.post(
            "/jobs/actions",
            data={"action": "cancel", "ids": waiting},
            headers={"Origin": "http://newsletter"},
        )
        assert cancelled.status_code == 200 and "1 job done" in cancelled.text
        await client.post(
            "/jobs/actions",
            data={"action": "retry", "ids": waiting},
            headers={"Origin": "http://newsletter"},
        )

    # The duplicate's rollback left no job behind: two welcomes ran, one waits.
    assert job_statuses(db_url) == [
        ("send_welcome", "succeeded"),
        ("send_welcome", "succeeded"),
        ("send_welcome", "todo"),
    ]
