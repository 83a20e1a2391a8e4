"""Queue operations: defer, claim, finish, inspect. The queue's logic lives here, on top of
any connector; connectors only carry statements to the database."""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from . import queries
from .connectors.base import BaseConnector
from .errors import AlreadyEnqueued, ConnectorError, JobNotFound
from .jobs import Job, JobSpec
from .schema import JobStatus

logger = logging.getLogger("sqla_jobs.manager")

QUEUEING_LOCK_INDEX = "uq_sqla_jobs_jobs_queueing_lock_todo"
_KEY_DETAIL = re.compile(r"Key \(queueing_lock\)=\((?P<key>.*?)\) already exists")


def _one_job_params(spec: JobSpec) -> dict[str, Any]:
    return {
        "queue": spec.queue,
        "task_name": spec.task_name,
        "priority": spec.priority,
        "lock": spec.lock,
        "queueing_lock": spec.queueing_lock,
        "args": spec.args_json(),
        "scheduled_at": spec.scheduled_at,
    }


def _many_jobs_params(specs: Sequence[JobSpec]) -> dict[str, Any]:
    return {
        "queues": [s.queue for s in specs],
        "task_names": [s.task_name for s in specs],
        "priorities": [s.priority for s in specs],
        "locks": [s.lock for s in specs],
        "queueing_locks": [s.queueing_lock for s in specs],
        "args": [s.args_json() for s in specs],
        "scheduled_ats": [s.scheduled_at for s in specs],
    }


def _already_enqueued(exc: ConnectorError, specs: Sequence[JobSpec]) -> Exception:
    """An AlreadyEnqueued naming the job that clashed, or the original error."""
    if exc.constraint_name != QUEUEING_LOCK_INDEX:
        return exc
    match = _KEY_DETAIL.search(str(exc))
    key = match.group("key") if match else None
    clashing = next((s for s in specs if s.queueing_lock == key), None)
    task = f" of task {clashing.task_name!r}" if clashing else ""
    batch = f" None of the {len(specs)} jobs of this batch were deferred." if len(specs) > 1 else ""
    return AlreadyEnqueued(
        f"A job{task} with queueing_lock {key!r} is already waiting: only one job per "
        f"queueing lock may wait at a time.{batch} Catch sqla_jobs.AlreadyEnqueued to ignore "
        "the duplicate, or defer it without a queueing_lock.",
        queueing_lock=key,
    )


