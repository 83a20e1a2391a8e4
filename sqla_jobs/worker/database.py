"""What only a worker asks of the database: claim jobs, write their outcomes, keep its own row,
give jobs back, recover stalled jobs, defer periodic ticks. Async only, as the worker is."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import queries
from ..connectors.base import BaseConnector
from ..controls import Control, Limits
from ..errors import ConnectorError
from ..jobs import Job, load_result
from ..operations import int_array
from ..periodic import PeriodicTick
from ..retry import RetryStrategy
from ..statuses import QUEUEING_LOCK_INDEX, JobStatus
from ..workflows import ParentJob
from .outcomes import Outcome
from .recovery import RecoveredJob, StalledJob, plan_recovery, requeue_refused


def _claim_order(row: dict[str, Any]) -> tuple[int, int]:
    return -row["priority"], row["id"]


class WorkerDatabase:
    """The worker's statements, on its connector."""

    def __init__(
        self,
        connector: BaseConnector,
        statements: queries.Statements = queries.DEFAULT,
        takes_context: Callable[[str], bool] | None = None,
    ) -> None:
        self.connector = connector
        #: The statements for the tables, where the app has them (`App`'s ``schema``).
        self.statements = statements
        #: Whether the task of this name takes a `JobContext` (``pass_context=True``): only
        #: those can read their parents' results, so only their claims read them. None: all.
        self.takes_context = takes_context
        #: The parents of claimed jobs that have some (workflows), by job id, until the job
        #: starts (the executor takes them); None: the claim could not read them.
        self.parents: dict[int, tuple[ParentJob, ...] | None] = {}

    async def claim(
        self,
        *,
        worker_id: int,
        queues: Sequence[str] | None,
        limit: int,
        controlled: bool = False,
    ) -> list[Job]:
        """Mark up to ``limit`` runnable jobs as doing for this worker and return them,
        highest priority first, then oldest. ``controlled``: under the execution controls
        (`sqla_jobs.controls`); the plain claim claims nothing while a control applies."""
        params: dict[str, Any] = {"worker_id": worker_id, "limit": limit}
        if controlled:
            in_queues = queries.claim_controlled_in_queues
            query = self.statements[in_queues if queues is not None else queries.claim_controlled]
        else:
            query = self.statements.claim_query(limit, in_queues=queues is not None)
        if queues is not None:
            params["queues"] = list(queues)
        rows = await self.connector.fetch_all_async(query, params)
        # The claim returns its rows in the order it updated them (by id); start them in the
        # order they were chosen in.
        rows.sort(key=_claim_order)
        # Jobs of workflows that waited for others, whose tasks take a context: their parents'
        # results, for the whole batch in one statement. Other jobs cost nothing more (a
        # workflow's steps that read no context, often most of them, add no round trip).
        takes_context = self.takes_context
        with_parents = [
            row["id"]
            for row in rows
            if row.pop("parents_left") is not None
            and (takes_context is None or takes_context(row["task_name"]))
        ]
        jobs = [Job.from_claim_row(row, worker_id) for row in rows]
        if with_parents:
            try:
                self.parents.update(await self.parents_of(with_parents))
            except ConnectorError:
                # Each job reads them as it starts (a failure there fails that run, which
                # retries): the claimed jobs must go on to the executor in any case.
                self.parents.update(dict.fromkeys(with_parents))
        return jobs

    async def parents_of(self, job_ids: Sequence[int]) -> dict[int, tuple[ParentJob, ...]]:
        """The jobs each of ``job_ids`` depends on, in id order (the order they were added)."""
        query = self.statements[queries.parent_results]
        rows = await self.connector.fetch_all_async(query, {"job_ids": list(job_ids)})
        found: dict[int, list[ParentJob]] = {int(job_id): [] for job_id in job_ids}
        for row in rows:
            result = row["result"]
            found[int(row["job_id"])].append(
                ParentJob(
                    int(row["parent_id"]),
                    row["task_name"],
                    JobStatus(row["status"]),
                    None if result is None else load_result(result),
                )
            )
        return {job_id: tuple(parents) for job_id, parents in found.items()}

    async def finish_succeeded(
        self,
        worker_id: int,
        job_ids: Sequence[int],
        attempts: Sequence[int],
        *,
        delete: bool,
        results: Sequence[str | None] | None = None,
    ) -> None:
        """Record that the worker's jobs ``job_ids`` succeeded in their attempts ``attempts``
        (or delete them), with their ``results`` (JSON text, None for none; None when no job
        of the batch has one). A job no longer in that attempt under this worker is left
        alone."""
        params: dict[str, Any] = {
            "worker_id": worker_id,
            "ids": int_array(job_ids),
            "attempts": int_array(attempts),
        }
        if delete:
            query = self.statements[queries.delete_jobs_by_id]
        elif results is None:
            query = self.statements[queries.finish_succeeded]
        else:
            query = self.statements[queries.finish_succeeded_with_results]
            params["results"] = list(results)
        await self.connector.execute_async(query, params)

    async def finish(self, worker_id: int, outcomes: Sequence[Outcome]) -> None:
        """Record any mix of the worker's outcomes (failed, aborted, cancelled, retry, snooze,
        succeeded), in one statement when it can.

        A retry (or a snooze) puts the job back to wait; if another job with its queueing lock
        already waits, that cannot be: the job fails instead, saying why, and the rest of the
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
                    refused_as = "Not snoozed" if outcome.snoozed else "Not retried"
                    error = (
                        f"{outcome.error or ''}\n\n{refused_as}: another job with this job's "
                        "queueing lock is already waiting, and only one may wait at a time."
                    ).lstrip()
                    failed = Outcome(outcome.job_id, outcome.attempt, JobStatus.FAILED, error)
                    await self._finish(worker_id, [failed])

    async def _finish(self, worker_id: int, outcomes: Sequence[Outcome]) -> None:
        await self.connector.execute_async(
            self.statements[queries.finish_jobs],
            {
                "worker_id": worker_id,
                "ids": [o.job_id for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "errors": [o.error for o in outcomes],
                "retry_ats": [o.retry_at for o in outcomes],
                "refunds": [int(o.snoozed) for o in outcomes],
            },
        )

    async def delete_jobs(self, worker_id: int, outcomes: Iterable[Outcome]) -> None:
        """Delete jobs this worker ran, once their ``outcomes`` are written."""
        written = list(outcomes)
        params = {
            "worker_id": worker_id,
            "ids": [o.job_id for o in written],
            "attempts": [o.attempt for o in written],
        }
        await self.connector.execute_async(self.statements[queries.delete_jobs_by_id], params)

    async def list_controls(self) -> list[Control]:
        rows = await self.connector.fetch_all_async(self.statements[queries.list_controls])
        return [Control.from_row(row) for row in rows]

    async def set_limits(self, scope: str, name: str, limits: Limits) -> None:
        await self.connector.fetch_all_async(
            self.statements[queries.set_limits], limits.params(scope, name)
        )

    async def register_worker(
        self, *, name: str, queues: Sequence[str] | None, concurrency: int
    ) -> int:
        row = await self.connector.fetch_one_async(
            self.statements[queries.register_worker],
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

    async def heartbeat(self, worker_id: int) -> bool:
        """Record that the worker is alive. False when its row is gone: another worker found it
        stalled and removed it (see `reregister_worker`)."""
        row = await self.connector.fetch_one_async(
            self.statements[queries.heartbeat], {"worker_id": worker_id}
        )
        return row is not None

    async def notify(self, channel: str, payload: str) -> None:
        """Send a notification on ``channel`` (the worker checks that its LISTEN hears one)."""
        await self.connector.execute_async(
            self.statements[queries.notify], {"channel": channel, "payload": payload}
        )

    async def unregister_worker(self, worker_id: int) -> None:
        await self.connector.execute_async(
            self.statements[queries.unregister_worker], {"worker_id": worker_id}
        )

    async def requeue(
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
        await self.connector.execute_async(self.statements[queries.requeue_worker_jobs], params)

    async def reregister_worker(
        self, worker_id: int, *, name: str, queues: Sequence[str] | None, concurrency: int
    ) -> bool:
        """Put back the row of a worker that another worker removed as stalled, under the same
        id (its running jobs carry it). False when the row was there after all."""
        row = await self.connector.fetch_one_async(
            self.statements[queries.reregister_worker],
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

    async def aborting_job_ids(self, worker_id: int) -> list[int]:
        """Ids of the worker's jobs that someone asked to abort (status ``aborting``)."""
        rows = await self.connector.fetch_all_async(
            self.statements[queries.aborting_jobs_of_worker], {"worker_id": worker_id}
        )
        return [int(row["id"]) for row in rows]

    async def recover_stalled_jobs(
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
            rows = await self.connector.fetch_all_async(
                self.statements[queries.adopt_stalled_jobs], params
            )
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
                recovered += await self._record_recoveries(worker_id, plans)
            if len(rows) < batch_size:
                return recovered

    async def _record_recoveries(
        self, worker_id: int, plans: Sequence[RecoveredJob]
    ) -> list[RecoveredJob]:
        """Write the outcomes of jobs this worker took over; those it no longer holds are left
        alone and left out of the result."""
        try:
            rows = await self.connector.fetch_all_async(
                self.statements[queries.finish_recovered_jobs], _recovered_params(worker_id, plans)
            )
        except ConnectorError as exc:
            # A job going back to the queue whose queueing lock another waiting job holds.
            if exc.constraint_name != QUEUEING_LOCK_INDEX:
                raise
            if len(plans) > 1:
                recorded: list[RecoveredJob] = []
                for plan in plans:
                    recorded += await self._record_recoveries(worker_id, [plan])
                return recorded
            plans = [requeue_refused(plans[0])]
            rows = await self.connector.fetch_all_async(
                self.statements[queries.finish_recovered_jobs], _recovered_params(worker_id, plans)
            )
        statuses = {int(row["id"]): JobStatus(row["status"]) for row in rows}
        return [
            plan
            if statuses[plan.job.id] is plan.status
            else dataclasses.replace(plan, status=statuses[plan.job.id], delay=None)
            for plan in plans
            if plan.job.id in statuses
        ]

    async def delete_stalled_workers(
        self, *, worker_id: int, stalled_timeout: float
    ) -> list[dict[str, Any]]:
        """Unregister the workers that have not heartbeated for ``stalled_timeout`` seconds and
        hold no running job any more (recover their jobs first); returns their rows (id, name,
        hostname, pid, heartbeat_age)."""
        rows = await self.connector.fetch_all_async(
            self.statements[queries.delete_stalled_workers],
            _stalled_params(worker_id, stalled_timeout),
        )
        for row in rows:
            row["heartbeat_age"] = float(row["heartbeat_age"])
        return rows

    async def check_schema(self) -> None:
        """Raise SchemaNotFound (with the fix) when the tables are missing."""
        await self.connector.fetch_one_async(self.statements[queries.check_schema])

    async def defer_periodic(
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
            self.statements[queries.defer_periodic_jobs], periodic_params(ticks)
        )
        return {
            (row["task_name"], row["periodic_id"], int(row["defer_timestamp"])): (
                None if row["job_id"] is None else int(row["job_id"])
            )
            for row in rows
        }

    async def prune_periodic_defers(self, *, keep: int, before: int) -> int:
        """Delete the records of ticks older than ``before`` (unix seconds), keeping the
        ``keep`` newest of each periodic task; returns how many were deleted."""
        row = await self.connector.fetch_one_async(
            self.statements[queries.prune_periodic_defers], {"keep": keep, "before": before}
        )
        return int(row["count"]) if row else 0


def periodic_params(ticks: Sequence[PeriodicTick]) -> dict[str, Any]:
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
