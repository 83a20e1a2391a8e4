"""The worker's finish of successes releases their dependents itself, one update per dependent
per batch (``finish_succeeded``), and marks the parents ``has_dependents = false`` so that the
row trigger, which does the same work one parent at a time for every other way a job ends,
does not count them again. Real workers, real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs import JobStatus, chord

if TYPE_CHECKING:
    from conftest import Database

PREFIX = "tests.workflow_release."


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[sqla_jobs.App]:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))

    @app.task(name=PREFIX + "value")
    async def value(value: Any = None) -> Any:
        return value

    @app.task(name=PREFIX + "gather", pass_context=True)
    async def gather(context: sqla_jobs.JobContext) -> Any:
        return sorted(context.parent_results.values())

    await app.open_async()
    yield app
    await app.close_async()


def task(app: sqla_jobs.App, name: str) -> sqla_jobs.Task:
    return app.tasks[PREFIX + name]


async def run_workers(app: sqla_jobs.App, count: int, concurrency: int) -> None:
    """``count`` workers at once until no runnable job is left."""
    workers = [
        app.run_worker_async(
            wait=False,
            install_signal_handlers=False,
            polling_interval=0.05,
            concurrency=concurrency,
            name=f"release-{n}",
        )
        for n in range(count)
    ]
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60)


async def test_a_job_waiting_for_1000_parents_finished_by_two_workers_runs_once_after_all(
    app: sqla_jobs.App, database: Database
) -> None:
    """1,000 parents finished in batches by two workers at once: the batches count the job
    down concurrently (serialised on its row), it goes to todo when the last one is written,
    and it runs once, after every parent, reading the 1,000 results."""
    value, gather = task(app, "value"), task(app, "gather")
    run = await app.defer_workflow_async(
        chord([value.step(value=i) for i in range(1000)], gather.step())
    )
    callback = run.job_ids[-1]

    await run_workers(app, count=2, concurrency=50)

    job = database.job(callback)
    assert job["status"] == JobStatus.SUCCEEDED and job["attempts"] == 1
    assert job["result"] == list(range(1000)) and job["parents_left"] == 0
    last_parent_end = database.scalar(
        "SELECT max(finished_at) FROM sqla_jobs_jobs WHERE id <> %s", (callback,)
    )
    assert job["started_at"] > last_parent_end
    # Both workers wrote parents' successes: the count was shared.
    writers = database.scalar(
        "SELECT count(DISTINCT worker_id) FROM sqla_jobs_jobs WHERE id <> %s", (callback,)
    )
    assert writers == 2
    # Released by the worker's finish: the parents are marked so, and the trigger did not
    # count them again.
    flags = database.rows(
        "SELECT DISTINCT has_dependents FROM sqla_jobs_jobs WHERE id <> %s", (callback,)
    )
    assert [row["has_dependents"] for row in flags] == [False]


async def test_a_parent_released_by_the_finish_is_not_counted_again_when_deleted(
    app: sqla_jobs.App, database: Database
) -> None:
    """A job with two parents: the first succeeds (the finish counts it), then is deleted
    (pruned): its delete does not count it a second time, so the job still waits for the
    second parent, and runs once that one succeeded."""
    value, gather = task(app, "value"), task(app, "gather")
    workflow = app.workflow()
    first = workflow.add(value.step(value="first"))
    second = workflow.add(
        value.configure(schedule_in={"hours": 1}).step(value="second")  # not yet
    )
    last = workflow.add(gather.step(), after=[first, second])
    run = await workflow.defer_async()

    await run_workers(app, count=1, concurrency=4)
    assert database.job(run[last])["parents_left"] == 1
    assert await app.job_manager.delete_job_async(run[first])
    # Its dependency rows went with it (the delete trigger still fires for it).
    left = database.scalar(
        "SELECT count(*) FROM sqla_jobs_job_dependencies WHERE %s IN (job_id, parent_id)",
        (run[first],),
    )
    assert left == 0
    assert database.job(run[last])["status"] == JobStatus.BLOCKED
    assert database.job(run[last])["parents_left"] == 1

    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET scheduled_at = NULL WHERE id = %s", (run[second],)
    )
    await run_workers(app, count=1, concurrency=4)
    job = database.job(run[last])
    assert job["status"] == JobStatus.SUCCEEDED and job["result"] == ["second"]


async def test_the_finish_and_the_trigger_share_one_count(
    app: sqla_jobs.App, database: Database
) -> None:
    """Two parents of one job on run-anyway edges: one succeeds through the worker's finish,
    the other is cancelled by hand (the trigger counts it); the job runs once both ended."""
    value, gather = task(app, "value"), task(app, "gather")
    workflow = app.workflow(on_parent_failure="run")
    ran = workflow.add(value.step(value="ran"))
    dropped = workflow.add(value.configure(schedule_in={"hours": 1}).step(value="dropped"))
    last = workflow.add(gather.step(), after=[ran, dropped])
    run = await workflow.defer_async()

    await run_workers(app, count=1, concurrency=4)
    assert database.job(run[last])["parents_left"] == 1
    assert await app.job_manager.cancel_job_async(run[dropped])
    await run_workers(app, count=1, concurrency=4)

    job = database.job(run[last])
    assert job["status"] == JobStatus.SUCCEEDED and job["result"] == ["ran"]
