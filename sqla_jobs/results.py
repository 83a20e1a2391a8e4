"""Job results: what a job's result is (or why there is none), and waiting for a job to finish.

A waiter that can listen (an async connector) LISTENs on `FINISHED_CHANNEL` first, then
marks the job ``awaited`` and reads it in one statement (`ops.await_job`): a finish committed
before the mark is seen by the read, one committed after it is notified by the triggers of
revision 0009 to a connection already listening, so no finish is missed. Finishes that nobody
waits for notify nothing. Without LISTEN (a sync connector, the sync form, or a listening
connection that failed) the waiter reads the job with backoff: 10 ms, doubling to 0.5 s.
Every wait is bounded by its timeout.

The waits of one connector that overlap in time (a web app's requests each waiting for a
job, ``asyncio.gather`` over many jobs) share one listening connection (`_SharedListener`):
opened by the first, handed each notification by job id, closed when the last one ends. A
thousand waits cost one connection, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from . import operations as ops
from . import queries
from ._aio import cancel_and_wait
from .connectors.base import BaseConnector
from .errors import JobNotFound, ResultUnavailable, WaitTimeout
from .jobs import Job
from .queries import Statements
from .statuses import FINISHED_CHANNEL, JobStatus

logger = logging.getLogger("sqla_jobs.results")

#: The first pause between two reads of a job waited for without LISTEN; it doubles up to
#: `POLL_MAX`.
POLL_FIRST = 0.01
POLL_MAX = 0.5
#: While listening, the job is read again this often all the same: a notification lost with
#: a connection that vanished without a word (no error to end the listener) costs this much.
LISTENING_RECHECK = 2.0
#: How long the listener gets to stop when the wait is over.
_LISTENER_STOP = 1.0

#: Whether a task stores its results: True, False, or None (not a task this app knows).
StoresResult = Callable[[str], bool | None]


def check_timeout(timeout: object) -> float:
    """``timeout`` as seconds, or a clear error: every wait has a bound."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"timeout must be a number of seconds (e.g. timeout=30), not {timeout!r}: every "
            "wait has a bound."
        )
    if not (timeout >= 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be 0 or more seconds (and finite), not {timeout!r}")
    return float(timeout)


def backoff(delay: float) -> float:
    """The pause after ``delay`` between two reads of a job waited for without LISTEN."""
    return min(delay * 2, POLL_MAX)


def result_of(job: Job, stores_result: bool | None) -> Any:
    """The result of ``job``, or `ResultUnavailable` saying why there is none.
    ``stores_result``: whether its task stores results (None: unknown to this app)."""
    status = job.status
    if status is JobStatus.SUCCEEDED:
        if job.result is None and stores_result is False:
            raise ResultUnavailable(
                f"Job {job.id} ({job.task_name}) succeeded, but its task is declared with "
                "store_result=False, so its return value was not stored. Declare it with "
                "store_result=True (the default) for the results of its next jobs.",
                job_id=job.id,
                job=job,
            )
        return job.result
    if not status.is_finished:
        raise ResultUnavailable(
            f"Job {job.id} ({job.task_name}) has not finished yet (status {status.value}): "
            "it has no result. Wait for it with job_manager.wait_for(job_id, timeout=...).",
            job_id=job.id,
            job=job,
        )
    if status is JobStatus.FAILED:
        why = f"failed: {_last_line(job.last_error)}"
    elif status is JobStatus.CANCELLED:
        why = "was cancelled before it could succeed"
    else:
        why = "was aborted on request"
    raise ResultUnavailable(
        f"Job {job.id} ({job.task_name}) {why}. Only a job that succeeded has a result; "
        "its error is in job.last_error (the job is on this exception's .job), and "
        "job_manager.retry_job(job_id) runs it again.",
        job_id=job.id,
        job=job,
    )


def _last_line(error: str | None) -> str:
    """The last line of a job's error (a traceback ends with the exception)."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else "no error was recorded"


def get_result(job_id: int, stores_result: StoresResult) -> ops.Operation[Any]:
    """The operation behind `JobManager.get_result`."""
    try:
        job = yield from ops.get_job(job_id)
    except JobNotFound as exc:
        raise ResultUnavailable(
            f"No job with id {job_id}, so no result: it never existed, or it was deleted "
            "with its result (prune_jobs, delete_job, a worker's delete_jobs option).",
            job_id=job_id,
        ) from exc
    return result_of(job, stores_result(job.task_name))


def await_job(job_id: int) -> ops.Operation[Job]:
    """Mark the job as awaited (its finish will be notified) and read it; a finished job is
    read without being marked. `JobNotFound` if there is none."""
    rows: list[dict[str, Any]] = yield ops.Fetch(queries.await_job, {"job_id": job_id})
    if rows:
        return Job.from_row(rows[0])
    return (yield from ops.get_job(job_id))


def _timed_out(job_id: int, timeout: float, job: Job) -> WaitTimeout:
    return WaitTimeout(
        f"Job {job_id} ({job.task_name}) did not finish within {timeout:g} s (it is "
        f"{job.status.value}); it may still finish. Wait longer (timeout=...), or look at it "
        "with job_manager.get_job(job_id).",
        job_id=job_id,
        timeout=timeout,
        job=job,
    )


def wait_for(connector: BaseConnector, statements: Statements, job_id: int, timeout: float) -> Job:
    """The job once finished, read with backoff (the sync form: no LISTEN)."""
    deadline = time.monotonic() + check_timeout(timeout)
    delay = POLL_FIRST
    while True:
        job = ops.run(connector, ops.get_job(job_id), statements)
        if job.status.is_finished:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(job_id, timeout, job)
        time.sleep(min(delay, remaining))
        delay = backoff(delay)


class _SharedListener:
    """One LISTEN on `FINISHED_CHANNEL` for the overlapping waits of one connector on one
    event loop: each wait `join`s it for its job and `leave`s it when it ends; the last to
    leave stops it. If its connection fails, the listener task ends and every wait sharing
    it reads its job with backoff; the next wait to come starts a new listener."""

    def __init__(self, connector: BaseConnector, key: tuple[int, int]) -> None:
        self._key = key
        self.listening = asyncio.Event()
        #: The events of the waits, by the job id they wait for (the notification's payload).
        self._waits: dict[str, set[asyncio.Event]] = {}
        self._count = 0
        self.task: asyncio.Task[Any] = asyncio.ensure_future(
            connector.listen([FINISHED_CHANNEL], self._notified, on_listening=self.listening.set)
        )
        self.task.add_done_callback(self._ended)

    @classmethod
    def join(cls, connector: BaseConnector, job_id: int) -> tuple[_SharedListener, asyncio.Event]:
        """The listener to share (started if none runs) and the event a notification of
        ``job_id`` sets."""
        key = (id(connector), id(asyncio.get_running_loop()))
        shared = _listeners.get(key)
        if shared is None:
            shared = _listeners[key] = cls(connector, key)
        event = asyncio.Event()
        shared._waits.setdefault(str(job_id), set()).add(event)
        shared._count += 1
        return shared, event

    async def leave(self, job_id: int, event: asyncio.Event) -> None:
        waits = self._waits.get(str(job_id))
        if waits is not None:
            waits.discard(event)
            if not waits:
                del self._waits[str(job_id)]
        self._count -= 1
        if self._count:
            return
        self._forget()  # a wait that comes now starts a listener of its own
        if not await cancel_and_wait(self.task, _LISTENER_STOP):
            logger.warning("The listener of wait_for did not stop; left to end")
        _retrieve(self.task)

    def _notified(self, channel: str, payload: str) -> None:
        for event in self._waits.get(payload, ()):
            event.set()

    def _ended(self, task: asyncio.Task[Any]) -> None:
        # Its connection failed (or it was stopped): no wait may join it any more.
        self._forget()

    def _forget(self) -> None:
        if _listeners.get(self._key) is self:
            del _listeners[self._key]


#: The running shared listeners, by (connector, event loop) identity.
_listeners: dict[tuple[int, int], _SharedListener] = {}


async def wait_for_async(
    connector: BaseConnector,
    statements: Statements,
    job_id: int,
    timeout: float,  # noqa: ASYNC109 (the bound of the whole wait, as in the sync form)
) -> Job:
    """The job once finished: woken by NOTIFY where the connector can listen, else read
    with backoff."""
    deadline = time.monotonic() + check_timeout(timeout)
    if not connector.can_run_worker:
        return await _poll(connector, statements, job_id, timeout, deadline)
    shared, finished = _SharedListener.join(connector, job_id)
    listener = shared.task
    try:
        ready = asyncio.ensure_future(shared.listening.wait())
        try:
            await asyncio.wait(
                {listener, ready},
                timeout=max(deadline - time.monotonic(), 0.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if not shared.listening.is_set() or listener.done():
            _log_listener_failure(listener, job_id)
            return await _poll(connector, statements, job_id, timeout, deadline)
        job = await ops.run_async(connector, await_job(job_id), statements)
        while not job.status.is_finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(job_id, timeout, job)
            if listener.done():  # the listening connection failed: read with backoff
                _log_listener_failure(listener, job_id)
                return await _poll(connector, statements, job_id, timeout, deadline)
            await _first_of(finished, listener, min(remaining, LISTENING_RECHECK))
            finished.clear()
            job = await ops.run_async(connector, ops.get_job(job_id), statements)
        return job
    finally:
        await shared.leave(job_id, finished)


async def _first_of(event: asyncio.Event, listener: asyncio.Future[Any], seconds: float) -> None:
    """Until ``event`` is set, ``listener`` ends, or ``seconds`` pass."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, listener}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _poll(
    connector: BaseConnector,
    statements: Statements,
    job_id: int,
    timeout: float,  # noqa: ASYNC109 (for the message; the deadline bounds the wait)
    deadline: float,
) -> Job:
    delay = POLL_FIRST
    while True:
        job = await ops.run_async(connector, ops.get_job(job_id), statements)
        if job.status.is_finished:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(job_id, timeout, job)
        await asyncio.sleep(min(delay, remaining))
        delay = backoff(delay)


def _log_listener_failure(listener: asyncio.Future[Any], job_id: int) -> None:
    if listener.done() and not listener.cancelled() and listener.exception() is not None:
        logger.warning(
            "wait_for(%d) could not listen (%s); reading the job with backoff instead",
            job_id,
            listener.exception(),
            extra={"job_id": job_id},
        )


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of the listener (no "exception was never retrieved")."""
    if task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
    else:
        task.add_done_callback(lambda done: done.cancelled() or done.exception())


__all__ = [
    "LISTENING_RECHECK",
    "POLL_FIRST",
    "POLL_MAX",
    "StoresResult",
    "await_job",
    "backoff",
    "check_timeout",
    "get_result",
    "result_of",
    "wait_for",
    "wait_for_async",
]
