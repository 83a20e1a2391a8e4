"""`JobManager`: the public face of the queue's operations, sync and async.

Each operation is written once, in `sqla_jobs.operations`; the manager gives it its two entry
points, ``name`` and ``name_async``, which differ only in how the statements are sent. What
only a worker does (claim, finish, heartbeat, recover stalled jobs) is the worker's own
(`sqla_jobs.worker.database`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, TypeVar

from . import controls as ctl
from . import operations as ops
from . import results
from . import workflow_operations as wf_ops
from .connectors.base import BaseConnector
from .jobs import DEFAULT_MAX_ARGS_BYTES, Job, JobEvent, JobSpec
from .operations import Statuses
from .queries import DEFAULT, Statements
from .statuses import PRUNABLE_STATUSES, JobStatus
from .tracing import Tracing
from .workflows import Plan, WorkflowInfo, WorkflowRun

__all__ = ["PRUNABLE_STATUSES", "JobEvent", "JobManager", "Statuses"]

T = TypeVar("T")


class JobManager:
    """Defers and looks up jobs through one connector.

    Every method comes in a sync form and an ``_async`` twin, written once
    (`sqla_jobs.operations`); the management methods raise `JobNotFound` for an id that names
    no job.
    """

    #: Batches of at least this many jobs are written with COPY when the connector can (psycopg
    #: 3): two round trips instead of one, but several times faster per row.
    copy_threshold = ops.COPY_THRESHOLD

    def __init__(
        self,
        connector: BaseConnector,
        *,
        max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES,
        statements: Statements = DEFAULT,
        tracing: Tracing | None = None,
        stores_result: results.StoresResult | None = None,
    ) -> None:
        self.connector = connector
        #: The largest a job's arguments may be, as JSON (bytes): see `App`.
        self.max_args_bytes = max_args_bytes
        #: The statements for the tables, where the app has them (`App`'s ``schema``).
        self.statements = statements
        #: The app's spans (`sqla_jobs.tracing`); they do nothing without an SDK.
        self.tracing = tracing if tracing is not None else Tracing()
        #: Whether a task stores its results, by name (None: unknown); the app's tasks say.
        self.stores_result: results.StoresResult = stores_result or _unknown_task

    def using(self, connector: BaseConnector) -> JobManager:
        """A manager with the same settings, sending its statements through ``connector``."""
        return JobManager(
            connector,
            max_args_bytes=self.max_args_bytes,
            statements=self.statements,
            tracing=self.tracing,
            stores_result=self.stores_result,
        )

    def run(self, operation: ops.Operation[T]) -> T:
        """Run one of `sqla_jobs.operations` (or a generator of the same kind) through this
        manager's connector, with its statements."""
        return ops.run(self.connector, operation, self.statements)

    async def run_async(self, operation: ops.Operation[T]) -> T:
        """Async form of `run`."""
        return await ops.run_async(self.connector, operation, self.statements)

    # -- defer ---------------------------------------------------------------------------------

    # A traced app (`sqla_jobs.tracing`) wraps each defer in a send span, whose context the
    # jobs carry.

    def defer(self, spec: JobSpec) -> int:
        """Write one job (its own transaction); returns its id."""
        with self.tracing.sending((spec,)) as sending:
            job_id = self.run(ops.defer(sending.specs[0], max_args_bytes=self.max_args_bytes))
            sending.sent((job_id,))
        return job_id

    async def defer_async(self, spec: JobSpec) -> int:
        """Async form of `defer`."""
        with self.tracing.sending((spec,)) as sending:
            operation = ops.defer(sending.specs[0], max_args_bytes=self.max_args_bytes)
            job_id = await self.run_async(operation)
            sending.sent((job_id,))
        return job_id

    def defer_many(self, specs: Sequence[JobSpec]) -> list[int]:
        """Defer a batch in one transaction: all its jobs or none; their ids in order."""
        with self.tracing.sending(specs) as sending:
            can_copy = self.connector.supports_copy
            return self.run(self._defer_many(sending.specs, can_copy=can_copy))

    async def defer_many_async(self, specs: Sequence[JobSpec]) -> list[int]:
        """Async form of `defer_many`."""
        with self.tracing.sending(specs) as sending:
            can_copy = self.connector.supports_copy_async
            return await self.run_async(self._defer_many(sending.specs, can_copy=can_copy))

    def _defer_many(self, specs: Sequence[JobSpec], *, can_copy: bool) -> ops.Operation[list[int]]:
        return ops.defer_many(
            specs,
            can_copy=can_copy,
            copy_threshold=self.copy_threshold,
            max_args_bytes=self.max_args_bytes,
        )

    # -- workflows -----------------------------------------------------------------------------

    def defer_workflow(self, plan: Plan, name: str | None = None) -> WorkflowRun:
        """Write a workflow's jobs and dependencies (`sqla_jobs.workflows.plan`) in one
        statement; `App.workflow` and `App.defer_workflow` build the plan."""
        with self.tracing.sending(plan.specs) as sending:
            traced = Plan(tuple(sending.specs), plan.edges)
            run = self.run(wf_ops.defer_workflow(traced, name, max_args_bytes=self.max_args_bytes))
            sending.sent(run.job_ids)
        return run

    async def defer_workflow_async(self, plan: Plan, name: str | None = None) -> WorkflowRun:
        """Async form of `defer_workflow`."""
        with self.tracing.sending(plan.specs) as sending:
            traced = Plan(tuple(sending.specs), plan.edges)
            operation = wf_ops.defer_workflow(traced, name, max_args_bytes=self.max_args_bytes)
            run = await self.run_async(operation)
            sending.sent(run.job_ids)
        return run

    def get_workflow(self, workflow_id: int) -> WorkflowInfo:
        """The workflow with its jobs (id order) and dependencies; `WorkflowNotFound` if
        there is none."""
        return self.run(wf_ops.get_workflow(workflow_id))

    async def get_workflow_async(self, workflow_id: int) -> WorkflowInfo:
        """Async form of `get_workflow`."""
        return await self.run_async(wf_ops.get_workflow(workflow_id))

    def cancel_workflow(self, workflow_id: int, *, abort: bool = False) -> int:
        """Cancel the workflow's jobs that have not started (todo and blocked); how many.
        Running jobs are left to finish (what depends on them is cancelled already), unless
        ``abort``: then they are asked to abort too (counted), as by `abort_job`.
        `WorkflowNotFound` if there is no such workflow."""
        return self.run(wf_ops.cancel_workflow(workflow_id, abort=abort))

    async def cancel_workflow_async(self, workflow_id: int, *, abort: bool = False) -> int:
        """Async form of `cancel_workflow`."""
        return await self.run_async(wf_ops.cancel_workflow(workflow_id, abort=abort))

    # -- inspection ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        """The job with its status, attempts and last error; its changes: `get_job_history`."""
        return self.run(ops.get_job(job_id))

    async def get_job_async(self, job_id: int) -> Job:
        """Async form of `get_job`."""
        return await self.run_async(ops.get_job(job_id))

    def count_jobs(self, *, tags: Sequence[str] | None = None) -> dict[tuple[str, JobStatus], int]:
        """Number of jobs per (queue, status); with ``tags``, of the jobs having all of them."""
        return self.run(ops.count_jobs(tags))

    async def count_jobs_async(
        self, *, tags: Sequence[str] | None = None
    ) -> dict[tuple[str, JobStatus], int]:
        """Async form of `count_jobs`."""
        return await self.run_async(ops.count_jobs(tags))

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        task_name: str | None = None,
        status: Statuses | None = None,
        lock: str | None = None,
        tags: Sequence[str] | None = None,
        workflow_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs newest first, filtered by whichever of queue, task name, status (one or a
        collection), lock, tags (jobs having all of them) and workflow are given;
        ``limit``/``offset`` page through them."""
        operation = ops.list_jobs(
            queue=queue,
            task_name=task_name,
            status=status,
            lock=lock,
            limit=limit,
            offset=offset,
            tags=tags,
            workflow_id=workflow_id,
        )
        return self.run(operation)

    async def list_jobs_async(
        self,
        *,
        queue: str | None = None,
        task_name: str | None = None,
        status: Statuses | None = None,
        lock: str | None = None,
        tags: Sequence[str] | None = None,
        workflow_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Async form of `list_jobs`."""
        operation = ops.list_jobs(
            queue=queue,
            task_name=task_name,
            status=status,
            lock=lock,
            limit=limit,
            offset=offset,
            tags=tags,
            workflow_id=workflow_id,
        )
        return await self.run_async(operation)

    def get_job_history(self, job_id: int) -> list[JobEvent]:
        """Every status change of the job, oldest first, with the error of each failed,
        aborted or retried run."""
        return self.run(ops.job_history(job_id))

    async def get_job_history_async(self, job_id: int) -> list[JobEvent]:
        """Async form of `get_job_history`."""
        return await self.run_async(ops.job_history(job_id))

    # -- results -------------------------------------------------------------------------------

    def get_result(self, job_id: int) -> Any:
        """What the job's task returned (decoded JSON; None if it returned None), once the
        job has succeeded. Raises `ResultUnavailable` saying why there is none: not finished
        yet, failed (with its error), cancelled or aborted, no such job (or deleted with its
        result), or a task declared with ``store_result=False``."""
        return self.run(results.get_result(job_id, self.stores_result))

    async def get_result_async(self, job_id: int) -> Any:
        """Async form of `get_result`."""
        return await self.run_async(results.get_result(job_id, self.stores_result))

    def wait_for(self, job_id: int, *, timeout: float) -> Job:
        """The job as soon as it has finished (succeeded, failed, cancelled or aborted; its
        ``result`` or ``last_error`` with it), read with backoff (10 ms, doubling to 0.5 s).
        Raises `WaitTimeout` (a `TimeoutError`) after ``timeout`` seconds, `JobNotFound`
        for no such job (or one deleted meanwhile). `wait_for_async` is woken by NOTIFY."""
        return results.wait_for(self.connector, self.statements, job_id, timeout)

    async def wait_for_async(self, job_id: int, *, timeout: float) -> Job:  # noqa: ASYNC109
        """Async form of `wait_for`, woken by NOTIFY the moment the job finishes when the
        connector can listen (the async connectors); else read with backoff."""
        return await results.wait_for_async(self.connector, self.statements, job_id, timeout)

    def list_workers(self) -> list[dict[str, Any]]:
        """Registered workers, each with ``heartbeat_age``: seconds since its last heartbeat."""
        return self.run(ops.list_workers())

    async def list_workers_async(self) -> list[dict[str, Any]]:
        """Async form of `list_workers`."""
        return await self.run_async(ops.list_workers())

    # -- management ----------------------------------------------------------------------------

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job that is still waiting (todo → cancelled): no worker will run it.

        Returns False, changing nothing, when the job is no longer waiting: a running job is
        not cancelled (`abort_job` stops it), a finished one stays as it is.
        """
        return self.run(ops.cancel_job(job_id))

    async def cancel_job_async(self, job_id: int) -> bool:
        """Async form of `cancel_job`."""
        return await self.run_async(ops.cancel_job(job_id))

    def abort_job(self, job_id: int) -> JobStatus:
        """Stop a job, whether it waits or runs; returns the job's status after the call.

        A waiting job is cancelled at once (``cancelled``). A running job becomes ``aborting``:
        its worker hears of it through NOTIFY; an async task is cancelled (`CancelledError` at
        its next await), a sync task sees ``context.should_abort()`` turn true, and the job is
        recorded ``aborted`` when the task stops. A job already aborting or finished is left
        as it is and its status returned.
        """
        return self.run(ops.abort_job(job_id))

    async def abort_job_async(self, job_id: int) -> JobStatus:
        """Async form of `abort_job`."""
        return await self.run_async(ops.abort_job(job_id))

    def retry_job(self, job_id: int, *, schedule_at: datetime.datetime | None = None) -> bool:
        """Put a failed, cancelled or aborted job back in the queue (at once, or at
        ``schedule_at``), with a fresh count of attempts for its task's retry strategy; its
        history and last error stay.

        Returns False, changing nothing, for a job in another status (waiting, running,
        succeeded). Raises `AlreadyEnqueued` when a waiting job holds its queueing lock.
        """
        return self.run(ops.retry_job(job_id, schedule_at))

    async def retry_job_async(
        self, job_id: int, *, schedule_at: datetime.datetime | None = None
    ) -> bool:
        """Async form of `retry_job`."""
        return await self.run_async(ops.retry_job(job_id, schedule_at))

    def delete_job(self, job_id: int) -> bool:
        """Delete a job that is not running, with its history. Returns False, changing
        nothing, for a running job (abort it first)."""
        return self.run(ops.delete_job(job_id))

    async def delete_job_async(self, job_id: int) -> bool:
        """Async form of `delete_job`."""
        return await self.run_async(ops.delete_job(job_id))

    def prune_jobs(
        self,
        older_than: datetime.timedelta,
        *,
        statuses: Statuses = PRUNABLE_STATUSES,
        batch_size: int = 10_000,
    ) -> int:
        """Delete jobs that finished (in one of ``statuses``) more than ``older_than`` ago,
        with their history, ``batch_size`` per transaction; returns how many were deleted."""
        return self.run(ops.prune_jobs(older_than, statuses, batch_size))

    async def prune_jobs_async(
        self,
        older_than: datetime.timedelta,
        *,
        statuses: Statuses = PRUNABLE_STATUSES,
        batch_size: int = 10_000,
    ) -> int:
        """Async form of `prune_jobs`."""
        return await self.run_async(ops.prune_jobs(older_than, statuses, batch_size))

    # -- execution controls (`sqla_jobs.controls`) ---------------------------------------------

    def pause_queue(self, queue: str) -> None:
        """No worker starts a job of ``queue`` until `resume_queue` (running jobs finish;
        defers go on). Held in the database: it outlives worker restarts."""
        self.run(ctl.set_paused(ctl.QUEUE, queue, True))

    async def pause_queue_async(self, queue: str) -> None:
        await self.run_async(ctl.set_paused(ctl.QUEUE, queue, True))

    def resume_queue(self, queue: str) -> None:
        """Let workers start ``queue``'s jobs again; they hear of it at once (NOTIFY)."""
        self.run(ctl.set_paused(ctl.QUEUE, queue, False))

    async def resume_queue_async(self, queue: str) -> None:
        await self.run_async(ctl.set_paused(ctl.QUEUE, queue, False))

    def pause_task(self, task_name: str) -> None:
        """`pause_queue` for the jobs of one task, whatever their queue."""
        self.run(ctl.set_paused(ctl.TASK, task_name, True))

    async def pause_task_async(self, task_name: str) -> None:
        await self.run_async(ctl.set_paused(ctl.TASK, task_name, True))

    def resume_task(self, task_name: str) -> None:
        self.run(ctl.set_paused(ctl.TASK, task_name, False))

    async def resume_task_async(self, task_name: str) -> None:
        await self.run_async(ctl.set_paused(ctl.TASK, task_name, False))

    def set_queue_limits(
        self,
        queue: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: ctl.RateLike | None = None,
    ) -> None:
        """At most ``concurrency_limit`` jobs of ``queue`` running at once, and at most
        ``rate_limit`` started per period (``"100/s"``, ``"10/m"``), across all workers;
        None removes a limit. Jobs over a limit wait; they do not fail."""
        limits = ctl.Limits.of(concurrency_limit, rate_limit)
        self.run(ctl.set_limits(ctl.QUEUE, queue, limits))

    async def set_queue_limits_async(
        self,
        queue: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: ctl.RateLike | None = None,
    ) -> None:
        limits = ctl.Limits.of(concurrency_limit, rate_limit)
        await self.run_async(ctl.set_limits(ctl.QUEUE, queue, limits))

    def set_task_limits(
        self,
        task_name: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: ctl.RateLike | None = None,
    ) -> None:
        """`set_queue_limits` for the jobs of one task, whatever their queue."""
        limits = ctl.Limits.of(concurrency_limit, rate_limit)
        self.run(ctl.set_limits(ctl.TASK, task_name, limits))

    async def set_task_limits_async(
        self,
        task_name: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: ctl.RateLike | None = None,
    ) -> None:
        limits = ctl.Limits.of(concurrency_limit, rate_limit)
        await self.run_async(ctl.set_limits(ctl.TASK, task_name, limits))

    def list_controls(self) -> list[ctl.Control]:
        """Every queue and task that has been paused or limited, with its controls now."""
        return self.run(ctl.list_controls())

    async def list_controls_async(self) -> list[ctl.Control]:
        return await self.run_async(ctl.list_controls())


def _unknown_task(task_name: str) -> bool | None:
    """A manager without an app knows no task."""
    return None