class JobManager:
    """Defers, claims, finishes and looks up jobs through one connector."""

    def __init__(self, connector: BaseConnector) -> None:
        self.connector = connector

    # -- defer ---------------------------------------------------------------------------------

    def defer(self, spec: JobSpec) -> int:
        params = _one_job_params(spec)
        try:
            row = self.connector.fetch_one(queries.defer_job, params)
        except ConnectorError as exc:
            raise _already_enqueued(exc, [spec]) from None
        assert row is not None
        return int(row["id"])

    async def defer_async(self, spec: JobSpec) -> int:
        params = _one_job_params(spec)
        try:
            row = await self.connector.fetch_one_async(queries.defer_job, params)
        except ConnectorError as exc:
            raise _already_enqueued(exc, [spec]) from None
        assert row is not None
        return int(row["id"])

    def defer_many(self, specs: Sequence[JobSpec]) -> list[int]:
        if not specs:
            return []
        params = _many_jobs_params(specs)
        try:
            rows = self.connector.fetch_all(queries.defer_jobs, params)
        except ConnectorError as exc:
            raise _already_enqueued(exc, specs) from None
        return [int(row["id"]) for row in rows]

    async def defer_many_async(self, specs: Sequence[JobSpec]) -> list[int]:
        if not specs:
            return []
        params = _many_jobs_params(specs)
        try:
            rows = await self.connector.fetch_all_async(queries.defer_jobs, params)
        except ConnectorError as exc:
            raise _already_enqueued(exc, specs) from None
        return [int(row["id"]) for row in rows]

    # -- the worker's side ---------------------------------------------------------------------

    async def claim_async(
        self, *, worker_id: int, queues: Sequence[str] | None, limit: int
    ) -> list[Job]:
        """Mark up to ``limit`` runnable jobs as doing for this worker and return them,
        highest priority first, then oldest."""
        params: dict[str, Any] = {"worker_id": worker_id, "limit": limit}
        query = queries.claim_jobs
        if queues is not None:
            query, params["queues"] = queries.claim_jobs_in_queues, list(queues)
        rows = await self.connector.fetch_all_async(query, params)
        return [Job.from_full_row(row) for row in rows]

    async def finish_succeeded_async(self, job_ids: Sequence[int], *, delete: bool) -> None:
        query = queries.delete_jobs_by_id if delete else queries.finish_succeeded
        await self.connector.execute_async(query, {"ids": list(job_ids)})

    async def finish_async(self, outcomes: Sequence[Outcome]) -> None:
        """Record any mix of outcomes (failed, aborted, retry, succeeded) in one statement."""
        await self.connector.execute_async(
            queries.finish_jobs,
            {
                "ids": [o.job_id for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "errors": [o.error for o in outcomes],
                "retry_ats": [o.retry_at for o in outcomes],
            },
        )

    async def delete_jobs_async(self, job_ids: Iterable[int]) -> None:
        await self.connector.execute_async(queries.delete_jobs_by_id, {"ids": list(job_ids)})

    async def register_worker_async(
        self, *, name: str, queues: Sequence[str] | None, concurrency: int
    ) -> int:
        row = await self.connector.fetch_one_async(
            queries.register_worker,
            {
                "name": name,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(queues) if queues is not None else None,
                "concurrency": concurrency,
            },
        )
        assert row is not None
        return int(row["id"])

    async def heartbeat_async(self, worker_id: int) -> None:
        await self.connector.execute_async(queries.heartbeat, {"worker_id": worker_id})

    async def unregister_worker_async(self, worker_id: int) -> None:
        await self.connector.execute_async(queries.unregister_worker, {"worker_id": worker_id})

    async def requeue_async(self, worker_id: int, job_ids: Sequence[int]) -> None:
        await self.connector.execute_async(
            queries.requeue_worker_jobs, {"worker_id": worker_id, "ids": list(job_ids)}
        )

    def list_workers(self) -> list[dict[str, Any]]:
        """Registered workers, each with ``heartbeat_age``: seconds since its last heartbeat."""
        rows = self.connector.fetch_all(queries.list_workers)
        for row in rows:
            row["heartbeat_age"] = float(row["heartbeat_age"])
        return rows

    # -- inspection ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        row = self.connector.fetch_one(queries.get_job, {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"No job with id {job_id}.")
        return Job.from_row(row)

    async def get_job_async(self, job_id: int) -> Job:
        row = await self.connector.fetch_one_async(queries.get_job, {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"No job with id {job_id}.")
        return Job.from_row(row)

    def count_jobs(self) -> dict[tuple[str, JobStatus], int]:
        """Number of jobs per (queue, status)."""
        rows = self.connector.fetch_all(queries.count_jobs_by_status)
        return {(row["queue"], JobStatus(row["status"])): int(row["count"]) for row in rows}

    async def count_jobs_async(self) -> dict[tuple[str, JobStatus], int]:
        rows = await self.connector.fetch_all_async(queries.count_jobs_by_status)
        return {(row["queue"], JobStatus(row["status"])): int(row["count"]) for row in rows}

    async def check_schema_async(self) -> None:
        """Raise SchemaNotFound (with the fix) when the tables are missing."""
        await self.connector.fetch_one_async(queries.check_schema)


class Outcome:
    """How one job ended (or is to be retried), waiting to be written by `finish_async`."""

    __slots__ = ("error", "job_id", "retry_at", "status")

    def __init__(
        self,
        job_id: int,
        status: JobStatus,
        error: str | None = None,
        retry_at: datetime.datetime | None = None,
    ) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        self.retry_at = retry_at
