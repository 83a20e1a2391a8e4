"""Periodic tasks: cron schedules whose ticks the worker defers as jobs.

Every worker of an app with periodic tasks runs a deferrer (`sqla_jobs.worker.periodic`); each
wakes at each tick and tries to defer it. A tick is recorded in ``sqla_jobs_periodic_defers``
under a unique key (task, periodic id, tick timestamp) by the same statement that writes its
job, and only the statement whose record wins writes the job: a tick runs once however many
workers run, by a database constraint rather than by timing.

Cron expressions are read by croniter, in UTC: five fields (minute hour day month weekday), or
six with seconds as the last field (``"* * * * * */10"``: every ten seconds).
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .jobs import JobSpec, dump_args

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


def utc(timestamp: float) -> datetime.datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class PeriodicTick:
    """One tick of a periodic task: the job to defer, and the key that makes it happen once."""

    spec: JobSpec
    periodic_id: str
    timestamp: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.spec.task_name, self.periodic_id, self.timestamp)


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
        return int(_croniter(self.cron, utc(math.floor(at) + 1)).get_prev(float))

    def next_tick(self, after: float) -> int:
        """The first tick strictly after ``after`` (unix seconds)."""
        return int(_croniter(self.cron, utc(after)).get_next(float))

    def ticks_between(self, after: float, until: float) -> list[int]:
        """Every tick ``t`` with ``after < t <= until``, oldest first."""
        ticks: list[int] = []
        iterator = _croniter(self.cron, utc(after))
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
        _croniter(cron, utc(0)).get_next(float)
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
