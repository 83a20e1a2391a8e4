"""The web dashboard (sqla_jobs.dashboard) through its public entry points, on real PostgreSQL:
mounted as a Flask blueprint (Flask's test client) and as an ASGI app in FastAPI (httpx's
ASGITransport), under a prefix, with and without its trailing slash."""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import flask
import httpx
import psycopg
import pytest
from fastapi import FastAPI

import sqla_jobs
from sqla_jobs import App, PsycopgConnector, SyncPsycopgConnector, chain, chord, group
from sqla_jobs.dashboard import Request, create_asgi_app, create_blueprint, create_wsgi_app
from sqla_jobs.queries import Query

HOST = "dash.example"
SAME_ORIGIN = {"Origin": f"http://{HOST}"}


def make_app(connector: sqla_jobs.BaseConnector) -> App:
    app = App(connector=connector)

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None: ...

    @app.task(name="reports.build", queue="reports")
    def build(month: str) -> None:
        raise ValueError(f"no data for {month}")

    @app.periodic(cron="*/5 * * * *")
    @app.task(name="tidy")
    def tidy(timestamp: int) -> None: ...

    return app


class Client:
    """One way of reaching the dashboard: ``get``/``post`` return (status, text, headers)."""

    def __init__(self, kind: str, app: App, prefix: str, **options: Any) -> None:
        self.kind = kind
        self.app = app
        self.prefix = prefix
        if kind == "flask":
            host = flask.Flask("host")
            host.register_blueprint(create_blueprint(app, **options), url_prefix=prefix)
            self.flask = host.test_client()
        else:
            api = FastAPI()
            api.mount(prefix, create_asgi_app(app, **options))
            transport = httpx.ASGITransport(app=api)
            self.http = httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}")

    async def get(self, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        return await self.request("GET", path, None, headers)

    async def post(
        self, path: str, data: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        return await self.request("POST", path, data, SAME_ORIGIN if headers is None else headers)

    async def request(
        self, method: str, path: str, data: Any, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        url = self.prefix + path
        if self.kind == "flask":

            def call() -> Any:
                return self.flask.open(
                    url, method=method, data=data, headers=headers, base_url=f"http://{HOST}"
                )

            response = await asyncio.to_thread(call)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, response.get_data(as_text=True), headers
        reply = await self.http.request(method, url, data=data, headers=headers)
        return reply.status_code, reply.text, {k.lower(): v for k, v in reply.headers.items()}


@pytest.fixture(params=["flask", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app(db_url: str, kind: str) -> AsyncIterator[App]:
    # Flask drives the sync runner (a sync pool); ASGI the async one.
    connector: sqla_jobs.BaseConnector = (
        SyncPsycopgConnector(conninfo=db_url)
        if kind == "flask"
        else PsycopgConnector(conninfo=db_url)
    )
    app = make_app(connector)
    await app.open_async()
    yield app
    await app.close_async()


@pytest.fixture
def client(app: App, kind: str) -> Iterator[Client]:
    yield Client(kind, app, "/admin/jobs")


def ids_on(page: str) -> list[int]:
    """The job ids a jobs list shows, in order."""
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', page)]


async def defer_mix(app: App) -> dict[str, list[int]]:
    """3 mail jobs waiting, 2 failed report jobs (run by a worker), 1 scheduled mail job."""
    mail = app.tasks["mail.send"]
    reports = app.tasks["reports.build"]
    failed = [
        await reports.defer_async(month="2024-01"),
        await reports.defer_async(month="2024-02"),
    ]
    worker_app = app.with_connector(PsycopgConnector(conninfo=_conninfo(app)))
    async with worker_app.open_async():
        await asyncio.wait_for(
            worker_app.run_worker_async(
                wait=False, install_signal_handlers=False, queues=["reports"], periodic=False
            ),
            timeout=20,
        )
    waiting = [await mail.defer_async(to=f"user{n}@example.com") for n in range(3)]
    later = await mail.configure(schedule_in={"hours": 1}, lock="L1").defer_async(to="later")
    return {"failed": failed, "waiting": waiting, "scheduled": [later]}


def _conninfo(app: App) -> str:
    connector: Any = app.connector
    return str(connector._conninfo)


# -- pages --------------------------------------------------------------------------------------


async def test_overview_shows_counts_per_queue_and_status_the_oldest_wait_chart_and_workers(
    client: Client, app: App
) -> None:
    await defer_mix(app)
    status, page, headers = await client.get("/")
    assert status == 200, page
    assert "text/html" in headers["content-type"]
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    row = re.search(r"<tr>\s*<td><a [^>]*>mail</a></td>(.*?)</tr>", page, re.S)
    assert row, page
    cells = re.findall(r'<td class="num">(.*?)</td>', row.group(1), re.S)
    texts = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    # todo doing succeeded failed cancelled aborting aborted blocked | due now | oldest waiting
    assert texts[0] == "4" and texts[8] == "3", texts
    assert texts[9].endswith(" s"), texts
    reports = re.search(r"<td><a [^>]*>reports</a></td>(.*?)</tr>", page, re.S)
    assert reports and ">2</a>" in reports.group(1)
    assert "<svg" in page and 'class="bad"' in page
    assert "2 finished in the last hour" in page
    assert "Estimated" not in page  # a small table is counted exactly


async def test_overview_estimates_counts_of_a_big_table_and_says_so(
    client: Client, app: App, database: Any
) -> None:
    await app.tasks["mail.send"].defer_async(to="a")
    # A gap of ids (as pruning leaves) makes the table look bigger than exact counting allows.
    database.rows("SELECT setval(pg_get_serial_sequence('sqla_jobs_jobs', 'id'), 500000)")
    await app.tasks["mail.send"].defer_async(to="b")
    status, page, _ = await client.get("/")
    assert status == 200
    assert "Estimated" in page and "≈" in page


async def test_jobs_list_filters_by_status_queue_task_lock_queueing_lock_and_id(
    client: Client, app: App
) -> None:
    jobs = await defer_mix(app)
    locked = await app.tasks["mail.send"].configure(queueing_lock="Q1").defer_async(to="q")
    everyone = sorted([*jobs["failed"], *jobs["waiting"], *jobs["scheduled"], locked], reverse=True)

    async def shown(query: str) -> list[int]:
        status, page, _ = await client.get(f"/jobs{query}")
        assert status == 200, page
        return ids_on(page)

    assert await shown("") == everyone  # newest first
    assert await shown("?status=failed") == sorted(jobs["failed"], reverse=True)
    assert await shown("?status=failed&status=todo") == everyone
    assert await shown("?queue=reports") == sorted(jobs["failed"], reverse=True)
    assert await shown("?task=mail.send&status=todo") == sorted(
        [*jobs["waiting"], *jobs["scheduled"], locked], reverse=True
    )
    assert await shown("?lock=L1") == jobs["scheduled"]
    assert await shown("?queueing_lock=Q1") == [locked]
    assert await shown(f"?id={jobs['failed'][0]}") == [jobs["failed"][0]]
    assert await shown(f"?id={jobs['failed'][0]}&status=todo") == []
    assert await shown("?queue=nowhere") == []
    status, page, _ = await client.get("/jobs?status=lost")
    assert status == 400 and "not a job status" in page
    status, page, _ = await client.get("/jobs?id=abc")
    assert status == 400


async def test_jobs_list_filters_by_tag_links_tags_and_acts_on_a_tag(
    client: Client, app: App, database: Any
) -> None:
    send = app.tasks["mail.send"]
    tenant_7 = [
        await send.configure(tags=["tenant:7", "vip"], meta={"by": "ann"}).defer_async(to="a"),
        await send.configure(tags=["tenant:7"]).defer_async(to="b"),
    ]
    tenant_8 = await send.configure(tags=["tenant:8"]).defer_async(to="c")
    untagged = await send.defer_async(to="d")

    status, page, _ = await client.get("/jobs?tag=tenant:7")
    assert status == 200, page
    assert ids_on(page) == sorted(tenant_7, reverse=True)
    assert 'name="tag" value="tenant:7"' in page
    assert ids_on((await client.get("/jobs?tag=vip&status=todo"))[1]) == [tenant_7[0]]
    assert ids_on((await client.get("/jobs?tag=nobody"))[1]) == []
    status, page, _ = await client.get("/jobs")
    assert ids_on(page) == [untagged, tenant_8, *sorted(tenant_7, reverse=True)]
    assert "jobs?tag=tenant%3A8" in page  # each tag links to its filter

    status, page, _ = await client.get(f"/jobs/{tenant_7[0]}")
    assert status == 200
    assert re.search(r"<dt>tags</dt><dd><a [^>]*>tenant:7</a> <a [^>]*>vip</a>", page), page
    assert "<h2>Metadata</h2>" in page and "ann" in page
    status, page, _ = await client.get(f"/jobs/{untagged}")
    assert "<dt>tags</dt><dd>—</dd>" in page and "<h2>Metadata</h2>" not in page

    form = {"action": "cancel", "scope": "matching", "tag": "tenant:7", "back": "jobs"}
    status, page, _ = await client.post("/actions", form)
    assert status == 200 and "Cancel 2 jobs?" in page, page
    status, page, _ = await client.post("/actions", {**form, "confirmed": "yes"})
    assert "2 jobs done" in page
    assert [database.job(i)["status"] for i in tenant_7] == ["cancelled", "cancelled"]
    assert database.job(tenant_8)["status"] == "todo"
    assert database.job(untagged)["status"] == "todo"


async def test_jobs_list_pages_by_keyset_newest_first(client: Client, app: App) -> None:
    ids = await app.tasks["mail.send"].batch_defer_async(*({"to": str(n)} for n in range(120)))
    newest_first = sorted(ids, reverse=True)
    seen: list[int] = []
    path = "/jobs?queue=mail"
    for _ in range(5):
        status, page, _ = await client.get(path)
        assert status == 200
        seen += ids_on(page)
        link = re.search(r'rel="next" href="([^"]+)"', page)
        if not link:
            break
        path = "/" + html.unescape(link.group(1)).removeprefix("./")
    assert seen == newest_first  # 50 + 50 + 20, none twice, none missed


async def test_a_page_of_a_rare_filter_stops_at_its_scan_bound_and_looks_further(
    client: Client, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqla_jobs.dashboard import operations

    monkeypatch.setattr(operations, "PAGE_SCAN", 30)
    rare = await app.tasks["reports.build"].defer_async(month="x")
    await app.tasks["mail.send"].batch_defer_async(*({"to": str(n)} for n in range(70)))
    status, page, _ = await client.get("/jobs?queue=reports")
    assert status == 200 and ids_on(page) == [] and "Look further" in page
    for _ in range(5):
        link = re.search(r'rel="next" href="([^"]+)"', page)
        assert link, page
        status, page, _ = await client.get("/" + html.unescape(link.group(1)).removeprefix("./"))
        if ids_on(page):
            break
    assert ids_on(page) == [rare]


async def test_job_page_shows_arguments_history_attempts_worker_and_full_error(
    client: Client, app: App
) -> None:
    jobs = await defer_mix(app)
    status, page, _ = await client.get(f"/jobs/{jobs['failed'][0]}")
    assert status == 200, page
    assert "&#34;month&#34;: &#34;2024-01&#34;" in page or "&quot;month&quot;" in page
    assert "ValueError: no data for 2024-01" in page
    assert "Traceback" in page  # the whole error, not its last line only
    history = re.findall(r'<span class="status status-(\w+)">', page.split("<h2>History")[1])
    assert history[:3] == ["todo", "doing", "failed"]
    assert re.search(r"<dt>attempts</dt><dd>1</dd>", page)
    assert re.search(r"<dt>worker</dt><dd>\d+ \(no longer registered\)</dd>", page)
    assert 'value="retry"' in page and 'value="cancel"' not in page
    status, page, _ = await client.get("/jobs/999999")
    assert status == 404 and "No job with id 999999" in page


async def test_job_page_history_shows_snoozes_timeouts_and_cancels_by_the_task(
    client: Client, db_url: str
) -> None:
    worker_app = App(connector=PsycopgConnector(conninfo=db_url))

    @worker_app.task(name="tests.controls", timeout=0.2)
    async def controls(what: str) -> None:
        if what == "snooze":
            raise sqla_jobs.Snooze(seconds=3600, reason="later")
        if what == "cancel":
            raise sqla_jobs.CancelJob("not needed")
        await asyncio.sleep(10)

    async with worker_app.open_async():
        ids = {what: await controls.defer_async(what=what) for what in ("snooze", "cancel", "late")}
        await asyncio.wait_for(
            worker_app.run_worker_async(wait=False, install_signal_handlers=False), timeout=20
        )
    for what, status_shown, summary in [
        ("snooze", "todo", "Snoozed by the task for 3600 s: later"),
        ("cancel", "cancelled", "Cancelled by the task: not needed"),
        ("late", "failed", "sqla_jobs.errors.JobTimeout: Job "),
    ]:
        status, page, _ = await client.get(f"/jobs/{ids[what]}")
        assert status == 200, page
        history = page.split("<h2>History")[1].split("<h2>Last error")[0]
        shown = re.findall(r'<span class="status status-(\w+)">', history)
        assert shown[-1] == status_shown, (what, shown)
        assert f"<summary>{html.escape(summary, quote=True)}" in history, (what, history)


async def test_every_value_is_escaped(client: Client, app: App) -> None:
    evil = "<script>alert(1)</script>"
    job_id = await app.configure_task("mail.send", queue=evil, lock=evil).defer_async(to=evil)
    for path in ("/", "/jobs", f"/jobs/{job_id}", f"/jobs?queue={evil}"):
        status, page, _ = await client.get(path)
        assert status == 200
        assert evil not in page and "&lt;script&gt;" in page


async def test_workers_page_lists_workers_with_their_running_jobs(
    client: Client, app: App, database: Any
) -> None:
    worker_id = database.scalar(
        "INSERT INTO sqla_jobs_workers (name, hostname, pid, concurrency) "
        "VALUES ('w-1', 'box', 4242, 10) RETURNING id"
    )
    job_id = await app.tasks["mail.send"].defer_async(to="x")
    database.rows(
        "UPDATE sqla_jobs_jobs SET status = 'doing', worker_id = %s, started_at = now() "
        "WHERE id = %s RETURNING id",
        (worker_id, job_id),
    )
    status, page, _ = await client.get("/workers")
    assert status == 200
    row = re.search(r"<td>w-1</td>.*?</tr>", page, re.S)
    assert row and "box" in row.group(0) and "4242" in row.group(0)
    assert re.search(r'<td class="num">1</td>\s*</tr>', row.group(0))
    status, page, _ = await client.get("/")
    assert "1 live worker" in page and "w-1 on box" in page


async def test_periodic_page_shows_schedule_last_and_next_tick(
    client: Client, app: App, database: Any
) -> None:
    database.rows(
        "INSERT INTO sqla_jobs_periodic_defers (task_name, defer_timestamp) VALUES ('tidy', 60) "
        "RETURNING id"
    )
    status, page, _ = await client.get("/periodic")
    assert status == 200
    assert "<code>*/5 * * * *</code>" in page
    assert "1970-01-01 00:01:00 UTC" in page
    assert re.search(r"20\d\d-\d\d-\d\d \d\d:\d[05]:00 UTC", page)  # the next tick


# -- actions ------------------------------------------------------------------------------------


async def test_actions_on_one_job(client: Client, app: App, database: Any) -> None:
    jobs = await defer_mix(app)
    failed, waiting = jobs["failed"][0], jobs["waiting"][0]
    status, page, _ = await client.post(
        "/actions", {"action": "retry", "ids": str(failed), "back": f"jobs/{failed}"}
    )
    assert status == 200 and "1 job done" in page, page
    assert database.job(failed)["status"] == "todo"
    await client.post("/actions", {"action": "cancel", "ids": str(waiting)})
    assert database.job(waiting)["status"] == "cancelled"
    await client.post("/actions", {"action": "abort", "ids": str(failed)})
    assert database.job(failed)["status"] == "cancelled"
    status, page, _ = await client.post("/actions", {"action": "delete", "ids": str(waiting)})
    assert "1 job done" in page
    assert database.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE id = %s", (waiting,)) == 0
    # A job the action does not apply to is left as it is, and the page says so.
    status, page, _ = await client.post(
        "/actions", {"action": "retry", "ids": str(jobs["waiting"][1])}
    )
    assert "0 jobs done" in page and "left as they were" in page
    status, page, _ = await client.post("/actions", {"action": "retry", "ids": str(waiting)})
    assert "no longer exist" in page


async def test_actions_on_selected_jobs(client: Client, app: App, database: Any) -> None:
    jobs = await defer_mix(app)
    chosen = jobs["waiting"][:2]
    status, page, _ = await client.post(
        "/actions", {"action": "cancel", "ids": [str(i) for i in chosen], "back": "jobs"}
    )
    assert status == 200 and "2 jobs done" in page
    assert [database.job(i)["status"] for i in jobs["waiting"]] == [
        "cancelled",
        "cancelled",
        "todo",
    ]


async def test_action_on_all_matching_jobs_asks_to_confirm_the_count_then_acts(
    client: Client, app: App, database: Any
) -> None:
    jobs = await defer_mix(app)
    form = {
        "action": "retry",
        "scope": "matching",
        "status": "failed",
        "back": "jobs?status=failed",
    }
    status, page, _ = await client.post("/actions", form)
    assert status == 200 and "Retry 2 jobs?" in page
    assert [database.job(i)["status"] for i in jobs["failed"]] == ["failed", "failed"]
    status, page, _ = await client.post("/actions", {**form, "confirmed": "yes"})
    assert "2 jobs done" in page
    assert [database.job(i)["status"] for i in jobs["failed"]] == ["todo", "todo"]
    assert database.job(jobs["waiting"][0])["status"] == "todo"


async def test_action_on_all_matching_jobs_is_capped(kind: str, app: App, database: Any) -> None:
    client = Client(kind, app, "/jobs", bulk_limit=5)
    ids = await app.tasks["mail.send"].batch_defer_async(*({"to": str(n)} for n in range(8)))
    form = {"action": "cancel", "scope": "matching", "queue": "mail"}
    status, page, _ = await client.post("/actions", form)
    assert status == 200 and "Cancel 5 jobs?" in page and "More than 5 jobs match" in page
    status, page, _ = await client.post("/actions", {**form, "confirmed": "yes"})
    assert status == 200 and "5 jobs done" in page
    statuses = [database.job(i)["status"] for i in sorted(ids)]
    assert statuses == ["todo"] * 3 + ["cancelled"] * 5  # the newest 5


async def test_read_only_hides_and_refuses_actions(kind: str, app: App, database: Any) -> None:
    client = Client(kind, app, "/jobs", read_only=True)
    jobs = await defer_mix(app)
    for path in ("/jobs", f"/jobs/{jobs['failed'][0]}"):
        status, page, _ = await client.get(path)
        assert status == 200
        assert 'name="action"' not in page and "read-only" in page
    status, page, _ = await client.post(
        "/actions", {"action": "retry", "ids": str(jobs["failed"][0])}
    )
    assert status == 403
    assert database.job(jobs["failed"][0])["status"] == "failed"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Referer": "http://evil.example/admin/jobs/jobs"},
        {"Origin": "null"},
        {},
    ],
)
async def test_a_post_from_another_origin_is_refused(
    client: Client, app: App, database: Any, headers: dict[str, str]
) -> None:
    job_id = await app.tasks["mail.send"].defer_async(to="x")
    status, page, _ = await client.post(
        "/actions", {"action": "cancel", "ids": str(job_id)}, headers=headers
    )
    assert status == 403 and "same origin" in page
    assert database.job(job_id)["status"] == "todo"
    status, _, _ = await client.post(
        "/actions",
        {"action": "cancel", "ids": str(job_id)},
        headers={"Referer": f"http://{HOST}/admin/jobs/jobs"},
    )
    assert status == 200 and database.job(job_id)["status"] == "cancelled"


# -- mounting -----------------------------------------------------------------------------------


async def test_links_are_relative_to_the_mount_point_with_or_without_a_trailing_slash(
    client: Client, app: App
) -> None:
    job_id = await app.tasks["mail.send"].defer_async(to="x")
    status, _, headers = await client.get("")
    location = headers.get("location")
    assert status in (301, 307, 308) and location is not None
    assert location.rstrip("/").endswith("jobs"), location
    cases = {
        "/": "./",
        "/jobs": "./",
        "/jobs/": "../",
        f"/jobs/{job_id}": "../",
        "/workers/": "../",
    }
    for path, root in cases.items():
        status, page, _ = await client.get(path)
        assert status == 200, (path, page)
        assert f'href="{root}static/dashboard.css"' in page, path
        assert f'href="{root}jobs"' in page
        assert 'href="/' not in page and 'action="/' not in page  # nothing absolute
    status, body, headers = await client.get("/static/dashboard.js")
    assert status == 200 and "visibilityState" in body
    assert headers["content-type"].startswith("text/javascript")


async def test_the_mount_point_redirect_is_relative(app: App) -> None:
    wsgi = create_wsgi_app(app, authorize=lambda request: True)
    seen: dict[str, Any] = {}

    def start(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/tools/queue",
        "PATH_INFO": "",
        "QUERY_STRING": "a=1",
        "wsgi.input": None,
    }
    await asyncio.to_thread(lambda: b"".join(wsgi(environ, start)))
    assert seen["status"].startswith("308")
    assert seen["headers"]["Location"] == "queue/?a=1"


async def test_authorize_decides_who_sees_and_who_acts(kind: str, app: App, database: Any) -> None:
    def authorize(request: Request) -> tuple[bool, bool]:
        user = request.headers.get("x-user")
        return user in ("admin", "viewer"), user == "admin"

    client = Client(kind, app, "/jobs", authorize=authorize)
    job_id = await app.tasks["mail.send"].defer_async(to="x")
    status, _, _ = await client.get("/jobs")
    assert status == 403
    status, page, _ = await client.get("/jobs", **{"X-User": "viewer"})
    assert status == 200 and ids_on(page) == [] and str(job_id) in page
    status, page, _ = await client.get("/jobs", **{"X-User": "admin"})
    assert ids_on(page) == [job_id]
    form = {"action": "cancel", "ids": str(job_id)}
    status, _, _ = await client.post("/actions", form, {**SAME_ORIGIN, "X-User": "viewer"})
    assert status == 403 and database.job(job_id)["status"] == "todo"
    status, _, _ = await client.post("/actions", form, {**SAME_ORIGIN, "X-User": "admin"})
    assert status == 200 and database.job(job_id)["status"] == "cancelled"


async def test_an_async_authorize_works_under_asgi(db_url: str) -> None:
    async def authorize(request: Request) -> bool:
        await asyncio.sleep(0)
        return request.headers.get("x-user") == "admin"

    async with make_app(PsycopgConnector(conninfo=db_url)).open_async() as app:
        client = Client("asgi", app, "/jobs", authorize=authorize)
        assert (await client.get("/"))[0] == 403
        assert (await client.get("/", **{"X-User": "admin"}))[0] == 200


def test_an_open_dashboard_logs_a_warning_at_start_up(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(SyncPsycopgConnector(conninfo=db_url))
    with caplog.at_level(logging.WARNING, logger="sqla_jobs.dashboard"):
        create_blueprint(app)
    assert any("dashboard is open" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sqla_jobs.dashboard"):
        create_asgi_app(app, authorize=lambda request: (True, False))
    assert not caplog.records


def client_of_a_server_that_is_down(kind: str) -> Client:
    """A dashboard whose database does not answer: nothing listens on port 1."""
    down = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    connector: sqla_jobs.BaseConnector = (
        SyncPsycopgConnector(conninfo=down) if kind == "flask" else PsycopgConnector(conninfo=down)
    )
    return Client(kind, make_app(connector), "/jobs", authorize=lambda request: True)


async def test_a_database_that_does_not_answer_gives_a_503_page(kind: str) -> None:
    client = client_of_a_server_that_is_down(kind)
    status, page, _ = await client.get("/")
    assert status == 503 and "The database did not answer" in page, page


async def test_a_page_that_reads_too_long_is_cancelled_by_the_server_and_says_so(
    kind: str, app: App, database: Any
) -> None:
    """Each statement has the dashboard's statement_timeout, whatever the connector (here
    the host's pool): a page held up (by a lock; a slow scan alike) answers 503 once it
    passes, and the pool's connections keep no setting."""
    client = Client(kind, app, "/jobs", authorize=lambda request: True, statement_timeout=0.3)
    await app.tasks["mail.send"].defer_async(to="a@example.com")
    blocker = await psycopg.AsyncConnection.connect(database.url)
    try:
        await blocker.execute("LOCK TABLE sqla_jobs_jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, page, _ = await client.get("/jobs?queue=mail")
        took = time.monotonic() - started
    finally:
        await blocker.rollback()
        await blocker.close()
    assert status == 503 and "The database took too long" in page, page
    assert "statement_timeout of 0.3 s" in page, page
    assert took < 3, took
    status, page, _ = await client.get("/jobs?queue=mail")
    assert status == 200 and len(ids_on(page)) == 1
    show = Query("setting", "SHOW statement_timeout")
    settings = set()
    for _ in range(10):  # round the pool's idle connections
        rows = (
            app.connector.fetch_all(show)
            if kind == "flask"
            else await app.connector.fetch_all_async(show)
        )
        settings.add(rows[0]["statement_timeout"])
    assert settings == {"0"}


def test_a_statement_timeout_must_be_positive_or_none(app: App) -> None:
    with pytest.raises(ValueError, match="statement_timeout must be more than 0 seconds"):
        create_wsgi_app(app, statement_timeout=0)
    create_wsgi_app(app, statement_timeout=None, authorize=lambda request: True)


async def test_overview_shows_pauses_and_limits_and_pauses_and_resumes_queues(
    client: Client, app: App, database: Any
) -> None:
    await app.tasks["mail.send"].defer_async(to="a@example.com")
    await app.job_manager.set_queue_limits_async("mail", concurrency_limit=5, rate_limit="100/s")
    await app.job_manager.pause_task_async("reports.build")
    status, page, _ = await client.get("/")
    assert status == 200
    assert "at most 5 running, 100/s started" in page, page
    assert "Paused or limited tasks" in page and "reports.build" in page
    status, page, _ = await client.post("/actions", {"action": "pause_queue", "name": "mail"})
    assert status == 200 and "mail paused" in page, page
    assert [c.paused for c in app.job_manager.list_controls() if c.name == "mail"] == [True]
    status, page, _ = await client.get("/")
    assert "resume_queue" in page and ">paused</strong>" in page
    status, page, _ = await client.post("/actions", {"action": "resume_queue", "name": "mail"})
    assert status == 200 and "mail resumed" in page, page
    assert [c.paused for c in app.job_manager.list_controls() if c.name == "mail"] == [False]
    # From another origin, or read-only: refused like every action.
    status, _, _ = await client.post(
        "/actions", {"action": "pause_queue", "name": "mail"}, {"Origin": "http://evil.example"}
    )
    assert status == 403
    read_only = Client(client.kind, app, "/ro", read_only=True, authorize=lambda request: True)
    status, page, _ = await read_only.get("/")
    assert "pause_queue" not in page
    status, _, _ = await read_only.post("/actions", {"action": "pause_queue", "name": "mail"})
    assert status == 403
    assert not any(c.paused for c in app.job_manager.list_controls() if c.name == "mail")


async def test_every_page_and_an_action_work_with_the_tables_in_a_schema_of_their_own(
    kind: str, empty_db_url: str
) -> None:
    from sqla_jobs import migrations

    schema = "a b\"c'd%e:f"  # quoted and escaped wherever it appears
    migrations.upgrade(empty_db_url, schema=schema)
    connector: sqla_jobs.BaseConnector = (
        SyncPsycopgConnector(conninfo=empty_db_url)
        if kind == "flask"
        else PsycopgConnector(conninfo=empty_db_url)
    )
    app = App(connector=connector, schema=schema)

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None: ...

    async with app.open_async():
        ids = await send.batch_defer_async({"to": "a"}, {"to": "b"})
        client = Client(kind, app, "/jobs", authorize=lambda request: True)
        for path in ("/", "/jobs", f"/jobs/{ids[0]}", "/workers", "/periodic"):
            status, page, _ = await client.get(path)
            assert status == 200, (path, page)
        assert ids_on((await client.get("/jobs?queue=mail"))[1]) == sorted(ids, reverse=True)
        form = {"action": "cancel", "scope": "matching", "queue": "mail", "confirmed": "yes"}
        status, page, _ = await client.post("/actions", form)
        assert status == 200 and "2 jobs done" in page
        assert {job.status.value for job in await app.job_manager.list_jobs_async()} == {
            "cancelled"
        }


# -- metrics ------------------------------------------------------------------------------------


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_give_the_queue_state_for_prometheus(client: Client, app: App) -> None:
    await defer_mix(app)

    status, text, headers = await client.get("/metrics")

    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    found = metric_samples(text)
    assert found[("sqla_jobs_database_up", frozenset())] == 1
    assert found[("sqla_jobs_jobs", frozenset({("queue", "mail"), ("status", "todo")}))] == 4
    assert found[("sqla_jobs_jobs", frozenset({("queue", "reports"), ("status", "failed")}))] == 2
    assert found[("sqla_jobs_oldest_waiting_seconds", frozenset({("queue", "mail")}))] >= 0
    # The scheduled job is not due: only the queues with jobs due have an age.
    assert ("sqla_jobs_oldest_waiting_seconds", frozenset({("queue", "reports")})) not in found
    assert found[("sqla_jobs_workers", frozenset())] == 0  # the worker that ran has stopped
    assert "job_id" not in text and "user0@example.com" not in text


async def test_metrics_say_the_database_is_down_rather_than_fail(kind: str) -> None:
    client = client_of_a_server_that_is_down(kind)

    status, text, _ = await client.get("/metrics")

    assert status == 200, text
    assert metric_samples(text) == {("sqla_jobs_database_up", frozenset()): 0}


async def test_metrics_are_behind_authorize(kind: str, app: App) -> None:
    client = Client(kind, app, "/jobs", authorize=lambda request: False)
    status, _, _ = await client.get("/metrics")
    assert status == 403


# -- workflows: a workflow's page, a job's neighbours, the list by workflow ----------------------


def checkout(app: App) -> sqla_jobs.WorkflowRun:
    """charge -> (ship, email) -> summary: one job todo, three blocked."""
    step = app.configure_task
    return app.defer_workflow(
        chain(
            step("shop.charge").step(order_id=7),
            group(step("shop.ship").step(order_id=7), step("shop.email").step(order_id=7)),
            step("shop.summary").step(order_id=7),
        ),
        name="checkout of order 7",
    )


def text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


async def test_a_workflows_page_lists_its_jobs_with_what_each_runs_after(
    client: Client, app: App
) -> None:
    run = checkout(app)
    charge, ship, email, summary = run.job_ids

    status, page, _ = await client.get(f"/workflows/{run.workflow_id}")
    assert status == 200, page
    assert f"Workflow {run.workflow_id}: checkout of order 7" in text(page)
    assert "running" in page
    # Counts by status, each a link to the jobs list filtered to the workflow and status.
    assert f"jobs?workflow={run.workflow_id}&amp;status=blocked" in page
    rows = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(
            r'<tr class="status-\w+">\s*<td class="num"><a[^>]*>(\d+)</a></td>(.*?)</tr>',
            page,
            re.S,
        )
    }
    assert list(rows) == [charge, ship, email, summary]
    after = {job_id: re.findall(r'href="[^"]*jobs/(\d+)"', row) for job_id, row in rows.items()}
    assert after == {
        charge: [],
        ship: [str(charge)],
        email: [str(charge)],
        summary: [str(ship), str(email)],
    }
    assert "cancel what has not started" in page

    status, page, _ = await client.get("/workflows/999999")
    assert status == 404 and "No workflow with id 999999" in text(page)


async def test_a_job_page_links_to_its_workflow_and_neighbours(client: Client, app: App) -> None:
    run = checkout(app)
    charge, ship, _email, summary = run.job_ids

    status, page, _ = await client.get(f"/jobs/{ship}")
    assert status == 200, page
    assert f'workflows/{run.workflow_id}"' in page
    fields = text(page)
    assert re.search(rf"runs after\s+{charge}\s+todo", fields), fields
    assert re.search(rf"then\s+{summary}\s+blocked", fields), fields
    # A blocked job can be cancelled from its page.
    assert 'value="cancel"' in page or "cancel" in page

    status, page, _ = await client.get(f"/jobs/{app.configure_task('solo').defer()}")
    assert status == 200 and "runs after" not in page


async def test_the_jobs_list_filters_by_workflow_and_cancels_what_has_not_started(
    client: Client, app: App
) -> None:
    run = checkout(app)
    other = checkout(app)
    app.configure_task("solo").defer()

    status, page, _ = await client.get(f"/jobs?workflow={run.workflow_id}")
    assert status == 200, page
    assert ids_on(page) == sorted(run.job_ids, reverse=True)
    status, page, _ = await client.get("/jobs?workflow=seven")
    assert status == 400 and "not a workflow id" in page

    # The workflow page's cancel: every job of the workflow that has not started, after a
    # confirmation stating how many.
    form = {
        "scope": "matching",
        "workflow": str(run.workflow_id),
        "status": ["todo", "blocked"],
        "action": "cancel",
        "back": f"workflows/{run.workflow_id}",
    }
    status, page, _ = await client.post("/actions", form)
    assert status == 200 and "4 jobs" in text(page), page
    status, page, _ = await client.post("/actions", {**form, "confirmed": "yes"})
    assert status in (200, 303), page
    info = app.job_manager.get_workflow(run.workflow_id)
    assert {job.status for job in info.jobs} == {sqla_jobs.JobStatus.CANCELLED}
    untouched = app.job_manager.get_workflow(other.workflow_id)
    assert sqla_jobs.JobStatus.CANCELLED not in {job.status for job in untouched.jobs}


async def test_a_workflow_of_a_thousand_jobs_lists_the_first_and_counts_them_all(
    client: Client, app: App
) -> None:
    step = app.configure_task("shop.part").step
    run = app.defer_workflow(
        chord([step(n=n) for n in range(1200)], app.configure_task("shop.all").step())
    )

    status, page, _ = await client.get(f"/workflows/{run.workflow_id}")
    assert status == 200
    assert "1,201" in page  # the total, counted
    assert "The first 500 of 1,201 jobs" in text(page)
    # The last job runs after 1,200: ten are listed, and how many more.
    status, page, _ = await client.get(f"/jobs/{run.job_ids[-1]}")
    assert "(the first 50)" in page
