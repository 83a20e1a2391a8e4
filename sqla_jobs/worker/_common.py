"""What the worker's roles share: their logger, their retry delays, their statement bound."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from .._aio import within

if TYPE_CHECKING:
    from ..jobs import Job
    from .database import WorkerDatabase
    from .options import WorkerApp, WorkerOptions

# One logger for every role: "sqla_jobs.worker" is what deployments filter on.
logger = logging.getLogger("sqla_jobs.worker")
T = TypeVar("T")

ABORT_CHANNEL = "sqla_jobs_abort"
# Retries after a failed statement or a lost LISTEN connection wait this long, doubling per
# failure up to a cap (WorkerOptions.retry_max_delay), each delay drawn at random from its
# upper half (jitter: workers that lost the server together do not come back in lockstep).
RETRY_FIRST_DELAY = 0.1


def retry_delay(failures: int, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
    ceiling = min(cap, RETRY_FIRST_DELAY * 2 ** max(failures - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def describe_error(exc: BaseException, timeout: float) -> str:
    """An error for a log line; a timeout says how long it waited."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(exc)


@dataclasses.dataclass(eq=False)
class WorkerState:
    """What every role of one worker reads: who it is, its options, and whether it stops.

    ``stopping``: no more claims (a stop was requested). ``shutting_down``: the jobs are done
    or given up, the side roles end. ``hurry``: the worker was cancelled, every wait is cut
    short."""

    app: WorkerApp
    database: WorkerDatabase
    options: WorkerOptions
    name: str
    queues: list[str] | None
    worker_id: int = 0
    #: Whether a control (`sqla_jobs.controls`) applies to this worker's queues: it then
    #: claims with the controlled claim. ``controls_stale``: read the controls again before
    #: the next claim (a NOTIFY said they changed, or a heartbeat passed).
    controlled: bool = False
    controls_stale: bool = True
    #: The (scope, name) of the queues and tasks with a concurrency limit, as last read.
    limited: frozenset[tuple[str, str]] = frozenset()
    stopping: bool = False
    hurry: bool = False
    stop_requested: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    shutting_down: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def concurrency_limited(self, job: Job) -> bool:
        """Whether ``job``'s queue or task has a concurrency limit (as last read)."""
        limited = self.limited
        return bool(limited) and (
            ("queue", job.queue) in limited or ("task", job.task_name) in limited
        )

    @property
    def log_extra(self) -> dict[str, Any]:
        return {"worker": self.name, "worker_id": self.worker_id}

    def retry_delay(self, failures: int) -> float:
        return retry_delay(failures, self.options.retry_max_delay)

    async def bounded(self, statement: Awaitable[T]) -> T:
        """``await statement``, for at most ``database_timeout`` seconds (`TimeoutError`)."""
        return await within(self.options.database_timeout, statement)

    def describe(self, exc: BaseException) -> str:
        return describe_error(exc, self.options.database_timeout)
