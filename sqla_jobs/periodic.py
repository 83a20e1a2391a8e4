"""Periodic tasks: cron schedules whose ticks the worker defers as jobs.

Every worker of an app with periodic tasks runs a `PeriodicDeferrer`; each wakes at each tick
and tries to defer it. A tick is recorded in ``sqla_jobs_periodic_defers`` under a unique key
(task, periodic id, tick timestamp) by the same statement that writes its job, and only the
statement whose record wins writes the job: a tick runs once however many workers run, by a
database constraint rather than by timing.

Cron expressions are read by croniter, in UTC: five fields (minute hour day month weekday), or
six with seconds as the last field (``"* * * * * */10"``: every ten seconds).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._aio import wait_event, within
from .errors import ConnectorError
from .jobs import JobSpec, dump_args
from .manager import JobManager, PeriodicTick

if TYPE_CHECKING:
    from .tasks import Task

logger = logging.getLogger("sqla_jobs.periodic")

#: The keyword argument that carries the tick's time (unix seconds, UTC) to the task.
TIMESTAMP_ARGUMENT = "timestamp"
#: Seconds: a tick this old when a worker (re)starts, or after the worker could not reach the
#: database, is not deferred any more. A restart defers the tick it just missed, not a day's.
MAX_DELAY = 600.0
#: Records of past ticks kept per periodic task, to show when it last ran.
KEEP_DEFERS = 10
#: Seconds between two prunes of old tick records by one worker.
PRUNE_INTERVAL = 60.0


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class PeriodicTask:
    """A task deferred on a cron schedule: ``@app.periodic(cron=...)`` above ``@app.task``.

    ``periodic_id`` tells apart two schedules of one task (each may have its own ``kwargs``);
    each job gets ``kwargs`` plus ``timestamp``, the tick's time in unix seconds (UTC).
    """

    task: Task
    cron: str
    periodic_id: str = ""
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_cron(self.cron, self.task.name)
        _check_arguments(self.task, self.kwargs, self.periodic_id)
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this schedule in the database: (task name, periodic id)."""
        return (self.task.name, self.periodic_id)

    def with_task(self, task: Task) -> PeriodicTask:
        """The same schedule for another task object (a copy bound to another app)."""
        return dataclasses.replace(self, task=task)

    # -- tick arithmetic (pure) ------------------------------------------------------------------

    def latest_tick(self, at: float) -> int:
        """The most recent tick at or before ``at`` (unix seconds)."""
        # Ticks fall on whole seconds; croniter's previous tick is strictly before its start.
        return int(_croniter(self.cron, _utc(math.floor(at) + 1)).get_prev(float))

    def next_tick(self, after: float) -> int:
        """The first tick strictly after ``after`` (unix seconds)."""
        return int(_croniter(self.cron, _utc(after)).get_next(float))

    def ticks_between(self, after: float, until: float) -> list[int]:
        """Every tick ``t`` with ``after < t <= until``, oldest first."""
        ticks: list[int] = []
        iterator = _croniter(self.cron, _utc(after))
        while (tick := iterator.get_next(float)) <= until:
            ticks.append(int(tick))
        return ticks

    def tick(self, timestamp: int) -> PeriodicTick:
        """The job of the tick at ``timestamp``, with the task's own job options."""
        o = self.task.options
        spec = JobSpec(
            task_name=self.task.name,
            args={**self.kwargs, TIMESTAMP_ARGUMENT: timestamp},
            queue=o.queue,
            priority=o.priority,
            lock=o.lock,
            queueing_lock=o.queueing_lock,
        )
        return PeriodicTick(spec, self.periodic_id, timestamp)


def _croniter(cron: str, start: datetime.datetime) -> Any:
    """croniter, imported on first use: with dateutil it weighs some 3 MiB, which a worker of
    an app without periodic tasks does not need."""
    from croniter import croniter

    return croniter(cron, start)


def _check_cron(cron: str, task_name: str) -> None:
    usage = (
        "Use five fields (minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'), "
        "six with seconds last (e.g. '* * * * * */10': every 10 seconds), or an alias such as "
        "'@hourly'; times are UTC."
    )
    if not isinstance(cron, str):
        raise TypeError(f"cron for periodic task {task_name!r} must be a string, not {cron!r}")
    from croniter import CroniterBadDateError, CroniterError

    try:
        _croniter(cron, _utc(0)).get_next(float)
    except CroniterBadDateError:
        raise ValueError(
            f"The cron expression {cron!r} of periodic task {task_name!r} never fires (a date "
            f"that does not exist, such as 31 February). {usage}"
        ) from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"Invalid cron expression {cron!r} for periodic task {task_name!r}: {exc}. {usage}"
        ) from None


def _check_arguments(task: Task, kwargs: Mapping[str, Any], periodic_id: str) -> None:
    if not isinstance(periodic_id, str):
        raise TypeError(f"periodic_id must be a string, not {periodic_id!r}")
    if TIMESTAMP_ARGUMENT in kwargs:
        raise ValueError(
            f"kwargs of periodic task {task.name!r} must not hold {TIMESTAMP_ARGUMENT!r}: the "
            "worker passes the tick's time under that name. Rename your argument."
        )
    dump_args(task.name, kwargs)  # InvalidJobArguments now rather than at every tick
    try:
        signature = inspect.signature(task.func)
    except (TypeError, ValueError):
        return  # a callable without a signature: its jobs will tell
    context = (None,) if task.pass_context else ()
    try:
        signature.bind(*context, **kwargs, **{TIMESTAMP_ARGUMENT: 0})
    except TypeError as exc:
        raise TypeError(
            f"Periodic task {task.name!r} cannot be called with kwargs {dict(kwargs)!r} plus "
            f"{TIMESTAMP_ARGUMENT}=<tick time> ({exc}). Add a `{TIMESTAMP_ARGUMENT}: int` "
            "parameter (unix seconds of the tick) and pass the other arguments in "
            "@app.periodic(kwargs={...})."
        ) from None


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
        manager: JobManager,
        periodic_tasks: Iterable[PeriodicTask],
        *,
        max_delay: float = MAX_DELAY,
        keep: int = KEEP_DEFERS,
        clock: Callable[[], float] = time.time,
        database_timeout: float | None = None,
    ) -> None:
        self._manager = manager
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
                    _utc(oldest).isoformat(),
                    self._max_delay,
                    extra={"task": periodic.task.name, "periodic_id": periodic.periodic_id},
                )
            due = periodic.ticks_between(max(after, oldest), until)
            ticks.extend(periodic.tick(timestamp) for timestamp in due)
        if not ticks:
            return True
        try:
            deferred = await within(
                self._database_timeout, self._manager.defer_periodic_async(ticks)
            )
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
        tick_time = _utc(tick.timestamp).isoformat()
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
                self._manager.prune_periodic_defers_async(keep=self._keep, before=before),
            )
        except (ConnectorError, TimeoutError) as exc:
            logger.warning(
                "Could not prune old periodic tick records: %s",
                str(exc) or f"no answer within {self._database_timeout:g} s",
            )
