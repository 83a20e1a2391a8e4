"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright for Python) on the Flask and FastAPI examples served over real HTTP, under a
prefix: filters, the job page, a retry and a bulk cancel that the database then shows, a
read-only dashboard refusing actions, the page refreshing itself.

Without Playwright or Chromium these tests skip, saying how to get them; in CI (``CI=true``)
they fail instead. ``SQLA_JOBS_SCREENSHOTS=1`` writes the screenshots of ``docs/images``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
FLASK_APP = REPO / "examples" / "flask_app"
FASTAPI_APP = REPO / "examples" / "fastapi_app"
SCREENSHOTS = REPO / "docs" / "images"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return (
            "Playwright is not installed: .venv/bin/pip install -e '.[dev]' "
            "(or pip install playwright)"
        )
    if not os.path.exists(CHROMIUM):
        return (
            "no Chromium: apt-get install chromium (Debian's package; never `playwright install`)"
        )
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    one = context.new_page()
    yield one
    context.close()


@pytest.fixture(autouse=True)
def _forget_example_packages(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    yield
    for name in list(sys.modules):
        if name.partition(".")[0] in ("shop", "newsletter"):
            del sys.modules[name]


def serve_wsgi(app: Any) -> tuple[str, Callable[[], None]]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)

    return f"http://127.0.0.1:{server.server_port}", stop


def serve_asgi(app: Any) -> tuple[str, Callable[[], None]]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def sql(db_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def add_jobs(db_url: str, task: str, queue: str, status: str, count: int) -> list[int]:
    rows = sql(
        db_url,
        "INSERT INTO sqla_jobs_jobs (task_name, queue, status, attempts, last_error, "
        "started_at, finished_at, created_at) "
        "SELECT %s, %s, %s::sqla_jobs_job_status, "
        "  CASE WHEN %s = 'failed' THEN 1 ELSE 0 END, "
        "  CASE WHEN %s = 'failed' THEN 'Traceback (most recent call last):\n"
        '  File "shop/jobs.py", line 7, in send\nConnectionError: SMTP server went away\' END, '
        "  CASE WHEN %s = 'failed' THEN now() - interval '1 minute' END, "
        "  CASE WHEN %s = 'failed' THEN now() "
        "       WHEN %s = 'succeeded' THEN now() - g * interval '37 seconds' END, "
        "  now() - interval '2 minutes' - g * interval '37 seconds' "
        "FROM generate_series(1, %s) AS g RETURNING id",
        task,
        queue,
        status,
        status,
        status,
        status,
        status,
        status,
        count,
    )
    return sorted(row[0] for row in rows)


def statuses(db_url: str, ids: list[int]) -> list[str]:
    rows = sql(
        db_url,
        "SELECT status::text FROM sqla_jobs_jobs WHERE id = ANY(%s) ORDER BY id",
        ids,
    )
    return [row[0] for row in rows]


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("SQLA_JOBS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


def shown_ids(page: Any) -> list[int]:
    return [
        int(v) for v in page.eval_on_selector_all('input[name="ids"]', "e => e.map(x => x.value)")
    ]


def test_flask_example_under_a_prefix_filters_shows_a_job_retries_it_and_cancels_in_bulk(
    page: Any, db_url: str
) -> None:
    sys.path.insert(0, str(FLASK_APP))
    try:
        import shop
        from werkzeug.exceptions import NotFound
        from werkzeug.middleware.dispatcher import DispatcherMiddleware
    finally:
        sys.path.remove(str(FLASK_APP))
    flask_app = shop.create_app()
    # Behind a proxy's prefix too: the shop at /shop, its dashboard at /shop/jobs.
    base, stop = serve_wsgi(DispatcherMiddleware(NotFound(), {"/shop": flask_app}))
    failed = add_jobs(db_url, "send_confirmation", "mail", "failed", 3)
    waiting = add_jobs(db_url, "send_reminder", "mail", "todo", 4)
    add_jobs(db_url, "send_confirmation", "mail", "succeeded", 90)
    try:
        page.goto(f"{base}/shop/jobs")  # no trailing slash: redirected into the mount point
        assert page.url == f"{base}/shop/jobs/"
        assert page.locator("table.counts").inner_text().count("mail") == 1
        screenshot(page, "overview")

        page.click("nav >> text=Jobs")
        page.check('input[name="status"][value="failed"]')
        page.click("button:has-text('Filter')")
        assert page.url.startswith(f"{base}/shop/jobs/jobs?status=failed")
        assert shown_ids(page) == sorted(failed, reverse=True)
        screenshot(page, "jobs")

        page.click(f"table.jobs a:text-is('{failed[0]}')")
        assert page.locator("h1").inner_text().startswith(f"Job {failed[0]}")
        assert "SMTP server went away" in page.locator("pre.error").inner_text()
        screenshot(page, "job")
        page.click("form.actions button[value='retry']")
        assert "1 job done" in page.locator("h1").inner_text()
        assert statuses(db_url, [failed[0]]) == ["todo"]

        page.goto(f"{base}/shop/jobs/jobs?task=send_reminder&status=todo")
        page.click("form.bulk button[value='cancel']")
        assert page.locator("h1").inner_text() == "Cancel 4 jobs?"
        screenshot(page, "confirm")
        page.click("button.danger")
        assert "4 jobs done" in page.locator("h1").inner_text()
        assert statuses(db_url, waiting) == ["cancelled"] * 4
    finally:
        stop()
        with flask_app.app_context():
            shop.models.db.engine.dispose()


def test_fastapi_example_cancels_the_selected_jobs(page: Any, db_url: str) -> None:
    sys.path.insert(0, str(FASTAPI_APP))
    try:
        import newsletter.main as main
    finally:
        sys.path.remove(str(FASTAPI_APP))
    base, stop = serve_asgi(main.api)
    waiting = add_jobs(db_url, "send_welcome", "emails", "todo", 3)
    try:
        page.goto(f"{base}/jobs/jobs?queue=emails")
        assert shown_ids(page) == sorted(waiting, reverse=True)
        page.check(f'input[name="ids"][value="{waiting[0]}"]')
        page.check(f'input[name="ids"][value="{waiting[2]}"]')
        page.click(".selected-actions button[value='cancel']")
        assert "2 jobs done" in page.locator("h1").inner_text()
        assert statuses(db_url, waiting) == ["cancelled", "todo", "cancelled"]
        page.goto(f"{base}/jobs/")
        assert page.locator("svg.chart").count() == 1
    finally:
        stop()


def test_a_read_only_dashboard_shows_no_action_and_refuses_one_and_refreshes_itself(
    page: Any, db_url: str
) -> None:
    import flask

    import sqla_jobs
    from sqla_jobs.dashboard import create_blueprint

    jobs_app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=db_url))
    host = flask.Flask("host")
    host.register_blueprint(
        create_blueprint(jobs_app, read_only=True, authorize=lambda r: True, refresh_seconds=0.3),
        url_prefix="/ops/queue",
    )
    base, stop = serve_wsgi(host)
    (job,) = add_jobs(db_url, "t", "q", "todo", 1)
    try:
        page.goto(f"{base}/ops/queue/jobs")
        assert shown_ids(page) == []  # no checkboxes, no buttons
        assert page.locator("button[name='action']").count() == 0
        assert page.locator("text=read-only").count() == 1
        status = page.evaluate(
            "fetch('actions', {method: 'POST', body: new URLSearchParams("
            f"{{action: 'cancel', ids: '{job}'}})}}).then(r => r.status)"
        )
        assert status == 403 and statuses(db_url, [job]) == ["todo"]
        (later,) = add_jobs(db_url, "t", "q", "todo", 1)
        page.locator(f"table.jobs a:text-is('{later}')").wait_for(timeout=10_000)  # no reload
    finally:
        stop()
        jobs_app.close()


