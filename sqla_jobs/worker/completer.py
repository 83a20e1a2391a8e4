"""The completer: writes the outcomes of jobs in batches, all successes in one statement,
while the next jobs already run; a failed write is kept and tried again, with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._aio import within
from ..errors import ConnectorError
from ..statuses import JobStatus
from ._common import WorkerState, describe_error, logger
from .outcomes import Outcome

_MAX_FLUSH = 5_000


class Completer:
    """Collects outcomes and writes them in batches: one statement for all successes, one for
    everything else. Never blocks the jobs: they hand over an outcome and go."""

    def __init__(self, state: WorkerState, on_release: Callable[[], None]) -> None:
        self._state = state
        self._database = state.database
        self._timeout = state.options.database_timeout
        delete_jobs = state.options.delete_jobs
        self._delete_succeeded = delete_jobs in ("successful", "always")
        self._delete_failed = delete_jobs == "always"
        self._on_release = on_release
        self._releases = False
        self._succeeded: list[Outcome] = []
        self._others: list[Outcome] = []
        self._pending = asyncio.Event()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def backlog(self) -> int:
        return len(self._succeeded) + len(self._others)

    def add(self, outcome: Outcome, *, releases: bool) -> None:
        """``releases``: writing this outcome may make another job runnable."""
        self._releases = self._releases or releases
        if outcome.status is JobStatus.SUCCEEDED:
            self._succeeded.append(outcome)
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
        return [outcome.job_id for outcome in (*self._succeeded, *self._others)]

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
                delay = self._state.retry_delay(failures)
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

    async def _write(self, succeeded: list[Outcome], others: list[Outcome]) -> None:
        if succeeded:
            # Results are sent only when some job of the batch returned one: tasks that return
            # None cost the statement nothing more.
            with_results = any(outcome.result is not None for outcome in succeeded)
            await self._database.finish_succeeded(
                self._state.worker_id,
                [outcome.job_id for outcome in succeeded],
                [outcome.attempt for outcome in succeeded],
                delete=self._delete_succeeded,
                results=[outcome.result for outcome in succeeded] if with_results else None,
            )
        if others:
            await self._database.finish(self._state.worker_id, others)
            if self._delete_failed:
                await self._database.delete_jobs(
                    self._state.worker_id, (o for o in others if o.status is not JobStatus.TODO)
                )

    def _restore(self, succeeded: list[Outcome], others: list[Outcome], releases: bool) -> None:
        self._succeeded[:0] = succeeded
        self._others[:0] = others
        self._releases = self._releases or releases

    async def wait_idle(self) -> None:
        await self._idle.wait()
