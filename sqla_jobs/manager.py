"""Queue operations: defer, claim, finish, inspect. The queue's logic lives here, on top of
any connector; connectors only carry statements to the database."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import socket
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import queries
from .connectors.base import BaseConnector
from .errors import AlreadyEnqueued, ConnectorError, JobNotFound
from .jobs import Job, JobSpec
from .retry import RetryStrategy
from .statuses import FINISHED_STATUSES, JobStatus

logger = logging.getLogger("sqla_jobs.manager")

QUEUEING_LOCK_INDEX = "uq_sqla_jobs_jobs_queueing_lock_todo"
_KEY_DETAIL = re.compile(r"Key \(queueing_lock\)=\((?P<key>.*?)\) already exists")


def _claim_order(row: dict[str, Any]) -> tuple[int, int]:
    return -row["priority"], row["id"]


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


def _copy_rows(ids: Sequence[int], specs: Sequence[JobSpec]) -> Iterator[tuple[Any, ...]]:
    for job_id, s in zip(ids, specs, strict=True):
        yield (
            job_id,
            s.queue,
            s.task_name,
            s.priority,
            s.lock,
            s.queueing_lock,
            s.args_json(),
            s.scheduled_at,
        )


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


@dataclasses.dataclass(frozen=True, slots=True)
class JobEvent:
    """One status change of a job (``sqla_jobs.schema.job_history``: the job's row and the
    events it no longer shows); ``error`` is the run's error when it ended in failed, aborted or
    a retry."""

    status: JobStatus
    at: datetime.datetime
    error: str | None = None


#: What `JobManager.prune_jobs` deletes by default: every finished status.
PRUNABLE_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED)
_RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED})

Statuses = JobStatus | str | Collection[JobStatus | str]


def _statuses(statuses: Statuses, what: str) -> list[str]:
    """Status values from one status or many, with an error naming the valid ones."""
    items = [statuses] if isinstance(statuses, str) else list(statuses)
    try:
        return [JobStatus(item).value for item in items]
    except ValueError:
        known = ", ".join(status.value for status in JobStatus)
        raise ValueError(f"{what}: {statuses!r} is not a job status; use {known}") from None


def _list_params(
    queue: str | None,
    task_name: str | None,
    status: Statuses | None,
    lock: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be 0 or more, not {limit} and {offset}")
    return {
        "queue": queue,
        "task_name": task_name,
        "lock": lock,
        "statuses": None if status is None else _statuses(status, "status"),
        "limit": limit,
        "offset": offset,
    }


def _retry_params(job_id: int, schedule_at: datetime.datetime | None) -> dict[str, Any]:
    if schedule_at is not None and schedule_at.tzinfo is None:
        raise ValueError(
            f"schedule_at={schedule_at!r} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5))."
        )
    return {"job_id": job_id, "scheduled_at": schedule_at}


def _prune_params(
    older_than: datetime.timedelta, statuses: Statuses, batch_size: int
) -> dict[str, Any]:
    if not isinstance(older_than, datetime.timedelta) or older_than < datetime.timedelta(0):
        raise ValueError(
            f"older_than must be a timedelta of 0 or more, e.g. timedelta(days=7); "
            f"not {older_than!r}"
        )
    values = _statuses(statuses, "statuses")
    unfinished = [value for value in values if JobStatus(value) not in FINISHED_STATUSES]
    if unfinished or not values:
        raise ValueError(
            f"prune_jobs deletes finished jobs only; {unfinished or 'no status'} given. Pass "
            "statuses among succeeded, failed, cancelled, aborted (cancel or abort a job "
            "first, or delete it with delete_job)."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    return {"older_than": older_than, "statuses": values, "batch_size": batch_size}


def _history(job_id: int, rows: list[dict[str, Any]]) -> list[JobEvent]:
    # Every job's history starts with its creation (its row's created_at): nothing, no job.
    if not rows:
        raise _not_found(job_id)
    return [JobEvent(JobStatus(row["status"]), row["at"], row["error"]) for row in rows]


def _not_found(job_id: int) -> JobNotFound:
    return JobNotFound(
        f"No job with id {job_id}: it never existed or was deleted (delete_jobs, prune_jobs). "
        "List jobs with `sqla-jobs jobs list`."
    )


def _requeue_refused(job_id: int, exc: ConnectorError) -> Exception:
    """The error for a retried job whose queueing lock is taken by a waiting job."""
    if exc.constraint_name != QUEUEING_LOCK_INDEX:
        return exc
    match = _KEY_DETAIL.search(str(exc))
    key = match.group("key") if match else None
    return AlreadyEnqueued(
        f"Job {job_id} cannot go back to the queue: another job with queueing_lock {key!r} "
        "is already waiting, and only one may wait at a time. Retry it once that job has "
        "started, or cancel that job.",
        queueing_lock=key,
    )


class JobManager:
    """Defers, claims, finishes and looks up jobs through one connector.

    The management methods (list, history, cancel, abort, retry, delete, prune) come in a sync
    form and an ``_async`` twin; both raise `JobNotFound` for an id that names no job.
    """

    #: Batches of at least this many jobs are written with COPY when the connector can (psycopg
    #: 3): two round trips instead of one, but several times faster per row.
    copy_threshold = 1000

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
        """Defer a batch in one transaction: all its jobs or none; their ids in order."""
        if not specs:
            return []
        try:
            if len(specs) >= self.copy_threshold and self.connector.supports_copy:
                rows = self.connector.fetch_all(queries.reserve_job_ids, {"count": len(specs)})
                ids = sorted(rows[0]["ids"])
                self.connector.copy_rows(
                    queries.JOBS_TABLE, queries.COPY_COLUMNS, _copy_rows(ids, specs)
                )
                return ids
            rows = self.connector.fetch_all(queries.defer_jobs, _many_jobs_params(specs))
        except ConnectorError as exc:
            raise _already_enqueued(exc, specs) from None
        return [int(row["id"]) for row in rows]

    async def defer_many_async(self, specs: Sequence[JobSpec]) -> list[int]:
        if not specs:
            return []
        connector = self.connector
        try:
            if len(specs) >= self.copy_threshold and connector.supports_copy_async:
                count = {"count": len(specs)}
                rows = await connector.fetch_all_async(queries.reserve_job_ids, count)
                ids = sorted(rows[0]["ids"])
                copied = _copy_rows(ids, specs)
                await connector.copy_rows_async(queries.JOBS_TABLE, queries.COPY_COLUMNS, copied)
                return ids
            rows = await connector.fetch_all_async(queries.defer_jobs, _many_jobs_params(specs))
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
        query = queries.claim_query(limit, in_queues=queues is not None)
        if queues is not None:
            params["queues"] = list(queues)
        rows = await self.connector.fetch_all_async(query, params)
        # The claim returns its rows in the order it updated them (by id); start them in the
        # order they were chosen in.
        rows.sort(key=_claim_order)
        return [Job.from_full_row(row) for row in rows]

    async def finish_succeeded_async(
        self, worker_id: int, job_ids: Sequence[int], attempts: Sequence[int], *, delete: bool
    ) -> None:
        """Record that the worker's jobs ``job_ids`` succeeded in their attempts ``attempts``
        (or delete them). A job no longer in that attempt under this worker is left alone."""
        query = queries.delete_jobs_by_id if delete else queries.finish_succeeded
        params = {"worker_id": worker_id, "ids": list(job_ids), "attempts": list(attempts)}
        await self.connector.execute_async(query, params)

    async def finish_async(self, worker_id: int, outcomes: Sequence[Outcome]) -> None:
        """Record any mix of the worker's outcomes (failed, aborted, retry, succeeded), in one
        statement when it can.

        A retry puts the job back to wait; if another job with its queueing lock already
        waits, that retry cannot be: the job fails instead, saying why, and the rest of the
        batch is written all the same.
        """
        try:
            await self._finish(worker_id, outcomes)
        except ConnectorError as exc:
            if exc.constraint_name != QUEUEING_LOCK_INDEX:
                raise
            for outcome in outcomes:  # one by one: only the refused retry changes
                try:
                    await self._finish(worker_id, [outcome])
                except ConnectorError as refused:
                    if refused.constraint_name != QUEUEING_LOCK_INDEX:
                        raise
                    error = (
                        f"{outcome.error or ''}\n\nNot retried: another job with this job's "
                        "queueing lock is already waiting, and only one may wait at a time."
                    ).lstrip()
                    failed = Outcome(outcome.job_id, outcome.attempt, JobStatus.FAILED, error)
                    await self._finish(worker_id, [failed])

    async def _finish(self, worker_id: int, outcomes: Sequence[Outcome]) -> None:
        await self.connector.execute_async(
            queries.finish_jobs,
            {
                "worker_id": worker_id,
                "ids": [o.job_id for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "errors": [o.error for o in outcomes],
                "retry_ats": [o.retry_at for o in outcomes],
            },
        )

    async def delete_jobs_async(self, worker_id: int, outcomes: Iterable[Outcome]) -> None:
        """Delete jobs this worker ran, once their ``outcomes`` are written."""
        written = list(outcomes)
        params = {
            "worker_id": worker_id,
            "ids": [o.job_id for o in written],
            "attempts": [o.attempt for o in written],
        }
        await self.connector.execute_async(queries.delete_jobs_by_id, params)

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

    async def heartbeat_async(self, worker_id: int) -> bool:
        """Record that the worker is alive. False when its row is gone: another worker found it
        stalled and removed it (see `reregister_worker_async`)."""
        row = await self.connector.fetch_one_async(queries.heartbeat, {"worker_id": worker_id})
        return row is not None

    async def notify_async(self, channel: str, payload: str) -> None:
        """Send a notification on ``channel`` (the worker checks that its LISTEN hears one)."""
        await self.connector.execute_async(queries.notify, {"channel": channel, "payload": payload})

    async def unregister_worker_async(self, worker_id: int) -> None:
        await self.connector.execute_async(queries.unregister_worker, {"worker_id": worker_id})

    async def requeue_async(
        self,
        worker_id: int,
        job_ids: Sequence[int],
        *,
        unstarted: Sequence[int] = (),
        held: Sequence[int] = (),
        held_for: float = 0.0,
    ) -> None:
        """Give the worker's jobs ``job_ids`` back to the queue (a job asked to abort ends
        aborted); those of ``unstarted``, claimed but never run, get their attempt back;
        those of ``held`` (still running in a thread) may run again only in ``held_for``
        seconds."""
        params = {
            "worker_id": worker_id,
            "ids": list(job_ids),
            "unstarted": list(unstarted),
            "held": list(held),
            "held_for": datetime.timedelta(seconds=held_for),
        }
        await self.connector.execute_async(queries.requeue_worker_jobs, params)

    def list_workers(self) -> list[dict[str, Any]]:
        """Registered workers, each with ``heartbeat_age``: seconds since its last heartbeat."""
        rows = self.connector.fetch_all(queries.list_workers)
        for row in rows:
            row["heartbeat_age"] = float(row["heartbeat_age"])
        return rows

    async def reregister_worker_async(
        self, worker_id: int, *, name: str, queues: Sequence[str] | None, concurrency: int
    ) -> bool:
        """Put back the row of a worker that another worker removed as stalled, under the same
        id (its running jobs carry it). False when the row was there after all."""
        row = await self.connector.fetch_one_async(
            queries.reregister_worker,
            {
                "worker_id": worker_id,
                "name": name,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(queues) if queues is not None else None,
                "concurrency": concurrency,
            },
        )
        return row is not None

    async def aborting_job_ids_async(self, worker_id: int) -> list[int]:
        """Ids of the worker's jobs that someone asked to abort (status ``aborting``)."""
        rows = await self.connector.fetch_all_async(
            queries.aborting_jobs_of_worker, {"worker_id": worker_id}
        )
        return [int(row["id"]) for row in rows]

    async def recover_stalled_jobs_async(
        self,
        *,
        worker_id: int,
        worker_name: str,
        stalled_timeout: float,
        strategies: Mapping[str, RetryStrategy | None],
        batch_size: int = 100,
    ) -> list[RecoveredJob]:
        """Take over the running jobs whose worker has not heartbeated for ``stalled_timeout``
        seconds (or is not registered at all) and record what `plan_recovery` decides for
        each: back to the queue, failed, or aborted. Returns the jobs this call recovered.

        Safe from many workers at once: each stalled job is taken over (``FOR UPDATE SKIP
        LOCKED``) and recorded by one of them. ``worker_id`` is the caller's own, live, worker.
        """
        params = {**_stalled_params(worker_id, stalled_timeout), "limit": batch_size}
        recovered_by = f"Worker {worker_name!r} (id {worker_id})"
        recovered: list[RecoveredJob] = []
        while True:
            rows = await self.connector.fetch_all_async(queries.adopt_stalled_jobs, params)
            plans = [
                plan_recovery(
                    StalledJob.from_row(row),
                    strategies,
                    stalled_timeout=stalled_timeout,
                    recovered_by=recovered_by,
                )
                for row in rows
            ]
            if plans:
                recovered += await self._record_recoveries_async(worker_id, plans)
            if len(rows) < batch_size:
                return recovered

    async def _record_recoveries_async(
        self, worker_id: int, plans: Sequence[RecoveredJob]
    ) -> list[RecoveredJob]:
        """Write the outcomes of jobs this worker took over; those it no longer holds are left
        alone and left out of the result."""
        try:
            rows = await self.connector.fetch_all_async(
                queries.finish_recovered_jobs, _recovered_params(worker_id, plans)
            )
        except ConnectorError as exc:
            # A job going back to the queue whose queueing lock another waiting job holds.
            if exc.constraint_name != QUEUEING_LOCK_INDEX:
                raise
            if len(plans) > 1:
                recorded: list[RecoveredJob] = []
                for plan in plans:
                    recorded += await self._record_recoveries_async(worker_id, [plan])
                return recorded
            plans = [_requeue_refused_plan(plans[0])]
            rows = await self.connector.fetch_all_async(
                queries.finish_recovered_jobs, _recovered_params(worker_id, plans)
            )
        statuses = {int(row["id"]): JobStatus(row["status"]) for row in rows}
        return [
            plan
            if statuses[plan.job.id] is plan.status
            else dataclasses.replace(plan, status=statuses[plan.job.id], delay=None)
            for plan in plans
            if plan.job.id in statuses
        ]

    async def delete_stalled_workers_async(
        self, *, worker_id: int, stalled_timeout: float
    ) -> list[dict[str, Any]]:
        """Unregister the workers that have not heartbeated for ``stalled_timeout`` seconds and
        hold no running job any more (recover their jobs first); returns their rows (id, name,
        hostname, pid, heartbeat_age)."""
        rows = await self.connector.fetch_all_async(
            queries.delete_stalled_workers, _stalled_params(worker_id, stalled_timeout)
        )
        for row in rows:
            row["heartbeat_age"] = float(row["heartbeat_age"])
        return rows

    # -- inspection ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        """The job with its status, attempts and last error; its changes: `get_job_history`."""
        row = self.connector.fetch_one(queries.get_job, {"job_id": job_id})
        if row is None:
            raise _not_found(job_id)
        return Job.from_row(row)

    async def get_job_async(self, job_id: int) -> Job:
        row = await self.connector.fetch_one_async(queries.get_job, {"job_id": job_id})
        if row is None:
            raise _not_found(job_id)
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

    # -- management ----------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        task_name: str | None = None,
        status: Statuses | None = None,
        lock: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs newest first, filtered by whichever of queue, task name, status (one or a
        collection) and lock are given; ``limit``/``offset`` page through them."""
        params = _list_params(queue, task_name, status, lock, limit, offset)
        return [Job.from_row(row) for row in self.connector.fetch_all(queries.list_jobs, params)]

    async def list_jobs_async(
        self,
        *,
        queue: str | None = None,
        task_name: str | None = None,
        status: Statuses | None = None,
        lock: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        params = _list_params(queue, task_name, status, lock, limit, offset)
        rows = await self.connector.fetch_all_async(queries.list_jobs, params)
        return [Job.from_row(row) for row in rows]

    def get_job_history(self, job_id: int) -> list[JobEvent]:
        """Every status change of the job, oldest first, with the error of each failed,
        aborted or retried run."""
        rows = self.connector.fetch_all(queries.job_history, {"job_id": job_id})
        return _history(job_id, rows)

    async def get_job_history_async(self, job_id: int) -> list[JobEvent]:
        rows = await self.connector.fetch_all_async(queries.job_history, {"job_id": job_id})
        return _history(job_id, rows)

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job that is still waiting (todo → cancelled): no worker will run it.

        Returns False, changing nothing, when the job is no longer waiting: a running job is
        not cancelled (`abort_job` stops it), a finished one stays as it is.
        """
        if self.connector.fetch_one(queries.cancel_job, {"job_id": job_id}) is not None:
            return True
        self.get_job(job_id)  # JobNotFound, or it exists in another status
        return False

    async def cancel_job_async(self, job_id: int) -> bool:
        if await self.connector.fetch_one_async(queries.cancel_job, {"job_id": job_id}):
            return True
        await self.get_job_async(job_id)
        return False

    def abort_job(self, job_id: int) -> JobStatus:
        """Stop a job, whether it waits or runs; returns the job's status after the call.

        A waiting job is cancelled at once (``cancelled``). A running job becomes ``aborting``:
        its worker hears of it through NOTIFY; an async task is cancelled (`CancelledError` at
        its next await), a sync task sees ``context.should_abort()`` turn true, and the job is
        recorded ``aborted`` when the task stops. A job already aborting or finished is left
        as it is and its status returned.
        """
        row = self.connector.fetch_one(queries.abort_job, {"job_id": job_id})
        return JobStatus(row["status"]) if row else self.get_job(job_id).status

    async def abort_job_async(self, job_id: int) -> JobStatus:
        row = await self.connector.fetch_one_async(queries.abort_job, {"job_id": job_id})
        return JobStatus(row["status"]) if row else (await self.get_job_async(job_id)).status

    def retry_job(self, job_id: int, *, schedule_at: datetime.datetime | None = None) -> bool:
        """Put a failed, cancelled or aborted job back in the queue (at once, or at
        ``schedule_at``), with a fresh count of attempts for its task's retry strategy; its
        history and last error stay.

        Returns False, changing nothing, for a job in another status (waiting, running,
        succeeded). Raises `AlreadyEnqueued` when a waiting job holds its queueing lock.
        """
        params = _retry_params(job_id, schedule_at)
        try:
            row = self.connector.fetch_one(queries.retry_job, params)
        except ConnectorError as exc:
            raise _requeue_refused(job_id, exc) from None
        if row is not None:
            return True
        self.get_job(job_id)
        return False

    async def retry_job_async(
        self, job_id: int, *, schedule_at: datetime.datetime | None = None
    ) -> bool:
        params = _retry_params(job_id, schedule_at)
        try:
            row = await self.connector.fetch_one_async(queries.retry_job, params)
        except ConnectorError as exc:
            raise _requeue_refused(job_id, exc) from None
        if row is not None:
            return True
        await self.get_job_async(job_id)
        return False

    def delete_job(self, job_id: int) -> bool:
        """Delete a job that is not running, with its history. Returns False, changing
        nothing, for a running job (abort it first)."""
        if self.connector.fetch_one(queries.delete_job, {"job_id": job_id}) is not None:
            return True
        self.get_job(job_id)
        return False

    async def delete_job_async(self, job_id: int) -> bool:
        if await self.connector.fetch_one_async(queries.delete_job, {"job_id": job_id}):
            return True
        await self.get_job_async(job_id)
        return False

    def prune_jobs(
        self,
        older_than: datetime.timedelta,
        *,
        statuses: Statuses = PRUNABLE_STATUSES,
        batch_size: int = 10_000,
    ) -> int:
        """Delete jobs that finished (in one of ``statuses``) more than ``older_than`` ago,
        with their history, ``batch_size`` per transaction; returns how many were deleted."""
        params = _prune_params(older_than, statuses, batch_size)
        deleted = 0
        while True:
            row = self.connector.fetch_one(queries.prune_jobs, params)
            batch = int(row["count"]) if row else 0
            deleted += batch
            if batch < batch_size:
                return deleted

    async def prune_jobs_async(
        self,
        older_than: datetime.timedelta,
        *,
        statuses: Statuses = PRUNABLE_STATUSES,
        batch_size: int = 10_000,
    ) -> int:
        params = _prune_params(older_than, statuses, batch_size)
        deleted = 0
        while True:
            row = await self.connector.fetch_one_async(queries.prune_jobs, params)
            batch = int(row["count"]) if row else 0
            deleted += batch
            if batch < batch_size:
                return deleted

    # -- periodic tasks ------------------------------------------------------------------------

    async def defer_periodic_async(
        self, ticks: Sequence[PeriodicTick]
    ) -> dict[tuple[str, str, int], int | None]:
        """Defer the job of each tick that no one deferred yet, in one statement.

        A tick is recorded in ``sqla_jobs_periodic_defers`` under its unique key (task,
        periodic id, timestamp), and its job written only by the statement whose record won:
        however many workers send the same tick, one job. Returns the ticks this call deferred,
        by key, with their job id, or None when the task's queueing lock was taken by a waiting
        job (the tick counts as done, with no job). Ticks missing from the result were deferred
        before, by this worker or another.
        """
        if not ticks:
            return {}
        rows = await self.connector.fetch_all_async(
            queries.defer_periodic_jobs, _periodic_params(ticks)
        )
        return {
            (row["task_name"], row["periodic_id"], int(row["defer_timestamp"])): (
                None if row["job_id"] is None else int(row["job_id"])
            )
            for row in rows
        }

    async def prune_periodic_defers_async(self, *, keep: int, before: int) -> int:
        """Delete the records of ticks older than ``before`` (unix seconds), keeping the
        ``keep`` newest of each periodic task; returns how many were deleted."""
        row = await self.connector.fetch_one_async(
            queries.prune_periodic_defers, {"keep": keep, "before": before}
        )
        return int(row["count"]) if row else 0