def test_a_workflows_page_shows_its_jobs_and_cancels_what_has_not_started(
    page: Any, db_url: str
) -> None:
    """From a job of a workflow to the workflow's page, then its cancel button, confirmed."""
    import flask

    import sqla_jobs
    from sqla_jobs.dashboard import create_blueprint

    jobs_app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=db_url))
    step = jobs_app.configure_task
    run = jobs_app.defer_workflow(
        sqla_jobs.chain(
            step("shop.charge").step(order_id=3),
            sqla_jobs.group(step("shop.ship").step(order_id=3), step("shop.email").step()),
            step("shop.summary").step(),
        ),
        name="checkout of order 3",
    )
    host = flask.Flask("host")
    host.register_blueprint(create_blueprint(jobs_app, authorize=lambda r: True), url_prefix="/q")
    base, stop = serve_wsgi(host)
    try:
        page.goto(f"{base}/q/jobs/{run.job_ids[1]}")
        page.click(f"a[href$='workflows/{run.workflow_id}']")
        heading = page.locator("h1").inner_text()
        assert heading.startswith(f"Workflow {run.workflow_id}: checkout of order 3"), heading
        rows = page.locator("table.jobs tbody tr")
        assert rows.count() == 4
        assert "blocked" in rows.nth(3).inner_text()
        screenshot(page, "workflow")
        page.click("form.actions button[value='cancel']")
        assert page.locator("h1").inner_text() == "Cancel 4 jobs?"
        page.click("button.danger")
        assert "4 jobs done" in page.locator("h1").inner_text()
        assert statuses(db_url, list(run.job_ids)) == ["cancelled"] * 4
    finally:
        stop()
        jobs_app.close()
