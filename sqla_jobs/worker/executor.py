"""The executor: runs claimed jobs in their slots, turns how each ended into an outcome for the
completer, and stops the jobs asked to abort.

A slot is an asyncio task that runs ready jobs one after another, as a thread of a pool does:
an async task's coroutine runs in the slot's task (each job in its own copy of the worker's
context), a sync task in a thread of its own that the slot awaits. A job that does not wait
for anything (most short jobs) costs no task and no turn of the event loop of its own: the
slot goes on to the next job at once. ``concurrency`` bounds the slots."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidJobResult, JobTimeout
from ..jobs import Job, dump_result
from ..statuses import JobStatus
from ..task_controls import CancelJob, Snooze
from ._common import ABORT_CHANNEL, WorkerState, logger
from .completer import Completer
from .options import JobContext
from .outcomes import Outcome

if TYPE_CHECKING:
    from ..metrics import JobCounts
    from ..tasks import Task

_MAX_ERROR_LENGTH = 20_000
# A sync task asked to stop (should_abort()) at the end of the shutdown gets this long to
# return before its job counts as still running in its thread.
_THREAD_GRACE = 1.0
#: A sync task past its timeout sees should_abort() turn true, and gets this long to return
#: before its job is recorded as timed out with its thread still running.
TIMEOUT_GRACE = 1.0


class Executor:
    """Holds the jobs this worker claimed: ``ready`` (claimed ahead, in claim order) and
    ``running``; starts ready ones while slots are free."""

    def __init__(
        self,
        state: WorkerState,
        completer: Completer,
        on_change: Callable[[], None],
        counts: JobCounts | None = None,
    ) -> None:
        self._state = state
        # What the worker ran, for its metrics; None: not counted.
        self._counts = counts
        self._tracing = state.app.job_manager.tracing
        self._traced = False
        self._app = state.app
        self._concurrency = state.options.concurrency
        self._completer = completer
        # A slot freed or jobs started: the fetcher may claim.
        self._on_change = on_change
        #: Running jobs, and the slot (an asyncio task) running each.
        self.running: dict[int, asyncio.Task[None]] = {}
        self.ready: dict[int, Job] = {}
        # The slots' tasks; of those, how many are about to take a ready job (opened, or
        # between two jobs), not running one.
        self._slots: set[asyncio.Task[None]] = set()
        self._taking = 0
        # Read from task threads through JobContext.should_abort(); set membership is atomic.
        self.abort_requested: set[int] = set()
        # Also read by should_abort(): jobs asked to stop though no one asked to abort them
        # (past their task's timeout, or the worker stops); kept while their thread runs.
        self.stop_asked: set[int] = set()
        # Sync jobs past their timeout and its grace whose thread still runs: the thread's
        # future and when it started.
        self._outliving: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._sync_jobs: set[int] = set()  # running jobs of sync tasks
        # Their threads; a thread removes itself when its task returns, and may outlive its
        # job (a task that ignores should_abort() at a stop).
        self._threads: dict[int, threading.Thread] = {}
        # Jobs cancelled by the shutdown (not by an abort request, nor by their own code).
        self._interrupting: set[int] = set()
        # Jobs this worker will not run to their end: they go back to the queue at the stop.
        self.interrupted: list[int] = []
        self.unstarted: list[int] = []  # of those, claimed ahead and never started
        self.jobs_run = 0
        self.jobs_started = 0
        self.jobs_ended = 0
        #: The context each job starts from, a fresh copy per job: the worker's own (set when
        #: it starts running). A job's slot is refilled from the job that ends, and a task
        #: inherits the context it is created in: without a copy of this one, what a job set
        #: in a context variable (a logging context, a tenant) was seen by the next job.
        self.context = contextvars.copy_context()

    @property
    def held(self) -> int:
        """Jobs claimed and not ended: running or ready."""
        return len(self.running) + len(self.ready)

    # -- claimed jobs ----------------------------------------------------------------------------

    def add_claimed(self, jobs: list[Job]) -> None:
        """Jobs a claim brought: ready to start, by priority, then in claim order."""
        # Whether to trace is decided once a claim (an SDK configured since takes effect at
        # the next): the check costs more than the rest of a short job's bookkeeping.
        self._traced = self._tracing.tracer() is not None
        ready = self.ready
        if ready and jobs and jobs[0].priority > next(reversed(ready.values())).priority:
            # Jobs of higher priority than some claimed ahead by an earlier claim start first;
            # the sort is stable: claim order within a priority.
            merged = sorted([*ready.values(), *jobs], key=_by_priority)
            ready.clear()
            ready.update((job.id, job) for job in merged)
        else:
            for job in jobs:
                ready[job.id] = job
        self.fill_slots()

    def fill_slots(self) -> None:
        """Open a slot for the ready jobs if none is about to take one."""
        if not self._taking:
            self._open_slots(1)

    def _open_slots(self, wanted: int) -> None:
        """Open up to ``wanted`` slots, within the concurrency, for ready jobs no slot is
        about to take."""
        wanted = min(wanted, self._concurrency - len(self._slots), len(self.ready) - self._taking)
        if wanted <= 0 or self._state.stopping:
            return
        loop = asyncio.get_running_loop()
        for _ in range(wanted):
            self._slots.add(loop.create_task(self._slot(), name="sqla_jobs.slot"))
        self._taking += wanted

    def _job_waits(self) -> None:
        """A job started waiting (its first ``await`` that suspends): its slot is busy, so
        ready jobs need other slots. As many open as are busy (doubling, up to the
        concurrency): jobs that wait get their slots within a few turns of the event loop,
        jobs that do not wait share one slot, in one task."""
        self._open_slots(max(1, len(self._slots) - self._taking))

    async def _slot(self) -> None:
        """Run ready jobs, one after another, until none is left (or the worker stops)."""
        me = asyncio.current_task()
        assert me is not None
        taking = True  # counted in self._taking: not running a job
        next_turn = time.monotonic() + _MAX_TURN
        try:
            while self.ready and not self._state.stopping:
                job_id = next(iter(self.ready))
                job = self.ready.pop(job_id)
                if job_id in self.abort_requested:
                    # Asked to abort before it started: it never runs.
                    self.abort_requested.discard(job_id)
                    self._completer.add(
                        Outcome(
                            job_id,
                            job.attempts,
                            JobStatus.ABORTED,
                            "Aborted on request before it started.",
                        ),
                        releases=_may_release(job),
                    )
                    continue
                self.jobs_started += 1
                self.running[job_id] = me
                taking = False
                self._taking -= 1
                # The job's first step, in its own copy of the worker's context: a job that
                # waits for nothing ends here, without a task or a turn of the loop.
                context = self.context.copy()
                steps = self._run_job(job)
                try:
                    awaited = context.run(steps.send, None)
                except StopIteration:
                    pass
                else:
                    self._job_waits()
                    await _Resumed(steps, context, awaited)
                if me.cancelling():
                    # Its job was aborted (or cancelled its own task): a cancellation must
                    # not reach the next job, so a fresh slot takes over.
                    break
                taking = True
                self._taking += 1
                if time.monotonic() >= next_turn:
                    # Jobs that never wait would hold the event loop until the last ready
                    # one ends: let the fetcher, the completer and the heartbeat run.
                    await asyncio.sleep(0)
                    next_turn = time.monotonic() + _MAX_TURN
        finally:
            if taking:
                self._taking -= 1
            self._slots.discard(me)
        self.fill_slots()

    def give_back_ready(self) -> None:
        """Jobs claimed ahead never start: they go back to the queue (with their attempt)."""
        self.give_back_unstarted(self.ready)
        self.ready.clear()

    def give_back_unstarted(self, job_ids: Iterable[int]) -> None:
        ids = list(job_ids)
        self.interrupted.extend(ids)
        self.unstarted.extend(ids)

    # -- aborts and stops ------------------------------------------------------------------------

    def request_abort(self, job_id: int) -> None:
        """Someone asked to abort this job (NOTIFY, or the heartbeat's poll): stop it if this
        worker holds it. Asking twice changes nothing."""
        if job_id in self.ready:
            self.abort_requested.add(job_id)  # fill_slots records it aborted
            return
        future = self.running.get(job_id)
        if future is not None and job_id not in self.abort_requested:
            self.abort_requested.add(job_id)
            # Sync tasks see should_abort() and the job ends when they return: their thread
            # cannot be interrupted. Async tasks get CancelledError at their next await;
            # call_soon: after the job's first step, so that _run_job is inside its try and
            # records the outcome.
            if job_id not in self._sync_jobs:
                asyncio.get_running_loop().call_soon(self._cancel_slot_of, job_id)

    def _cancel_slot_of(self, job_id: int) -> None:
        """Cancel the slot running ``job_id``, if it still does: the job gets the
        CancelledError."""
        slot = self.running.get(job_id)
        if slot is not None:
            slot.cancel(ABORT_CHANNEL)

    def cancel_running(self) -> None:
        """Stop every running job now: async ones are cancelled, sync ones see
        should_abort(); all go back to the queue."""
        for job_id, future in self.running.items():
            self._interrupting.add(job_id)
            self.abort_requested.add(job_id)
            # Sync tasks see should_abort() for as long as their thread runs (abort_requested
            # is emptied as the job ends).
            self.stop_asked.add(job_id)
            future.cancel()

    async def wait_for_running(self, grace: float | None) -> None:
        """Let running jobs finish for ``grace`` seconds (None: for ever), then stop the
        rest."""
        if not self.running:
            return
        futures = list(self.running.values())
        logger.info("Waiting for %d running jobs to finish", len(futures))
        _, pending = await asyncio.wait(futures, timeout=grace)
        if pending:
            logger.warning(
                "%d jobs still running after %s s: they go back to the queue",
                len(pending),
                grace,
            )
            self.cancel_running()
            await asyncio.wait(pending, timeout=1)

    async def threads_still_running(self) -> list[int]:
        """Jobs handed back whose sync task still runs in its thread, after a short grace
        (they were asked to stop, through should_abort())."""
        deadline = time.monotonic() + (0.0 if self._state.hurry else _THREAD_GRACE)
        while True:
            alive = [job_id for job_id, thread in self._threads.items() if thread.is_alive()]
            if not alive or time.monotonic() >= deadline:
                return alive
            await asyncio.sleep(0.05)

    # -- one job ---------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        task = self._app.tasks.get(job.task_name)
        outcome: Outcome
        counts = self._counts
        if counts is not None:
            counts.job_started(job)
            began = time.monotonic()
        returned: Any = None
        try:
            if self._traced:  # a process span around the job (sqla_jobs.tracing)
                with self._tracing.processing(job):
                    returned = await self._call(self._runnable(task, job), job)
            elif task is None or job.args_error is not None:
                self._runnable(task, job)  # raises, saying why
            else:
                returned = await self._call(task, job)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if job.id in self._interrupting or (
                job.id not in self.abort_requested and current and current.cancelling()
            ):
                # Shutdown ran out of time (or the loop is closing): the job goes back to the
                # queue (see Worker._final_writes).
                self.interrupted.append(job.id)
                raise
            error = "".join(traceback.format_exception(exc))[-_MAX_ERROR_LENGTH:]
            if job.id in self.abort_requested:
                # Cancelled at the request of abort_job; the traceback says where.
                logger.warning("Job %d (%s) aborted", job.id, job.task_name, extra=log_extra(job))
                outcome = Outcome(
                    job.id, job.attempts, JobStatus.ABORTED, f"Aborted on request.\n{error}"
                )
            else:
                # The task raised CancelledError itself (a library's timeout, say): an error
                # like any other, not a stop of the worker.
                outcome = self._failure_outcome(task, job, exc, error)
        except _UnknownTask as exc:
            logger.error("%s", exc, extra=log_extra(job))
            outcome = Outcome(job.id, job.attempts, JobStatus.FAILED, str(exc))
        except Snooze as exc:
            outcome = self._snooze_outcome(job, exc)
        except CancelJob as exc:
            outcome = self._cancel_outcome(job, exc)
        except JobTimeout as exc:
            outliving = self._outliving.pop(job.id, None)
            if outliving is None:
                outcome = self._failure_outcome(task, job, exc, _formatted(exc))
            else:
                late = await self._outlived(task, job, exc, *outliving)
                if late is None:
                    return  # recorded already
                outcome = late
        except (Exception, SystemExit) as exc:
            # SystemExit too: one task calling sys.exit() must not stop the worker.
            outcome = self._failure_outcome(task, job, exc, _formatted(exc))
        else:
            if job.id in self.abort_requested:
                # A sync task that returned after an abort request (or an async one that
                # swallowed the cancellation): it stopped, as asked.
                outcome = Outcome(job.id, job.attempts, JobStatus.ABORTED, "Aborted on request.")
            elif returned is None or task is None or not task.store_result:
                outcome = Outcome(job.id, job.attempts, JobStatus.SUCCEEDED)
            else:
                outcome = self._success_outcome(job, returned)
        finally:
            del self.running[job.id]
            if self._state.database.parents:  # a task without a context leaves its own
                self._state.database.parents.pop(job.id, None)
            self.jobs_ended += 1
            self.abort_requested.discard(job.id)
            self._on_change()
        self.jobs_run += 1
        if counts is not None:
            counts.job_ended(job, outcome.status, time.monotonic() - began, snoozed=outcome.snoozed)
        releases = outcome.status is JobStatus.TODO or _may_release(job)
        self._completer.add(outcome, releases=releases)

    def _success_outcome(self, job: Job, returned: Any) -> Outcome:
        """A success with what the task returned as its result; a result that cannot be
        stored fails the job, saying why (its work is done: it is not retried)."""
        try:
            result = dump_result(job.id, job.task_name, returned)
        except InvalidJobResult as exc:
            logger.error("%s", exc, extra=log_extra(job))
            error = "".join(traceback.format_exception_only(exc))
            return Outcome(job.id, job.attempts, JobStatus.FAILED, error)
        return Outcome(job.id, job.attempts, JobStatus.SUCCEEDED, result=result)

    def _snooze_outcome(self, job: Job, snooze: Snooze) -> Outcome:
        """The task asked to run again later: back to the queue, its attempt given back (an
        abort request wins)."""
        if job.id in self.abort_requested:
            return Outcome(job.id, job.attempts, JobStatus.ABORTED, "Aborted on request.")
        logger.info(
            "Job %d (%s) snoozed for %g s", job.id, job.task_name, snooze.seconds,
            extra=log_extra(job),
        )  # fmt: skip
        return Outcome.snooze(job.id, job.attempts, snooze.describe(), snooze.seconds)

    def _cancel_outcome(self, job: Job, cancel: CancelJob) -> Outcome:
        """The task ended its job as cancelled (an abort request wins)."""
        if job.id in self.abort_requested:
            return Outcome(job.id, job.attempts, JobStatus.ABORTED, "Aborted on request.")
        logger.info(
            "Job %d (%s) cancelled by its task", job.id, job.task_name, extra=log_extra(job)
        )
        return Outcome(job.id, job.attempts, JobStatus.CANCELLED, cancel.describe())

    async def _outlived(
        self,
        task: Task | None,
        job: Job,
        exc: JobTimeout,
        thread: asyncio.Future[Any],
        started: float,
    ) -> Outcome | None:
        """A sync job past its timeout whose thread still runs after the grace: the thread
        cannot be interrupted, so the job keeps its slot until the thread ends (the worker
        never runs more threads than its concurrency). Its failure is recorded at once
        (returns None) when nothing can then run alongside the thread; a job to be retried,
        or one holding a lock, or one of a queue or task with a concurrency limit, stays
        running until the thread ends (returns its outcome then), or else it, the next job of
        its lock, or one job too many of its limit could start while the thread still runs."""
        error = _formatted(exc, stack_of=self._threads.get(job.id))
        retried = task is not None and task.retry_delay(job.attempts, exc) is not None
        # Under a concurrency limit held by the database, the job must count as running while
        # its thread does, or another worker could start one more than the limit.
        limited = self._state.concurrency_limited(job)
        at_once = not retried and job.lock is None and not limited
        # An abort request meanwhile must not cancel the wait for the thread: the job ends
        # aborted once the thread ends.
        self._sync_jobs.add(job.id)
        try:
            if at_once:
                outcome = self._failure_outcome(task, job, exc, error)
                self.jobs_run += 1
                if self._counts is not None:
                    self._counts.job_ended(job, outcome.status, time.monotonic() - started)
                self._completer.add(outcome, releases=_may_release(job))
            logger.warning(
                "Job %d (%s): its thread still runs past the timeout; %s until it ends",
                job.id,
                job.task_name,
                "the job keeps its slot" if at_once else "the job stays running",
                extra=log_extra(job),
            )
            await asyncio.wait((thread,))
        except asyncio.CancelledError:
            thread.cancel()  # what the thread returns or raises later is dropped
            if not at_once:
                self.interrupted.append(job.id)  # the stop hands it back, held
            raise
        finally:
            self._sync_jobs.discard(job.id)
        self.stop_asked.discard(job.id)
        if at_once:
            return None
        return self._failure_outcome(task, job, exc, error)

    def _runnable(self, task: Task | None, job: Job) -> Task:
        """``task``, if it can run ``job``; else `_UnknownTask` with the reason."""
        if task is None:
            raise _UnknownTask(self._unknown_task_message(job))
        if job.args_error is not None:
            raise _UnknownTask(_unreadable_args_message(job))
        return task

    def _failure_outcome(
        self, task: Task | None, job: Job, exc: BaseException, error: str
    ) -> Outcome:
        """What a job that raised ``exc`` becomes: aborted (it was asked to stop), retried
        (its task's retry strategy says so), or failed."""
        if job.id in self.abort_requested:
            logger.warning(
                "Job %d (%s) aborted: %r", job.id, job.task_name, exc, extra=log_extra(job)
            )
            return Outcome(job.id, job.attempts, JobStatus.ABORTED, f"Aborted on request.\n{error}")
        delay = task.retry_delay(job.attempts, exc) if task else None
        if delay is not None:
            logger.warning(
                "Job %d (%s) failed on attempt %d, retrying in %.1f s: %r",
                job.id,
                job.task_name,
                job.attempts,
                delay,
                exc,
                extra=log_extra(job),
            )
            return Outcome.retry(job.id, job.attempts, error, delay)
        logger.error(
            "Job %d (%s) failed: %r",
            job.id,
            job.task_name,
            exc,
            exc_info=exc,
            extra=log_extra(job),
        )
        return Outcome(job.id, job.attempts, JobStatus.FAILED, error)

    async def _call(self, task: Task, job: Job) -> Any:
        """Run ``task`` for ``job``; what it returned."""
        args: tuple[Any, ...] = ()
        if task.pass_context:
            # The parents the claim read (workflows); none for other jobs, at no cost.
            database = self._state.database
            parents = database.parents.pop(job.id, ()) if database.parents else ()
            if parents is None:  # the claim could not read them
                read = await self._state.bounded(database.parents_of([job.id]))
                parents = read[job.id]
            args = (
                JobContext(
                    job=job,
                    app=self._app,
                    worker_name=self._state.name,
                    worker_id=self._state.worker_id,
                    _abort_requested=self.abort_requested,
                    _stop_asked=self.stop_asked,
                    parents=parents,
                ),
            )
        timeout = task.timeout
        if task.is_async:
            if timeout is None:
                return await task.func(*args, **job.args)
            return await _async_within(timeout, job, task.func(*args, **job.args))
        self._sync_jobs.add(job.id)
        try:
            # The arguments travel bound to the function: a task's own argument may be called
            # ``name`` or ``func``.
            call = functools.partial(task.func, *args, **job.args)
            name = f"sqla_jobs-job-{job.id}"
            if timeout is None:
                return await _in_daemon_thread(self._threads, job.id, name, call)
            return await self._sync_within(timeout, job, name, call)
        finally:
            self._sync_jobs.discard(job.id)

    async def _sync_within(
        self, seconds: float, job: Job, name: str, call: Callable[[], Any]
    ) -> Any:
        """Run a sync task in its thread for ``seconds`` at most: past them it sees
        should_abort() turn true, and `JobTimeout` is raised once it returns (unless it asked
        for a snooze or a cancel), or after `TIMEOUT_GRACE` if it has not (its thread, which
        cannot be interrupted, is then left to end: see `_outlived`)."""
        job_id = job.id
        stop_asked = self.stop_asked

        def run() -> Any:
            try:
                return call()
            finally:
                stop_asked.discard(job_id)

        started = time.monotonic()
        thread = _start_daemon_thread(self._threads, job_id, name, run)
        try:
            done, _ = await asyncio.wait((thread,), timeout=seconds)
            if done:
                return thread.result()
            stop_asked.add(job_id)
            logger.warning(
                "Job %d (%s) ran past its timeout of %g s: asked to stop (should_abort())",
                job_id, job.task_name, seconds, extra=log_extra(job),
            )  # fmt: skip
            done, _ = await asyncio.wait((thread,), timeout=TIMEOUT_GRACE)
            if not done:
                self._outliving[job_id] = (thread, started)
                raise _timed_out(
                    job,
                    seconds,
                    f"it did not stop within {TIMEOUT_GRACE:g} s of being asked "
                    "(should_abort()): its thread, which cannot be interrupted, is left to end "
                    "(the traceback shows where it was)",
                )
            error = thread.exception()
            if isinstance(error, Snooze | CancelJob):
                raise error  # the task's answer to its timeout
            raise _timed_out(job, seconds, "asked to stop (should_abort()), it stopped") from error
        except asyncio.CancelledError:
            thread.cancel()  # what the thread returns or raises later is dropped
            raise
        finally:
            if thread.done():
                stop_asked.discard(job_id)

    def _unknown_task_message(self, job: Job) -> str:
        known = ", ".join(sorted(self._app.tasks)) or "none"
        return (
            f"Job {job.id} asks for task {job.task_name!r}, which this worker's app does not "
            f"know (registered tasks: {known}). Import the module that defines it in the app "
            "the worker runs (App(import_paths=[...]) or the module named by --app), then "
            "retry the job."
        )


#: Seconds a slot runs jobs that wait for nothing before it lets the event loop turn.
_MAX_TURN = 0.001


class _Resumed:
    """Awaits the rest of a job's coroutine, whose first step yielded ``awaited``, each step
    run in ``context``, the job's own: the slot's task, which awaits it, runs many jobs."""

    __slots__ = ("_awaited", "_context", "_coroutine")

    def __init__(
        self, coroutine: Coroutine[Any, Any, None], context: contextvars.Context, awaited: Any
    ) -> None:
        self._coroutine = coroutine
        self._context = context
        self._awaited = awaited

    def __await__(self) -> Generator[Any, Any, None]:
        run = self._context.run
        coroutine = self._coroutine
        awaited = self._awaited
        while True:
            try:
                sent = yield awaited
            except BaseException as exc:  # thrown into the slot (a cancellation): for the job
                step: Callable[[Any], Any] = coroutine.throw
                sent = exc
            else:
                step = coroutine.send
            try:
                awaited = run(step, sent)
            except StopIteration:
                return


class _UnknownTask(Exception):
    """A job the worker cannot start: no task of its name, or arguments it cannot read. It
    fails at once (a retry would find the same), with the reason; the worker goes on."""


def _unreadable_args_message(job: Job) -> str:
    return (
        f"Job {job.id} ({job.task_name}) was not run: {job.args_error}. sqla_jobs writes a "
        "JSON object of the task's keyword arguments; this row was written or edited another "
        f"way. Fix its args (UPDATE sqla_jobs_jobs SET args = '{{...}}' WHERE id = {job.id}) "
        "and retry it, or delete it."
    )


async def _in_daemon_thread(
    threads: dict[int, threading.Thread],
    job_id: int,
    name: str,
    call: Callable[[], Any],
) -> Any:
    """Run a sync task in a thread of its own, listed in ``threads`` while it runs.

    A daemon thread, unlike a thread pool's: a sync job that outlives the shutdown timeout
    does not keep the process from exiting (which ends it).
    """
    return await _start_daemon_thread(threads, job_id, name, call)


def _start_daemon_thread(
    threads: dict[int, threading.Thread],
    job_id: int,
    name: str,
    call: Callable[[], Any],
) -> asyncio.Future[Any]:
    """Start `_in_daemon_thread`'s thread; the future settles with what ``call`` returns or
    raises (unless it was cancelled first)."""
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
            result = context.run(call)
        except BaseException as exc:
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        finally:
            threads.pop(job_id, None)  # atomic: the loop reads the dict meanwhile
        # The loop is gone if the worker stopped (and its host closed the loop) first.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    thread = threading.Thread(target=run, name=name, daemon=True)
    threads[job_id] = thread
    thread.start()
    return future


async def _async_within(seconds: float, job: Job, coroutine: Any) -> Any:
    """Await an async task for ``seconds`` at most: past them it is cancelled, and
    `JobTimeout` is raised (unless it answered with a snooze or a cancel)."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            returned = await coroutine
    except (Snooze, CancelJob, asyncio.CancelledError):
        raise  # its answer to the timeout, or an abort or a stop of the worker
    except (Exception, SystemExit) as exc:
        if deadline.expired():
            raise _timed_out(job, seconds, "it was cancelled") from exc
        raise
    if deadline.expired():
        # It caught its cancellation and returned: it did not finish in time all the same.
        raise _timed_out(job, seconds, "it was cancelled (and returned)")
    return returned


def _timed_out(job: Job, timeout: float, what: str) -> JobTimeout:
    return JobTimeout(
        f"Job {job.id} ({job.task_name}) ran past its task's timeout of {timeout:g} s; {what}."
    )


def _formatted(exc: BaseException, stack_of: threading.Thread | None = None) -> str:
    """``exc``'s traceback as a job's error (its end, if long); with ``stack_of``, instead,
    where that thread is now (the task's own frames), as the traceback of ``exc``."""
    frame = sys._current_frames().get(stack_of.ident) if stack_of and stack_of.ident else None
    if frame is None:
        text = "".join(traceback.format_exception(exc))
    else:
        frames = [f for f in traceback.extract_stack(frame) if f.filename not in _RUNNER_FILES]
        text = "".join(
            [
                "Traceback (most recent call last):\n",
                *traceback.format_list(frames),
                *traceback.format_exception_only(exc),
            ]
        )
    return text[-_MAX_ERROR_LENGTH:]


# Where a task's thread starts: left out of the stack of a thread that outlived its timeout.
_RUNNER_FILES = frozenset({__file__, threading.__file__})


def _may_release(job: Job) -> bool:
    """Whether writing the job's end may make other jobs runnable: the next job of its lock,
    or jobs of its workflow that depend on it (which its success releases, and its failure
    too on a run-anyway edge). A draining worker claims again after writing such an end."""
    return job.lock is not None or job.workflow_id is not None


def _by_priority(job: Job) -> int:
    return -job.priority


def log_extra(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "task": job.task_name, "queue": job.queue, "attempt": job.attempts}
