"""Blueprints against a real PostgreSQL: once an app adds a blueprint, its task objects defer
jobs under the namespaced name, and a worker of that app runs them, periodic ones included.
(Registration rules and errors without a database: tests/unit/test_blueprint_registration.py.)"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Database


class Mail:
    """What a module without an app declares: a blueprint and its tasks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.bp = bp = sqla_jobs.Blueprint()

        @bp.task(name="send", queue="mail")
        async def send(to: str) -> None:
            self.calls.append(("send", to))

        @bp.periodic(cron="* * * * * *")
        @bp.task(name="tick")
        def tick(timestamp: int) -> None:
            self.calls.append(("tick", timestamp))

        self.send = send


async def test_blueprint_tasks_defer_after_add_tasks_from_and_a_worker_runs_them(
    async_app: sqla_jobs.App, database: Database
) -> None:
    mail = Mail()
    bp, send, calls = mail.bp, mail.send, mail.calls
    with pytest.raises(sqla_jobs.TaskNotFound, match="add_tasks_from"):
        await send.defer_async(to="early@example.com")
    assert database.job_count() == 0

    async_app.add_tasks_from(bp, namespace="mail")
    job_id = await send.defer_async(to="a@example.com")
    await async_app.configure_task("mail:send").defer_async(to="b@example.com")

    job = database.job(job_id)
    assert (job["task_name"], job["queue"]) == ("mail:send", "mail")

    worker = sqla_jobs.Worker(
        async_app, sqla_jobs.WorkerOptions(polling_interval=0.05, install_signal_handlers=False)
    )
    running = asyncio.create_task(worker.run())
    try:
        assert await database.wait_until_async(
            lambda: sum(1 for name, _ in calls if name == "tick") >= 2 and len(calls) >= 4,
            within=8,
        ), calls
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)

    assert {value for name, value in calls if name == "send"} == {
        "a@example.com",
        "b@example.com",
    }
    assert {j["status"] for j in database.jobs() if j["task_name"] == "mail:send"} == {"succeeded"}
    ticks = database.rows("SELECT DISTINCT task_name, periodic_id FROM sqla_jobs_periodic_defers")
    assert ticks == [{"task_name": "mail:tick", "periodic_id": ""}]
    tick_jobs = [j for j in database.jobs() if j["task_name"] == "mail:tick"]
    assert tick_jobs and all(set(j["args"]) == {"timestamp"} for j in tick_jobs)


async def test_one_blueprint_under_two_namespaces_defers_to_two_task_names(
    async_app: sqla_jobs.App, database: Database
) -> None:
    mail = Mail()
    bp, send = mail.bp, mail.send
    async_app.add_tasks_from(bp, namespace="eu")
    async_app.add_tasks_from(bp, namespace="us")

    await send.defer_async(to="eu@example.com")
    await async_app.tasks["us:send"].defer_async(to="us@example.com")

    assert sorted((j["task_name"], j["args"]["to"]) for j in database.jobs()) == [
        ("eu:send", "eu@example.com"),
        ("us:send", "us@example.com"),
    ]
    assert set(async_app.periodic_tasks) == {("eu:tick", ""), ("us:tick", "")}