class Outcome:
    """How one job ended (or is to be retried), waiting to be written by `finish_async`.

    ``attempt`` is the job's attempt that ended (its ``attempts`` when claimed): the outcome
    is written only while the job is still in that attempt, under the worker that ran it."""

    __slots__ = ("attempt", "error", "job_id", "retry_at", "status")

    def __init__(
        self,
        job_id: int,
        attempt: int,
        status: JobStatus,
        error: str | None = None,
        retry_at: datetime.datetime | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.status = status
        self.error = error
        self.retry_at = retry_at

    @classmethod
    def retry(cls, job_id: int, attempt: int, error: str, delay: float) -> Outcome:
        """The job goes back to the queue, to run again in ``delay`` seconds (at once for 0:
        no timestamp, so that no clock difference with the database can hold it back)."""
        retry_at = (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
            if delay > 0
            else None
        )
        return cls(job_id, attempt, JobStatus.TODO, error, retry_at)


@dataclasses.dataclass(frozen=True, slots=True)
class PeriodicTick:
    """One tick of a periodic task: the job to defer, and the key that makes it happen once."""

    spec: JobSpec
    periodic_id: str
    timestamp: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.spec.task_name, self.periodic_id, self.timestamp)


def _periodic_params(ticks: Sequence[PeriodicTick]) -> dict[str, Any]:
    specs = [tick.spec for tick in ticks]
    return {
        "task_names": [s.task_name for s in specs],
        "periodic_ids": [tick.periodic_id for tick in ticks],
        "defer_timestamps": [tick.timestamp for tick in ticks],
        "queues": [s.queue for s in specs],
        "priorities": [s.priority for s in specs],
        "locks": [s.lock for s in specs],
        "queueing_locks": [s.queueing_lock for s in specs],
        "args": [s.args_json() for s in specs],
    }


