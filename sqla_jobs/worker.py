"""The worker: claims jobs in batches, runs them, and records their outcomes in batches.

Three coroutines form a pipeline (River's shape): the *fetcher* claims as many jobs as there
are free slots with one ``FOR UPDATE SKIP LOCKED`` statement; each job runs in its own
asyncio task (sync tasks in a thread pool); the *completer* writes outcomes in batches, all
successes in one statement, while the next jobs already run. LISTEN/NOTIFY wakes the fetcher
when jobs arrive; polling is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._aio import cancel_and_wait, wait_event, within
from .connectors.base import cannot_run_worker
from .errors import ConnectionFailed, ConnectorError, JobsError, WorkerFailed
from .jobs import Job
from .manager import JobManager, Outcome
from .periodic import PeriodicDeferrer
from .queries import claim_size
from .statuses import NOTIFY_CHANNEL, JobStatus

if TYPE_CHECKING:
    from .app import App
    from .tasks import Task

logger = logging.getLogger("sqla_jobs.worker")
T = TypeVar("T")

DeleteJobs = Literal["never", "successful", "always"]
ABORT_CHANNEL = "sqla_jobs_abort"
_MAX_ERROR_LENGTH = 20_000
_MAX_PENDING_OUTCOMES = 20_000
_MAX_FLUSH = 5_000
_MAX_CLAIMS_IN_FLIGHT = 2
# Auto prefetch holds what the worker starts in this many seconds at its recent start rate,
# measured at each claim and averaged over some _RATE_TIME_CONSTANT seconds. The window is
# shorter than the time constant: a burst of at most `concurrency` starts (long jobs started
# together ending together) cannot lift the prefetch above its floor.
_PREFETCH_WINDOW = 0.03
_RATE_TIME_CONSTANT = 0.05
# Bounds on stopping, so that neither a hung statement nor a server that is down can keep a
# stopping worker alive: side tasks (heartbeat, periodic deferrer, listener) get this long to
# end after their current statement; the last writes (outcomes, jobs handed back, the workers
# row) get this long between them; a cancelled worker gets this long in all.
_SIDE_TASKS_STOP_TIMEOUT = 5.0
_FINAL_WRITES_TIMEOUT = 5.0
_CANCELLED_STOP_TIMEOUT = 15.0
# How long a starting worker waits for its LISTEN before claiming without it (polling).
_LISTEN_START_TIMEOUT = 5.0
# Once listening, the worker sends itself a notification through its pool and gives up on
# LISTEN (with a warning) if it has not heard it within this long: PgBouncer in transaction
# mode takes the LISTEN and forwards no notification.
_PROBE_TIMEOUT = 5.0
# Retries after a failed statement or a lost LISTEN connection wait this long, doubling per
# failure up to a cap, each delay drawn at random from its upper half (jitter: workers that
# lost the server together do not come back in lockstep).
_RETRY_FIRST_DELAY = 0.1
_RETRY_MAX_DELAY = 1.0
# LISTEN tries again sooner: once it is back, the worker claims at once, so this bounds how
# long a job deferred just after an outage waits.
_LISTEN_RETRY_MAX_DELAY = 0.5


def retry_delay(failures: int, cap: float = _RETRY_MAX_DELAY) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
    ceiling = min(cap, _RETRY_FIRST_DELAY * 2 ** max(failures - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs. Every option has a default that suits most deployments."""

    #: Queues to take jobs from; None takes every queue.
    queues: Sequence[str] | None = None
    #: Jobs run at the same time (async tasks as asyncio tasks, sync tasks in threads).
    concurrency: int = 10
    #: Name shown in the workers table and the logs.
    name: str | None = None
    #: False: stop once no runnable job is left and none is running (drain and return).
    wait: bool = True
    #: Wake on NOTIFY when jobs arrive; polling_interval is the fallback either way.
    listen_notify: bool = True
    #: Seconds between polls for jobs when no notification arrives (scheduled jobs, retries).
    polling_interval: float = 5.0
    #: Delete jobs once finished: "never" keeps history, "successful" deletes succeeded
    #: jobs, "always" deletes every finished job.
    delete_jobs: DeleteJobs = "never"
    #: Seconds to let running jobs finish after SIGINT/SIGTERM; unfinished ones go back to
    #: the queue. None waits for ever.
    shutdown_timeout: float | None = 30.0
    #: Seconds between heartbeats in the workers table.
    heartbeat_interval: float = 10.0
    #: Seconds without a heartbeat after which a worker counts as dead (killed, lost): live
    #: workers then recover its running jobs, by their task's retry strategy. More than
    #: heartbeat_interval; a few heartbeats' worth, so that a slow one does not count.
    stalled_timeout: float = 60.0
    #: Most jobs claimed by one statement, and claimed ahead by the default (auto) prefetch.
    fetch_batch: int = 100
    #: Jobs claimed ahead of free slots, so that each claim brings a useful batch and the next
    #: jobs are ready when running ones end. None (auto): what the worker starts in some 30 ms
    #: at its recent pace, at least ``concurrency`` and at most ``fetch_batch``: short jobs
    #: get big claims, long jobs ``concurrency`` ahead. N: exactly N; 0: claim only for free
    #: slots (no job waits claimed by a busy worker; for long jobs spread over many workers,
    #: or a queue where long jobs follow many short ones).
    prefetch: int | None = None
    #: Install SIGINT/SIGTERM handlers (only from the main thread).
    install_signal_handlers: bool = True
    #: Defer the app's periodic tasks at their ticks (each tick once, however many workers
    #: do it). A worker that does not wait (``wait=False``) never does.
    periodic: bool = True
    #: Seconds the worker waits for the answer to one statement (a claim, a batch of
    #: outcomes, a heartbeat) before giving up on it: a server that hangs (a stopped backend,
    #: a network that drops packets) cannot hang the worker. The statement is cancelled, its
    #: connection replaced, and the statement tried again later.
    database_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.delete_jobs not in ("never", "successful", "always"):
            raise ValueError(
                f"delete_jobs must be 'never', 'successful' or 'always', not {self.delete_jobs!r}"
            )
        if self.prefetch is not None and self.prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {self.prefetch}")
        if not self.database_timeout > 0:
            raise ValueError(
                f"database_timeout must be more than 0 seconds, not {self.database_timeout!r}"
            )
        if not self.heartbeat_interval > 0:
            raise ValueError(
                f"heartbeat_interval must be more than 0 seconds, not {self.heartbeat_interval!r}"
            )
        if not self.stalled_timeout > self.heartbeat_interval:
            raise ValueError(
                f"stalled_timeout ({self.stalled_timeout!r} s) must exceed heartbeat_interval "
                f"({self.heartbeat_interval!r} s): other workers declare a worker dead, and run "
                "its jobs again, once it has not heartbeated for stalled_timeout seconds. Give "
                f"it a few heartbeats, e.g. stalled_timeout={6 * self.heartbeat_interval:g}."
            )
        if isinstance(self.queues, str):
            raise TypeError(f"queues must be a list of queue names, not the string {self.queues!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class JobContext:
    """What a task declared with ``pass_context=True`` receives as its first argument."""

    job: Job
    app: App
    worker_name: str
    worker_id: int
    _abort_requested: set[int] = dataclasses.field(repr=False)

    def should_abort(self) -> bool:
        """True once someone asked to abort this job (or the worker is shutting down past
        its timeout); a long sync task should check it and return."""
        return self.job.id in self._abort_requested


class _Completer:
    """Collects outcomes and writes them in batches: one statement for all successes, one for
    everything else. Never blocks the jobs: they hand over an outcome and go."""

    def __init__(
        self,
        manager: JobManager,
        delete_jobs: DeleteJobs,
        on_release: Callable[[], None],
        timeout: float,
    ) -> None:
        self._manager = manager
        self._timeout = timeout
        self._delete_succeeded = delete_jobs in ("successful", "always")
        self._delete_failed = delete_jobs == "always"
        self._on_release = on_release
        self.worker_id = 0  # set once the worker is registered
        self._releases = False
        self._succeeded: list[int] = []
        self._others: list[Outcome] = []
        self._pending = asyncio.Event()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.wake_fetcher_after_flush = False

    @property
    def backlog(self) -> int:
        return len(self._succeeded) + len(self._others)

    def add(self, outcome: Outcome, *, releases: bool) -> None:
        """``releases``: writing this outcome may make another job runnable."""
        self._releases = self._releases or releases
        if outcome.status is JobStatus.SUCCEEDED:
            self._succeeded.append(outcome.job_id)
        else:
            self._others.append(outcome)
        self._idle.clear()
        self._pending.set()

    async def run(self) -> None:
        """Write outcomes as they come, until `close`; the write in progress then finishes (a
        statement cancelled half-way can leave a driver's connection unusable)."""
        while not self._closing:
            await self._pending.wait()
            # One loop turn lets the outcomes of jobs finishing together join this batch.
            await asyncio.sleep(0)
            if not self._closing:
                await self.flush(until_closed=True)

    def close(self) -> None:
        self._closing = True
        self._pending.set()

    @property
    def pending_job_ids(self) -> list[int]:
        """Jobs whose outcome is not written yet."""
        return [*self._succeeded, *(outcome.job_id for outcome in self._others)]

    async def flush(self, *, until_closed: bool = False) -> None:
        """Write everything pending; after a failure keep it and try again, with backoff.

        ``until_closed``: give up (keeping the outcomes) once `close` is called, for the final
        flush, which has a bound of its own."""
        failures = 0
        while self._succeeded or self._others:
            releases, self._releases = self._releases, False
            succeeded, self._succeeded = self._succeeded[:_MAX_FLUSH], self._succeeded[_MAX_FLUSH:]
            others, self._others = self._others[:_MAX_FLUSH], self._others[_MAX_FLUSH:]
            try:
                await within(self._timeout, self._write(succeeded, others))
            except BaseException as exc:
                # Kept for the next try, or for the final flush if this one was cancelled.
                self._restore(succeeded, others, releases)
                if not isinstance(exc, Exception):
                    raise
                failures += 1
                delay = retry_delay(failures)
                count = len(succeeded) + len(others)
                if isinstance(exc, (ConnectorError, TimeoutError)):
                    logger.warning(
                        "Could not record %d job outcomes, retrying in %.1f s: %s",
                        count,
                        delay,
                        describe_error(exc, self._timeout),
                    )
                else:
                    # Not a database error we know (a driver's own timeout, a bug): keep the
                    # completer alive, and the traceback in the log.
                    logger.exception(
                        "Could not record %d job outcomes, retrying in %.1f s", count, delay
                    )
                if until_closed and self._closing:
                    return
                await asyncio.sleep(delay)
                continue
            failures = 0
            if releases:
                self._on_release()
        self._pending.clear()
        self._idle.set()

    async def _write(self, succeeded: list[int], others: list[Outcome]) -> None:
        if succeeded:
            await self._manager.finish_succeeded_async(
                self.worker_id, succeeded, delete=self._delete_succeeded
            )
        if others:
            await self._manager.finish_async(self.worker_id, others)
            if self._delete_failed:
                await self._manager.delete_jobs_async(
                    self.worker_id, (o.job_id for o in others if o.status is not JobStatus.TODO)
                )

    def _restore(self, succeeded: list[int], others: list[Outcome], releases: bool) -> None:
        self._succeeded[:0] = succeeded
        self._others[:0] = others
        self._releases = self._releases or releases

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Worker:
    """Runs jobs for an app. Use `App.run_worker` / `App.run_worker_async` (or the CLI)."""

    def __init__(self, app: App, options: WorkerOptions | None = None) -> None:
        self.app = app
        self.options = options or WorkerOptions()
        self.name = self.options.name or f"{socket.gethostname()}-{id(self):x}"
        self.manager = app.job_manager
        self.worker_id = 0
        # No queue named means every queue.
        self._queues = list(self.options.queues) if self.options.queues else None
        self._running: dict[int, asyncio.Future[None]] = {}
        self._ready: dict[int, Job] = {}  # claimed ahead, in claim order, not started yet
        # Read from task threads through JobContext.should_abort(); set membership is atomic.
        self._abort_requested: set[int] = set()
        self._sync_jobs: set[int] = set()  # running jobs of sync tasks
        # Jobs cancelled by the shutdown (not by an abort request, nor by their own code).
        self._interrupting: set[int] = set()
        # Set whenever the fetcher may have something to do: a slot freed, a claim returned,
        # news from the queue, a stop request.
        self._changed = asyncio.Event()
        self._exhausted = False  # the last claim found fewer jobs than asked
        self._news_count = 0
        self._claims: set[asyncio.Task[Any]] = set()
        self._claim_failures = 0  # in a row
        self._reserved = 0  # slots promised to claims in flight
        self._stopping = False
        self._hurry = False  # stopping without the grace of shutdown_timeout (cancelled)
        self._stop_requested = asyncio.Event()
        self._shutting_down = asyncio.Event()
        # Set when the heartbeat should act before its next beat: shutdown, or a LISTEN that
        # came back (notifications were missed, abort requests among them).
        self._heartbeat_wake = asyncio.Event()
        self._aborts_missed = False
        # Set once the LISTEN connection listens, or could not: the first claim waits for it
        # (bounded), so that no job deferred after the claim goes unheard.
        self._listen_settled = asyncio.Event()
        self._probe_heard = asyncio.Event()
        self._probe_payload = f"sqla_jobs.probe.{uuid.uuid4().hex}"
        self._notify_unusable = False  # LISTEN hears nothing: poll only
        self._side_tasks: set[asyncio.Task[Any]] = set()
        # A side task that failed: the worker stops, and run() raises WorkerFailed.
        self._failure: tuple[str, BaseException] | None = None
        # A job waiting behind a lock becomes runnable once its predecessor's outcome is
        # written, and a retry once it is back in the queue.
        self._completer = _Completer(
            self.manager, self.options.delete_jobs, self._news, self.options.database_timeout
        )
        self._interrupted: list[int] = []
        self._unstarted: list[int] = []  # of those, claimed ahead and never started
        self.jobs_run = 0
        self._jobs_started = 0
        self._start_rate = 0.0  # jobs/s, see _auto_prefetch
        self._rate_measured_at = 0.0
        self._jobs_started_at_measure = 0
        self._jobs_ended = 0
        self._jobs_ended_at_claim = 0
        # After a failed heartbeat, other workers may have missed theirs too (a database
        # outage): judge none of them stalled before they have had time to heartbeat again.
        self._recovery_not_before = 0.0

    # -- public --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming jobs; running jobs get ``shutdown_timeout`` seconds to finish."""
        if self._stopping:
            logger.warning("Second stop request: cancelling the running jobs now")
            self._cancel_running()
            return
        logger.info("Stop requested: claiming no more jobs", extra={"worker": self.name})
        self._stopping = True
        self._stop_requested.set()
        # Jobs claimed ahead never started: they go back to the queue.
        self._give_back_unstarted(self._ready)
        self._ready.clear()
        self._changed.set()

    async def run(self) -> None:
        """Run until stopped (SIGINT/SIGTERM or `stop`), or drained with ``wait=False``.

        Cancelling the task that runs this (an application's lifespan, a ``TaskGroup``) stops
        the worker at once, cleanly: running jobs are cancelled and go back to the queue,
        outcomes are written, connections are returned, each step bounded; then the
        `CancelledError` propagates."""
        if not self.app.connector.can_run_worker:
            raise cannot_run_worker(self.app.connector)
        # Signals are handled from the start: a SIGTERM during start-up is a clean stop too.
        with self._signal_handlers():
            # The worker runs in a task of its own, stopped by flags, never by cancellation:
            # drivers await with asyncio.wait_for, which on Python 3.11 can lose a cancellation
            # (see sqla_jobs._aio), and a lost one must not leave the worker running.
            body = asyncio.create_task(self._run_body(), name=f"sqla_jobs.worker {self.name}")
            try:
                await asyncio.shield(body)
            except asyncio.CancelledError:
                if body.done():
                    raise
                await self._stop_cancelled(body)
                raise
        if self._failure is not None:
            name, error = self._failure
            raise WorkerFailed(
                f"Worker {self.name} stopped: its {name} failed with {error!r} (traceback in "
                "the log above). Its running jobs went back to the queue."
            ) from error

    async def _run_body(self) -> None:
        self.app.import_tasks()
        timeout = self.options.database_timeout
        try:
            await within(timeout, self.manager.check_schema_async())
            self.worker_id = await within(
                timeout,
                self.manager.register_worker_async(
                    name=self.name, queues=self._queues, concurrency=self.options.concurrency
                ),
            )
        except TimeoutError:
            raise ConnectionFailed(
                f"PostgreSQL did not answer the worker's first statements within {timeout:g} "
                f"s ({self.app.connector.describe()}): check that the server is up and "
                "reachable, or raise database_timeout (--database-timeout)."
            ) from None
        self._completer.worker_id = self.worker_id
        await self._run()

    async def _stop_cancelled(self, body: asyncio.Task[None]) -> None:
        """The task running `run` was cancelled: stop now, without waiting for running jobs,
        and wait (bounded; further cancellations change nothing) for the stop to finish."""
        logger.info(
            "Worker cancelled: stopping now, running jobs go back to the queue",
            extra={"worker": self.name, "worker_id": self.worker_id},
        )
        self._hurry = True
        if not self._stopping:
            self.stop()
        self._cancel_running()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCELLED_STOP_TIMEOUT
        cancelled_body = False
        while not body.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                if cancelled_body:
                    logger.error(
                        "Worker %s did not stop within %.0f s of its cancellation; leaving it",
                        self.name,
                        _CANCELLED_STOP_TIMEOUT + 1,
                    )
                    return
                logger.error(
                    "Worker %s did not stop within %.0f s of its cancellation; cancelling it",
                    self.name,
                    _CANCELLED_STOP_TIMEOUT,
                )
                cancelled_body = True
                deadline = loop.time() + 1.0
                with contextlib.suppress(asyncio.CancelledError):
                    await cancel_and_wait(body, 1.0)
                continue
            # A second cancellation only repeats the first: the stop is under way, bounded.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({body}, timeout=remaining)
        if not body.cancelled() and (error := body.exception()) is not None:
            logger.error("Worker %s failed while stopping", self.name, exc_info=error)

    async def _run(self) -> None:
        logger.info(
            "Worker %s started (id %d, queues %s, concurrency %d)",
            self.name,
            self.worker_id,
            ", ".join(self._queues) if self._queues else "all",
            self.options.concurrency,
            extra={"worker": self.name, "worker_id": self.worker_id},
        )
        # The completer and the heartbeat stop between statements when asked; only the
        # listener (its own connection, idle) is cancelled.
        side_tasks = [asyncio.create_task(self._completer.run(), name="sqla_jobs.completer")]
        side_tasks.append(asyncio.create_task(self._heartbeat(), name="sqla_jobs.heartbeat"))
        if self.options.periodic and self.options.wait and self.app.periodic_tasks:
            # Stops with the heartbeat, between statements.
            deferrer = PeriodicDeferrer(self.manager, self.app.periodic_tasks.values())
            side_tasks.append(
                asyncio.create_task(deferrer.run(self._shutting_down), name="sqla_jobs.periodic")
            )
        listener = None
        if self.options.listen_notify and self.options.wait:
            listener = asyncio.create_task(self._listen(), name="sqla_jobs.listener")
            side_tasks.append(listener)
        else:
            self._listen_settled.set()
        for task in side_tasks:
            task.add_done_callback(self._side_task_done)
        try:
            await self._fetch_loop()
            await self._wait_for_running_jobs()
        finally:
            if self._running:  # only when the fetch loop itself failed
                self._cancel_running()
                await asyncio.wait(list(self._running.values()), timeout=1)
            self._shutting_down.set()
            self._heartbeat_wake.set()
            self._completer.close()
            # Bounded: a statement or a driver that hangs must not hang the shutdown. The
            # listener (its own connection, idle) is cancelled; the others stop between two
            # statements, and are cancelled if they take too long.
            for task in [*self._side_tasks, *([listener] if listener is not None else [])]:
                await cancel_and_wait(task, _SIDE_TASKS_STOP_TIMEOUT)
            _, stuck = await asyncio.wait(side_tasks, timeout=_SIDE_TASKS_STOP_TIMEOUT)
            for task in stuck:
                logger.warning(
                    "%s did not stop within %.0f s; cancelling it",
                    task.get_name(),
                    _SIDE_TASKS_STOP_TIMEOUT,
                )
                await cancel_and_wait(task, 1.0)
            self._give_back_unstarted(self._ready)  # when the fetch loop itself failed
            self._ready.clear()
            await self._final_writes()
            logger.info(
                "Worker %s stopped after %d jobs",
                self.name,
                self.jobs_run,
                extra={"worker": self.name, "worker_id": self.worker_id},
            )

    async def _final_writes(self) -> None:
        """Record the outcomes still pending, hand back the jobs this worker will not run,
        and remove its row: each bounded (a server that is down cannot hold up the stop), and
        what could not be written is logged (the stalled-job sweep of a live worker recovers
        those jobs after stalled_timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FINAL_WRITES_TIMEOUT

        def remaining() -> float:
            return max(deadline - loop.time(), 1.0)

        try:
            await within(remaining(), self._completer.flush())
        except TimeoutError:
            logger.error(
                "Could not record the outcomes of jobs %s before stopping: they stay 'doing' "
                "until another worker recovers them as stalled",
                self._completer.pending_job_ids,
                extra={"worker": self.name, "worker_id": self.worker_id},
            )
        interrupted = self._interrupted + list(self._running)
        if interrupted:
            try:
                await within(
                    remaining(),
                    self.manager.requeue_async(
                        self.worker_id, interrupted, unstarted=self._unstarted
                    ),
                )
            except (JobsError, TimeoutError) as exc:
                logger.error(
                    "Could not put the interrupted jobs %s back in the queue (%s): they stay "
                    "'doing' until another worker recovers them as stalled",
                    interrupted,
                    exc or "timed out",
                    extra={"worker": self.name, "worker_id": self.worker_id},
                )
            else:
                logger.warning("Jobs %s were interrupted and go back to the queue", interrupted)
        try:
            await within(remaining(), self.manager.unregister_worker_async(self.worker_id))
        except (JobsError, TimeoutError) as exc:
            logger.warning(
                "Could not remove this worker's row (%s); other workers remove it once it is "
                "stalled",
                exc or "timed out",
                extra={"worker": self.name, "worker_id": self.worker_id},
            )

    # -- fetching ------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        """Keep the slots full: claim as many jobs as slots are free, plus the prefetch, with
        up to two claims in flight, so that PostgreSQL prepares the next batch while Python
        runs this one."""
        options = self.options
        prefetch = options.prefetch
        auto = prefetch is None
        # Auto starts as with prefetch=concurrency, then adapts at each claim.
        capacity = options.concurrency + (options.concurrency if prefetch is None else prefetch)
        await self._wait_for_listen()
        self._rate_measured_at = time.monotonic()
        while not self._stopping:
            self._changed.clear()
            limit = self._claim_limit(capacity)
            if limit and auto:
                # One clock read per claim, not per job.
                capacity = options.concurrency + self._auto_prefetch()
                limit = self._claim_limit(capacity)
            if limit:
                self._start_claim(limit)
                continue
            idle = self._exhausted and not self._claims
            if idle and not options.wait and not self._running and not self._ready:
                # Draining: done once every outcome is written and none of them made a job
                # runnable again (the next job of a lock, a retry).
                await self._completer.wait_idle()
                if self._exhausted and self._jobs_ended == self._jobs_ended_at_claim:
                    return
                # Jobs ended since the last claim began: they may have deferred new ones.
                self._exhausted = False
                continue
            timeout = options.polling_interval if idle else None
            if not await wait_event(self._changed, timeout):
                self._exhausted = False  # poll: scheduled jobs, missed notifications
        # Claims still in flight hold jobs this worker will not run: give them back.
        if self._claims:
            await asyncio.wait(self._claims, timeout=10)

    async def _wait_for_listen(self) -> None:
        """Claim only once LISTEN is in place (or has failed, or taken too long): a job
        deferred between a first claim and a late LISTEN would wait for the next poll, and an
        abort request for one of its jobs for the next heartbeat."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LISTEN_START_TIMEOUT
        while not self._listen_settled.is_set() and not self._stopping:
            self._changed.clear()
            if not await wait_event(self._changed, deadline - loop.time()):
                logger.warning(
                    "LISTEN is not in place after %.0f s; claiming jobs without it (polling "
                    "every %.1f s until it is)",
                    _LISTEN_START_TIMEOUT,
                    self.options.polling_interval,
                )
                return

    def _claim_limit(self, capacity: int) -> int:
        """How many jobs to claim now to hold ``capacity`` (running, ready and being claimed);
        0 for no claim now. A claim waits until it can bring half a batch, unless the worker
        would soon run dry: no claim in flight, and no more jobs ready than slots."""
        options = self.options
        held = len(self._running) + len(self._ready) + self._reserved
        limit = claim_size(capacity - held, options.fetch_batch)
        if (
            self._exhausted
            or limit <= 0
            or len(self._claims) >= _MAX_CLAIMS_IN_FLIGHT
            or self._completer.backlog >= _MAX_PENDING_OUTCOMES
        ):
            return 0
        if limit < max(1, min(options.fetch_batch, capacity) // 2) and (
            self._claims or len(self._ready) > options.concurrency
        ):
            return 0
        return limit

    def _auto_prefetch(self) -> int:
        """The prefetch for ``prefetch=None``: the jobs this worker starts within
        _PREFETCH_WINDOW at its recent start rate, between concurrency and fetch_batch.

        The start rate is a decaying average over some _RATE_TIME_CONSTANT seconds, updated
        here, once per claim: short jobs make it high; long jobs, or an idle queue, bring the
        prefetch down to its floor within a fraction of a second. Above the floor, a job
        claimed ahead waits about _PREFETCH_WINDOW for its slot; the exception is long jobs
        right behind many short ones, claimed before the rate fell (prefetch=0 for such
        queues)."""
        now = time.monotonic()
        elapsed = now - self._rate_measured_at
        started = self._jobs_started - self._jobs_started_at_measure
        self._rate_measured_at = now
        self._jobs_started_at_measure = self._jobs_started
        if elapsed >= _RATE_TIME_CONSTANT:
            self._start_rate = started / elapsed
        else:
            # Exponential decay over the interval, plus the jobs started during it.
            self._start_rate += (started - self._start_rate * elapsed) / _RATE_TIME_CONSTANT
        ahead = int(self._start_rate * _PREFETCH_WINDOW)
        concurrency = self.options.concurrency
        return max(concurrency, min(ahead, self.options.fetch_batch))

    def _start_claim(self, limit: int) -> None:
        self._jobs_ended_at_claim = self._jobs_ended
        self._reserved += limit
        self._claims.add(asyncio.create_task(self._claim(limit)))

    async def _claim(self, limit: int) -> None:
        news_before = self._news_count
        try:
            jobs = await self._bounded(
                self.manager.claim_async(worker_id=self.worker_id, queues=self._queues, limit=limit)
            )
        except Exception as exc:
            self._claim_failures += 1
            delay = retry_delay(self._claim_failures)
            if isinstance(exc, (ConnectorError, TimeoutError)):
                logger.error(
                    "Could not claim jobs, retrying in %.1f s: %s",
                    delay,
                    describe_error(exc, self.options.database_timeout),
                )
            else:
                logger.exception("Could not claim jobs, retrying in %.1f s", delay)
            await self._sleep_unless_stopped(delay)
            jobs = []
        else:
            self._claim_failures = 0
        finally:
            self._reserved -= limit
            this_claim = asyncio.current_task()
            if this_claim is not None:
                self._claims.discard(this_claim)
            self._changed.set()
        # Fewer jobs than asked: the queue is empty for now, unless news came while this claim
        # ran (its snapshot may predate the outcome that made a job runnable).
        if len(jobs) < limit and self._news_count == news_before:
            self._exhausted = True
        if self._stopping:
            if jobs:
                self._give_back_unstarted(job.id for job in jobs)
            return
        ready = self._ready
        if ready and jobs and jobs[0].priority > next(reversed(ready.values())).priority:
            # Jobs of higher priority than some claimed ahead by an earlier claim start first;
            # the sort is stable: claim order within a priority.
            merged = sorted([*ready.values(), *jobs], key=_by_priority)
            ready.clear()
            ready.update((job.id, job) for job in merged)
        else:
            for job in jobs:
                ready[job.id] = job
        self._fill_slots()

    def _fill_slots(self) -> None:
        """Start ready jobs while slots are free."""
        while self._ready and len(self._running) < self.options.concurrency:
            job_id = next(iter(self._ready))
            job = self._ready.pop(job_id)
            if job_id in self._abort_requested:
                # Asked to abort before it started: it never runs.
                self._abort_requested.discard(job_id)
                self._completer.add(
                    Outcome(job_id, JobStatus.ABORTED, "Aborted on request before it started."),
                    releases=job.lock is not None,
                )
                continue
            self._start(job)

    def _news(self) -> None:
        """Something may have made jobs runnable: claim again."""
        self._news_count += 1
        self._exhausted = False
        self._changed.set()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        await wait_event(self._stop_requested, seconds)

    # -- running -------------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        self._jobs_started += 1
        self._running[job.id] = asyncio.ensure_future(self._run_job(job))

    async def _run_job(self, job: Job) -> None:
        task = self.app.tasks.get(job.task_name)
        outcome: Outcome
        try:
            if task is None:
                raise _UnknownTask(self._unknown_task_message(job))
            await self._call(task, job)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if job.id in self._interrupting or (
                job.id not in self._abort_requested and current and current.cancelling()
            ):
                # Shutdown ran out of time (or the loop is closing): the job goes back to the
                # queue (see _final_writes).
                self._interrupted.append(job.id)
                raise
            error = "".join(traceback.format_exception(exc))[-_MAX_ERROR_LENGTH:]
            if job.id in self._abort_requested:
                # Cancelled at the request of abort_job (see _listen); the traceback says where.
                logger.warning("Job %d (%s) aborted", job.id, job.task_name, extra=_log_extra(job))
                outcome = Outcome(job.id, JobStatus.ABORTED, f"Aborted on request.\n{error}")
            else:
                # The task raised CancelledError itself (a library's timeout, say): an error
                # like any other, not a stop of the worker.
                outcome = self._failure_outcome(task, job, exc, error)
        except _UnknownTask as exc:
            logger.error("%s", exc, extra=_log_extra(job))
            outcome = Outcome(job.id, JobStatus.FAILED, str(exc))
        except (Exception, SystemExit) as exc:
            # SystemExit too: one task calling sys.exit() must not stop the worker.
            error = "".join(traceback.format_exception(exc))[-_MAX_ERROR_LENGTH:]
            outcome = self._failure_outcome(task, job, exc, error)
        else:
            if job.id in self._abort_requested:
                # A sync task that returned after an abort request (or an async one that
                # swallowed the cancellation): it stopped, as asked.
                outcome = Outcome(job.id, JobStatus.ABORTED, "Aborted on request.")
            else:
                outcome = Outcome(job.id, JobStatus.SUCCEEDED)
        finally:
            del self._running[job.id]
            self._jobs_ended += 1
            self._abort_requested.discard(job.id)
            if not self._stopping:
                self._fill_slots()
            self._changed.set()
        self.jobs_run += 1
        releases = job.lock is not None or outcome.status is JobStatus.TODO
        self._completer.add(outcome, releases=releases)

    def _failure_outcome(
        self, task: Task | None, job: Job, exc: BaseException, error: str
    ) -> Outcome:
        """What a job that raised ``exc`` becomes: aborted (it was asked to stop), retried
        (its task's retry strategy says so), or failed."""
        if job.id in self._abort_requested:
            logger.warning(
                "Job %d (%s) aborted: %r", job.id, job.task_name, exc, extra=_log_extra(job)
            )
            return Outcome(job.id, JobStatus.ABORTED, f"Aborted on request.\n{error}")
        delay = task.retry_delay(job.attempts, exc) if task else None
        if delay is not None:
            logger.warning(
                "Job %d (%s) failed on attempt %d, retrying in %.1f s: %r",
                job.id,
                job.task_name,
                job.attempts,
                delay,
                exc,
                extra=_log_extra(job),
            )
            return Outcome.retry(job.id, error, delay)
        logger.error(
            "Job %d (%s) failed: %r",
            job.id,
            job.task_name,
            exc,
            exc_info=exc,
            extra=_log_extra(job),
        )
        return Outcome(job.id, JobStatus.FAILED, error)

    async def _call(self, task: Task, job: Job) -> None:
        args: tuple[Any, ...] = ()
        if task.pass_context:
            args = (
                JobContext(
                    job=job,
                    app=self.app,
                    worker_name=self.name,
                    worker_id=self.worker_id,
                    _abort_requested=self._abort_requested,
                ),
            )
        if task.is_async:
            await task.func(*args, **job.args)
            return
        self._sync_jobs.add(job.id)
        try:
            await _in_daemon_thread(f"sqla_jobs-job-{job.id}", task.func, *args, **job.args)
        finally:
            self._sync_jobs.discard(job.id)

    def _unknown_task_message(self, job: Job) -> str:
        known = ", ".join(sorted(self.app.tasks)) or "none"
        return (
            f"Job {job.id} asks for task {job.task_name!r}, which this worker's app does not "
            f"know (registered tasks: {known}). Import the module that defines it in the app "
            "the worker runs (App(import_paths=[...]) or the module named by --app), then "
            "retry the job."
        )

    async def _wait_for_running_jobs(self) -> None:
        if not self._running:
            return
        futures = list(self._running.values())
        timeout = 1.0 if self._hurry else self.options.shutdown_timeout
        logger.info("Waiting for %d running jobs to finish", len(futures))
        _, pending = await asyncio.wait(futures, timeout=timeout)
        if pending:
            logger.warning(
                "%d jobs still running after %s s: they go back to the queue",
                len(pending),
                timeout,
            )
            self._cancel_running()
            await asyncio.wait(pending, timeout=1)

    def _cancel_running(self) -> None:
        for job_id, future in self._running.items():
            self._interrupting.add(job_id)
            self._abort_requested.add(job_id)  # sync tasks see should_abort()
            future.cancel()

    def _give_back_unstarted(self, job_ids: Iterable[int]) -> None:
        ids = list(job_ids)
        self._interrupted.extend(ids)
        self._unstarted.extend(ids)

    # -- side tasks ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Hold a LISTEN connection for new jobs and abort requests, reconnecting (with
        backoff) whenever it is lost; each time it is back, claim and look for abort requests
        at once, for what was missed meanwhile."""

        def on_notification(channel: str, payload: str) -> None:
            if channel == NOTIFY_CHANNEL:
                if payload == self._probe_payload:
                    self._probe_heard.set()
                elif self._queues is None or payload in self._queues:
                    self._news()
            elif channel == ABORT_CHANNEL:
                try:
                    job_id = int(payload)
                except ValueError:
                    logger.warning("Ignoring an abort request for job %r: not a job id", payload)
                    return
                self._request_abort(job_id)

        lost_at: float | None = None
        failures = 0

        def on_listening() -> None:
            nonlocal lost_at, failures
            if lost_at is not None:
                logger.info(
                    "LISTEN re-established after %.1f s",
                    time.monotonic() - lost_at,
                    extra={"worker": self.name, "worker_id": self.worker_id},
                )
                lost_at = None
                self._aborts_missed = True
                self._heartbeat_wake.set()
                self._news()
            failures = 0
            self._listen_settled.set()
            self._changed.set()
            if not self._probe_heard.is_set():
                self._start_side_task(self._probe_listen(listener), "sqla_jobs.listen_probe")

        listener = asyncio.current_task()
        while not self._shutting_down.is_set() and not self._notify_unusable:
            try:
                await self.app.connector.listen(
                    [NOTIFY_CHANNEL, ABORT_CHANNEL], on_notification, on_listening=on_listening
                )
            except Exception as exc:
                failures += 1
                delay = retry_delay(failures, _LISTEN_RETRY_MAX_DELAY)
                if lost_at is None:
                    lost_at = time.monotonic()
                    logger.warning(
                        "LISTEN connection lost (%s); polling every %.1f s until it is back",
                        exc,
                        self.options.polling_interval,
                        exc_info=not isinstance(exc, ConnectorError),
                    )
                else:
                    logger.debug("LISTEN still failing, retrying in %.1f s: %s", delay, exc)
                self._listen_settled.set()
                self._news()
                await wait_event(self._shutting_down, delay)

    async def _probe_listen(self, listener: asyncio.Task[Any] | None) -> None:
        """Send this worker a notification through its pool; if its LISTEN does not hear it,
        say why, stop listening and poll."""
        try:
            await self._bounded(self.manager.notify_async(NOTIFY_CHANNEL, self._probe_payload))
        except Exception as exc:
            # The connection is failing: the listener's own retries deal with it.
            logger.debug("Could not send the LISTEN probe: %s", exc)
            return
        if await wait_event(self._probe_heard, _PROBE_TIMEOUT) or self._shutting_down.is_set():
            return
        self._notify_unusable = True
        logger.warning(
            "This worker's LISTEN hears no notification (a NOTIFY it sent through its own "
            "connections did not arrive within %.0f s): PgBouncer in transaction or statement "
            "pooling mode takes LISTEN but forwards no notification. Polling every %.1f s "
            "instead. Connect the worker to PostgreSQL directly (or through PgBouncer in "
            "session mode) to be woken at once, or pass listen_notify=False "
            "(--no-listen-notify) to skip LISTEN.",
            _PROBE_TIMEOUT,
            self.options.polling_interval,
            extra={"worker": self.name, "worker_id": self.worker_id},
        )
        if listener is not None:
            await cancel_and_wait(listener, _SIDE_TASKS_STOP_TIMEOUT)

    async def _bounded(self, statement: Awaitable[T]) -> T:
        """``await statement``, for at most ``database_timeout`` seconds (`TimeoutError`)."""
        return await within(self.options.database_timeout, statement)

    def _start_side_task(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        task.add_done_callback(self._side_task_done)

    def _side_task_done(self, task: asyncio.Task[Any]) -> None:
        """A side task that ends with an unexpected error stops the worker, loudly: a worker
        that heartbeats but records no outcome, or runs jobs while looking dead, is worse
        than one that stops and is restarted by its supervisor."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        name = task.get_name().removeprefix("sqla_jobs.")
        logger.critical(
            "The worker's %s failed; stopping the worker",
            name,
            exc_info=error,
            extra={"worker": self.name, "worker_id": self.worker_id},
        )
        if self._failure is None:
            self._failure = (name, error)
        if not self._stopping:
            self.stop()

    def _request_abort(self, job_id: int) -> None:
        """Someone asked to abort this job (NOTIFY, or the heartbeat's poll): stop it if this
        worker holds it. Asking twice changes nothing."""
        if job_id in self._ready:
            self._abort_requested.add(job_id)  # _fill_slots records it aborted
            return
        future = self._running.get(job_id)
        if future is not None and job_id not in self._abort_requested:
            self._abort_requested.add(job_id)
            # Sync tasks see should_abort() and the job ends when they return: their thread
            # cannot be interrupted. Async tasks get CancelledError at their next await;
            # call_soon: after the job's first step, so that _run_job is inside its try and
            # records the outcome.
            if job_id not in self._sync_jobs:
                asyncio.get_running_loop().call_soon(future.cancel, ABORT_CHANNEL)

    async def _heartbeat(self) -> None:
        """Every heartbeat_interval, record that this worker is alive, then look after jobs
        (`_look_after_jobs`); the first look is at once, at start. Woken early when LISTEN
        comes back, to look for abort requests missed meanwhile."""
        await self._look_after_jobs()
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.options.heartbeat_interval
        while not self._shutting_down.is_set():
            await wait_event(self._heartbeat_wake, next_beat - loop.time())
            self._heartbeat_wake.clear()
            if self._shutting_down.is_set():
                return
            if self._aborts_missed:
                self._aborts_missed = False
                await self._look_for_aborts()
            if loop.time() < next_beat:
                continue
            next_beat = loop.time() + self.options.heartbeat_interval
            try:
                if not await self._bounded(self.manager.heartbeat_async(self.worker_id)):
                    await self._register_again()
            except Exception as exc:
                logger.warning(
                    "Heartbeat failed: %s",
                    describe_error(exc, self.options.database_timeout),
                    exc_info=not isinstance(exc, (JobsError, TimeoutError)),
                )
                self._recovery_not_before = time.monotonic() + self.options.stalled_timeout
                continue
            await self._look_after_jobs()

    async def _look_for_aborts(self) -> None:
        try:
            for job_id in await self._bounded(self.manager.aborting_job_ids_async(self.worker_id)):
                self._request_abort(job_id)
        except Exception as exc:
            error = not isinstance(exc, (JobsError, TimeoutError))
            logger.warning(
                "Could not look for abort requests: %s",
                describe_error(exc, self.options.database_timeout),
                exc_info=error,
            )

    async def _look_after_jobs(self) -> None:
        """Abort this worker's jobs marked aborting (so that aborts reach a worker that does
        not hear NOTIFY, or missed one), then recover the jobs of stalled workers."""
        await self._look_for_aborts()
        if time.monotonic() < self._recovery_not_before or self._shutting_down.is_set():
            return
        try:
            await self._recover_stalled_jobs()
        except (JobsError, TimeoutError) as exc:
            logger.warning(
                "Could not look for stalled jobs: %s",
                describe_error(exc, self.options.database_timeout),
            )
        except Exception:
            # Never let it end the heartbeat: a worker that stops heartbeating looks dead.
            logger.exception("Looking for stalled jobs failed")

    async def _recover_stalled_jobs(self) -> None:
        """Recover the running jobs of workers that stopped heartbeating (killed, lost) and
        remove those workers; every live worker does this, each stalled job goes to one."""
        timeout = self.options.stalled_timeout
        recovered = await self._bounded(
            self.manager.recover_stalled_jobs_async(
                worker_id=self.worker_id,
                worker_name=self.name,
                stalled_timeout=timeout,
                strategies={name: task.retry for name, task in self.app.tasks.items()},
            )
        )
        for item in recovered:
            job, stalled = item.job, item.stalled
            logger.warning(
                "Job %d (%s) recovered from a stalled worker: %s. %s",
                job.id,
                job.task_name,
                item.status.value,
                item.error,
                extra={
                    **_log_extra(job),
                    "status": item.status.value,
                    "stalled_worker": stalled.worker_name,
                    "stalled_worker_id": stalled.worker_id,
                    "worker": self.name,
                    "worker_id": self.worker_id,
                },
            )
        if any(item.status is JobStatus.TODO for item in recovered):
            self._news()
        for row in await self._bounded(
            self.manager.delete_stalled_workers_async(
                worker_id=self.worker_id, stalled_timeout=timeout
            )
        ):
            logger.warning(
                "Removed stalled worker %r (id %d, pid %d on %s): no heartbeat for %.0f s",
                row["name"],
                row["id"],
                row["pid"],
                row["hostname"],
                row["heartbeat_age"],
                extra={
                    "stalled_worker": row["name"],
                    "stalled_worker_id": row["id"],
                    "worker": self.name,
                    "worker_id": self.worker_id,
                },
            )

    async def _register_again(self) -> None:
        """The heartbeat found this worker's row gone: another worker judged it stalled (it
        had not heartbeated for stalled_timeout seconds) and recovered its running jobs."""
        logger.error(
            "Worker %s (id %d) was declared stalled by another worker, which recovered any "
            "job it was running: such jobs may run twice. Registering again; if this repeats, "
            "raise stalled_timeout above the longest pause this worker can have.",
            self.name,
            self.worker_id,
            extra={"worker": self.name, "worker_id": self.worker_id},
        )
        await self._bounded(
            self.manager.reregister_worker_async(
                self.worker_id,
                name=self.name,
                queues=self._queues,
                concurrency=self.options.concurrency,
            )
        )

    @contextlib.contextmanager
    def _signal_handlers(self) -> Any:
        if not self.options.install_signal_handlers or (
            threading.current_thread() is not threading.main_thread()
        ):
            yield
            return
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


class _UnknownTask(Exception):
    pass


async def _in_daemon_thread(name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a sync task in a thread of its own.

    A daemon thread, unlike a thread pool's: a sync job that outlives the shutdown timeout
    (its job is back in the queue by then) does not keep the process from exiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = context.run(func, *args, **kwargs)
        except BaseException as exc:
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # The loop is gone if the worker stopped (and its host closed the loop) first.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def describe_error(exc: BaseException, timeout: float) -> str:
    """An error for a log line; a timeout says how long it waited."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(exc)


def _by_priority(job: Job) -> int:
    return -job.priority


def _log_extra(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "task": job.task_name, "queue": job.queue, "attempt": job.attempts}
