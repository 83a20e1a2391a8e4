"""The periodic role of a worker: `PeriodicDeferrer` defers the ticks of periodic tasks as
they fall due (the schedules themselves: `sqla_jobs.periodic`)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable

from .._aio import wait_event, within
from ..errors import ConnectorError
from ..periodic import KEEP_DEFERS, MAX_DELAY, PeriodicTask, PeriodicTick, utc
from .database import WorkerDatabase

logger = logging.getLogger("sqla_jobs.periodic")

#: Seconds between two prunes of old tick records by one worker.
PRUNE_INTERVAL = 60.0


class PeriodicDeferrer:
    """Defers the ticks of periodic tasks as they fall due; one per worker.

    On start it defers each task's most recent tick if that tick is at most ``max_delay``
    seconds old (a restart loses no tick and replays no backlog); then it sleeps until the
    next tick of any task and defers every tick that fell due, all in one statement. If the
    database cannot be reached it retries every second, still deferring ticks up to
    ``max_delay`` old. ``clock`` (unix seconds) is replaceable for tests.
    """

    def __init__(
        self,
        database: WorkerDatabase,
        periodic_tasks: Iterable[PeriodicTask],
        *,
        max_delay: float = MAX_DELAY,
        keep: int = KEEP_DEFERS,
        clock: Callable[[], float] = time.time,
        database_timeout: float | None = None,
    ) -> None:
        self._database = database
        # Each statement's bound (the worker's database_timeout): a hung server cannot hang
        # the deferrer, nor the worker's stop, which waits for its statement in progress.
        self._database_timeout = database_timeout
        self._tasks = list(periodic_tasks)
        self._max_delay = max_delay
        self._keep = keep
        self._clock = clock
        self._last_prune = -math.inf
        #: Rounds that reached the database or had nothing to defer (tests wait on it).
        self.rounds = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Defer ticks until ``stop`` is set; a statement in progress then finishes."""
        if not self._tasks:
            return
        now = self._clock()
        # Ticks up to `done[i]` count as deferred. One second before the latest tick (ticks
        # fall on whole seconds): the first round defers that tick, and none before it, if it
        # is at most max_delay old.
        oldest = now - self._max_delay
        done = [max(p.latest_tick(now) - 1.0, oldest) for p in self._tasks]
        while not stop.is_set():
            until = self._clock()
            if await self._defer_due(done, until):
                self.rounds += 1
                done = [max(d, until) for d in done]
                wake_at = min(p.next_tick(d) for p, d in zip(self._tasks, done, strict=True))
                delay = wake_at - self._clock()
            else:
                delay = 1.0
            if delay > 0:
                await wait_event(stop, delay)

    async def _defer_due(self, done: list[float], until: float) -> bool:
        """Defer the ticks in (done, until], none older than ``max_delay``; False if the
        database could not be reached (the round is to be retried)."""
        oldest = until - self._max_delay
        ticks: list[PeriodicTick] = []
        for periodic, after in zip(self._tasks, done, strict=True):
            if after < oldest and periodic.next_tick(after) < oldest:
                logger.warning(
                    "Periodic task %r: ticks before %s are more than %.0f s old and are skipped",
                    periodic.task.name,
                    utc(oldest).isoformat(),
                    self._max_delay,
                    extra={"task": periodic.task.name, "periodic_id": periodic.periodic_id},
                )
            due = periodic.ticks_between(max(after, oldest), until)
            ticks.extend(periodic.tick(timestamp) for timestamp in due)
        if not ticks:
            return True
        try:
            deferred = await within(self._database_timeout, self._database.defer_periodic(ticks))
        except (ConnectorError, TimeoutError) as exc:
            logger.warning(
                "Could not defer periodic jobs, retrying in 1 s: %s",
                str(exc) or f"no answer within {self._database_timeout:g} s",
            )
            return False
        except Exception:
            # Not expected (arguments are checked at declaration); never stop deferring.
            logger.exception("Deferring periodic jobs failed, retrying in 1 s")
            return False
        for tick in ticks:
            self._log(tick, deferred)
        await self._prune(until)
        return True

    def _log(self, tick: PeriodicTick, deferred: dict[tuple[str, str, int], int | None]) -> None:
        extra = {
            "task": tick.spec.task_name,
            "periodic_id": tick.periodic_id,
            "timestamp": tick.timestamp,
            "queue": tick.spec.queue,
        }
        tick_time = utc(tick.timestamp).isoformat()
        if tick.key not in deferred:
            logger.debug(
                "Tick %s of periodic task %r was deferred already (by another worker)",
                tick_time,
                tick.spec.task_name,
                extra=extra,
            )
        elif (job_id := deferred[tick.key]) is None:
            logger.warning(
                "Tick %s of periodic task %r deferred no job: a job with queueing lock %r is "
                "still waiting",
                tick_time,
                tick.spec.task_name,
                tick.spec.queueing_lock,
                extra=extra,
            )
        else:
            logger.info(
                "Deferred job %d of periodic task %r for tick %s",
                job_id,
                tick.spec.task_name,
                tick_time,
                extra={**extra, "job_id": job_id},
            )

    async def _prune(self, now: float) -> None:
        if now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        # Records of ticks older than any worker would defer are of no more use to the
        # uniqueness check; twice the delay leaves room for clocks that disagree.
        before = int(now - 2 * self._max_delay)
        try:
            await within(
                self._database_timeout,
                self._database.prune_periodic_defers(keep=self._keep, before=before),
            )
        except (ConnectorError, TimeoutError) as exc:
            logger.warning(
                "Could not prune old periodic tick records: %s",
                str(exc) or f"no answer within {self._database_timeout:g} s",
            )