# -- stalled jobs ------------------------------------------------------------------------------

#: Opens the ``last_error`` of every job recovered from a stalled worker.
STALLED_ERROR_PREFIX = "Recovered from a stalled worker: "


class WorkerStalled(Exception):
    """What a stalled job's retry strategy is asked about: the job raised nothing, the worker
    running it stopped heartbeating."""


@dataclasses.dataclass(frozen=True, slots=True)
class StalledJob:
    """A running job whose worker stopped heartbeating, as a live worker adopted it."""

    job: Job
    #: The worker it was running on; None when no worker was recorded.
    worker_id: int | None
    #: That worker's name; None when its row is gone from the workers table.
    worker_name: str | None = None
    #: Seconds since that worker's last heartbeat; None when its row is gone.
    heartbeat_age: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StalledJob:
        age = row["heartbeat_age"]
        return cls(
            Job.from_row(row),
            row["stalled_worker_id"],
            row["stalled_worker_name"],
            None if age is None else float(age),
        )

    def describe_worker(self, stalled_timeout: float) -> str:
        """Why the job counts as stalled, naming its worker."""
        if self.worker_id is None:
            return "no worker is recorded for this running job"
        if self.worker_name is None:
            return f"its worker (id {self.worker_id}) is no longer registered"
        age = "" if self.heartbeat_age is None else f"{self.heartbeat_age:.0f} s ago, "
        return (
            f"worker {self.worker_name!r} (id {self.worker_id}) stopped heartbeating (last "
            f"heartbeat {age}over the stalled timeout of {stalled_timeout:g} s)"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RecoveredJob:
    """A stalled job and what becomes of it: ``todo`` again (to run in ``delay`` seconds),
    ``failed`` or ``aborted``, with ``error`` as its new ``last_error``."""

    stalled: StalledJob
    status: JobStatus
    error: str
    delay: float | None = None

    @property
    def job(self) -> Job:
        return self.stalled.job


def plan_recovery(
    stalled: StalledJob,
    strategies: Mapping[str, RetryStrategy | None],
    *,
    stalled_timeout: float,
    recovered_by: str,
) -> RecoveredJob:
    """What becomes of a stalled job, given the retry strategies of the tasks this worker
    knows (``strategies``: task name → strategy, None for a task that never retries).

    - ``aborting`` → ``aborted``: it was asked to stop, and it has.
    - A known task: its retry strategy decides, as if the lost run had raised. That run counts
      as an attempt (the claim counted it), so ``max_attempts`` and the waits apply as for a
      raised error; ``retry_exceptions`` does not (the job raised nothing).
    - A task this worker does not know (nor its strategy): back to ``todo`` once, at once, for
      a worker that knows it; ``failed`` if its previous run stalled too, so that a job that
      kills its worker does not loop for ever.
    """
    job = stalled.job
    head = (
        f"{STALLED_ERROR_PREFIX}{stalled.describe_worker(stalled_timeout)} while it ran "
        f"attempt {job.attempts} of this job; the process was presumably killed or lost. "
        f"{recovered_by} recovered the job: "
    )
    if job.status is JobStatus.ABORTING:
        return RecoveredJob(
            stalled, JobStatus.ABORTED, head + "it was being aborted, so it is recorded aborted."
        )
    by_hand = f"Retry it by hand (`sqla-jobs jobs retry {job.id}`) if it should run again."
    if job.task_name not in strategies:
        unknown = f"this worker does not know task {job.task_name!r} nor its retry strategy"
        if job.last_error is not None and job.last_error.startswith(STALLED_ERROR_PREFIX):
            return RecoveredJob(
                stalled,
                JobStatus.FAILED,
                f"{head}{unknown}, and the job's previous run stalled too, so it fails rather "
                f"than loop. {by_hand}",
            )
        return RecoveredJob(
            stalled,
            JobStatus.TODO,
            f"{head}{unknown}, so the job goes back to the queue once, for a worker that "
            "knows the task.",
            0.0,
        )
    strategy = strategies[job.task_name]
    if strategy is None:
        return RecoveredJob(
            stalled,
            JobStatus.FAILED,
            f"{head}its task has no retry strategy, so the job fails. {by_hand}",
        )
    delay = _stalled_retry_delay(strategy, job.attempts, job.task_name)
    if delay is None:
        return RecoveredJob(
            stalled,
            JobStatus.FAILED,
            f"{head}no retry is left after {job.attempts} attempts (max_attempts="
            f"{strategy.max_attempts}), so the job fails. {by_hand}",
        )
    return RecoveredJob(
        stalled,
        JobStatus.TODO,
        f"{head}its task's retry strategy allows another run, in {delay:g} s.",
        delay,
    )


def _stalled_retry_delay(strategy: RetryStrategy, attempts: int, task_name: str) -> float | None:
    try:
        unfiltered = dataclasses.replace(strategy, retry_exceptions=None)
        return unfiltered.delay(attempts, WorkerStalled(f"{task_name}: worker stalled"))
    except Exception:
        logger.exception("Retry strategy of task %r raised; the stalled job fails", task_name)
        return None


def _stalled_params(worker_id: int, stalled_timeout: float) -> dict[str, Any]:
    if not stalled_timeout > 0:
        raise ValueError(f"stalled_timeout must be more than 0 seconds, not {stalled_timeout!r}")
    return {"worker_id": worker_id, "stalled_timeout": datetime.timedelta(seconds=stalled_timeout)}


def _recovered_params(worker_id: int, plans: Sequence[RecoveredJob]) -> dict[str, Any]:
    outcomes = [
        Outcome.retry(plan.job.id, plan.job.attempts, plan.error, plan.delay or 0.0)
        if plan.status is JobStatus.TODO
        else Outcome(plan.job.id, plan.job.attempts, plan.status, plan.error)
        for plan in plans
    ]
    return {
        "worker_id": worker_id,
        "ids": [o.job_id for o in outcomes],
        "statuses": [o.status.value for o in outcomes],
        "errors": [o.error for o in outcomes],
        "retry_ats": [o.retry_at for o in outcomes],
        "stalled_worker_ids": [plan.stalled.worker_id for plan in plans],
    }


def _requeue_refused_plan(plan: RecoveredJob) -> RecoveredJob:
    return dataclasses.replace(
        plan,
        status=JobStatus.FAILED,
        delay=None,
        error=f"{plan.error} It could not go back to the queue: another job with queueing_lock "
        f"{plan.job.queueing_lock!r} is already waiting, so it fails instead.",
    )
