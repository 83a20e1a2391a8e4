"""A worker serves Prometheus metrics of the jobs it runs, scraped over HTTP while it runs."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sqla_jobs
from sqla_jobs import Worker, WorkerOptions


@pytest.fixture
async def psycopg_app(db_url: str) -> AsyncIterator[sqla_jobs.App]:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    async with app.open_async():
        yield app


def scrape(address: tuple[str, int]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_worker_serves_what_it_ran_by_queue_task_and_outcome(
    psycopg_app: sqla_jobs.App,
) -> None:
    app = psycopg_app

    @app.task(name="tests.ok", queue="fast")
    async def ok() -> None:
        await asyncio.sleep(0)

    @app.task(name="tests.flaky", retry=1)
    def flaky(fail: bool) -> None:
        if fail:
            raise RuntimeError("no luck")

    await ok.batch_defer_async(*([{}] * 5))
    await flaky.defer_async(fail=True)  # retried once, then failed
    await app.configure_task("tests.nobody_runs", queue="elsewhere").defer_async()
    options = WorkerOptions(
        metrics_port=0,
        metrics_host="127.0.0.1",
        install_signal_handlers=False,
        queues=["fast", "default"],
    )
    worker = Worker(app, options)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if worker.jobs_run == 7:
                break
            await asyncio.sleep(0.05)
        assert worker.jobs_run == 7
        address = worker.metrics_address
        assert address is not None
        found = await asyncio.to_thread(scrape, address)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)

    def value(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in found, sorted(found)
        return found[key]

    finished = "sqla_jobs_jobs_finished_total"
    assert value(finished, queue="fast", task="tests.ok", outcome="succeeded") == 5
    assert value(finished, queue="default", task="tests.flaky", outcome="retried") == 1
    assert value(finished, queue="default", task="tests.flaky", outcome="failed") == 1
    assert value("sqla_jobs_job_duration_seconds_count", queue="fast", task="tests.ok") == 5
    assert value("sqla_jobs_job_wait_seconds_count", queue="fast") == 5
    assert value("sqla_jobs_job_wait_seconds_count", queue="default") == 2
    assert worker.metrics_address is None  # stopped with the worker
    # The queue's state, read from the database at the scrape.
    assert value("sqla_jobs_database_up") == 1
    assert value("sqla_jobs_jobs", queue="fast", status="succeeded") == 5
    assert value("sqla_jobs_jobs", queue="default", status="failed") == 1
    assert value("sqla_jobs_jobs", queue="elsewhere", status="todo") == 1
    assert value("sqla_jobs_oldest_waiting_seconds", queue="elsewhere") >= 0
    assert value("sqla_jobs_workers") == 1


async def test_a_taken_port_fails_the_start_before_the_worker_registers(
    psycopg_app: sqla_jobs.App,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = WorkerOptions(
            metrics_port=port, metrics_host="127.0.0.1", install_signal_handlers=False
        )
        with pytest.raises(sqla_jobs.MetricsUnavailable, match="--metrics-port"):
            await asyncio.wait_for(Worker(psycopg_app, options).run(), 10)
    assert await psycopg_app.job_manager.list_workers_async() == []


def test_without_a_port_nothing_is_counted() -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector())
    assert Worker(app).job_counts is None
