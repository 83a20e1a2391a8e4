"""The reporting example of docs/sqlalchemy.md, run as it is written against real jobs: the
job tables are usable from the host application's own SQLAlchemy code."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import sqlalchemy_url
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from sqla_jobs import App, Job, JobStatus, PsycopgConnector
from sqla_jobs.schema import history_step, job_history, jobs

DOC = Path(__file__).resolve().parents[2] / "docs" / "sqlalchemy.md"
MARKER = "<!-- tested: tests/integration/test_sqlalchemy_reporting.py"


def documented_block() -> str:
    """The Python block right after the doc's "tested" marker."""
    text = DOC.read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match, f"no python block after the marker in {DOC}"
    return match.group(1)


@pytest.fixture(params=["psycopg", "psycopg2"])
def engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    """The host application's engine."""
    engine = create_engine(sqlalchemy_url(db_url, request.param))
    yield engine
    engine.dispose()


async def run_some_jobs(db_url: str) -> dict[str, int]:
    """Three jobs succeed on 'default', one fails on 'reports', one waits on 'reports'."""
    app = App(connector=PsycopgConnector(conninfo=db_url))

    @app.task(name="tidy")
    def tidy(n: int) -> None: ...

    @app.task(name="build_report", queue="reports")
    def build_report(month: str) -> None:
        raise ValueError(f"no data for {month}")

    async with app.open_async():
        await tidy.batch_defer_async({"n": 1}, {"n": 2}, {"n": 3})
        failing = await build_report.defer_async(month="2024-02")
        await asyncio.wait_for(
            app.run_worker_async(wait=False, install_signal_handlers=False), timeout=10
        )
        waiting = await build_report.configure(schedule_in={"hours": 1}).defer_async(
            month="2024-03"
        )
    return {"failing": failing, "waiting": waiting}


async def test_documented_report_queries_run_on_the_host_engine(
    engine: Engine, db_url: str
) -> None:
    ids = await run_some_jobs(db_url)
    namespace: dict[str, Any] = {"engine": engine}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(documented_block(), str(DOC), "exec"), namespace)
    lines = output.getvalue().splitlines()

    assert lines[:3] == [
        f"{'default':<10} {'succeeded':<10} 3",
        f"{'reports':<10} {'todo':<10} 1",
        f"{'reports':<10} {'failed':<10} 1",
    ]
    assert lines[3].startswith("build_report: 1 started, waited ")
    assert lines[4].startswith("tidy: 3 started, waited ")
    assert lines[5:] == [
        f"job {ids['failing']} (build_report, {{'month': '2024-02'}}) failed: "
        "ValueError: no data for 2024-02"
    ]
    # The documented values are typed: JobStatus members and ORM-free Job values.
    (failure,) = namespace["failures"]
    assert isinstance(failure, Job)
    assert failure.status is JobStatus.FAILED
    assert failure.args == {"month": "2024-02"}
    assert failure.finished_at is not None and failure.finished_at.tzinfo is not None


def test_job_history_query_from_the_doc(engine: Engine, db_url: str) -> None:
    ids = asyncio.run(run_some_jobs(db_url))
    job_id = ids["failing"]
    with engine.connect() as conn:
        history = conn.execute(
            select(job_history)
            .where(job_history.c.job_id == job_id)
            .order_by(job_history.c.at, history_step)
        ).all()
        status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()
    assert [row.status for row in history] == [JobStatus.TODO, JobStatus.DOING, JobStatus.FAILED]
    assert status is JobStatus.FAILED
