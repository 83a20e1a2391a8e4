"""How a worker runs (`WorkerOptions`), and what a task that asks for it receives
(`JobContext`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..jobs import Job
from ..statuses import JobStatus
from ..workflows import ParentJob

if TYPE_CHECKING:
    from ..connectors.base import BaseConnector
    from ..controls import Limits
    from ..manager import JobManager
    from ..periodic import PeriodicTask
    from ..queries import Statements
    from ..tasks import JobDeferrer, Task

DeleteJobs = Literal["never", "successful", "always"]


class WorkerApp(Protocol):
    """What a worker needs of the app it runs (`sqla_jobs.App` is one), and what a task's
    `JobContext` offers of it: its connector and job manager, its tasks and schedules, a way
    to defer by task name."""

    @property
    def connector(self) -> BaseConnector: ...

    @property
    def job_manager(self) -> JobManager: ...

    @property
    def statements(self) -> Statements: ...

    @property
    def tasks(self) -> Mapping[str, Task]: ...

    @property
    def periodic_tasks(self) -> Mapping[tuple[str, str], PeriodicTask]: ...

    @property
    def declared_limits(self) -> Mapping[tuple[str, str], Limits]: ...

    def import_tasks(self) -> None: ...

    def configure_task(self, name: str, **options: Any) -> JobDeferrer: ...


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
    #: Most jobs claimed by one statement; the default (auto) prefetch claims up to twice as
    #: many ahead (two claims in flight).
    fetch_batch: int = 1000
    #: Jobs claimed ahead of free slots, so that each claim brings a useful batch and the next
    #: jobs are ready when running ones end. None (auto): what the worker starts in some 30 ms
    #: at its recent pace, at least ``concurrency`` and at most ``2 * fetch_batch``: short jobs
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
    #: Longest wait, in seconds, between two tries of a statement that failed or a connection
    #: that was lost: the waits start at 0.1 s and double, each drawn at random from its upper
    #: half, so that workers that lost the server together do not come back in lockstep.
    #: LISTEN tries again twice as often (it brings back the immediate start of new jobs), and
    #: once it is back, a claim waiting out its backoff tries at once.
    retry_max_delay: float = 1.0
    #: Serve Prometheus metrics at ``http://metrics_host:metrics_port/metrics`` while the
    #: worker runs (`sqla_jobs.metrics`; needs ``sqla_jobs[metrics]``); 0 picks a free port.
    #: None: no metrics, and no counting.
    metrics_port: int | None = None
    #: The address the metrics are served on: every interface by default, for a scraper on
    #: another host; ``127.0.0.1`` keeps them to this machine.
    metrics_host: str = "0.0.0.0"

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
        if not self.retry_max_delay > 0:
            raise ValueError(
                f"retry_max_delay must be more than 0 seconds, not {self.retry_max_delay!r}"
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
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be a TCP port (0-65535), not {self.metrics_port}")
        if isinstance(self.queues, str):
            raise TypeError(f"queues must be a list of queue names, not the string {self.queues!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class JobContext:
    """What a task declared with ``pass_context=True`` receives as its first argument."""

    job: Job
    app: WorkerApp
    worker_name: str
    worker_id: int
    _abort_requested: set[int] = dataclasses.field(repr=False)
    #: Jobs asked to stop for another reason: past their task's timeout, or the worker stops.
    _stop_asked: AbstractSet[int] = dataclasses.field(default=frozenset(), repr=False)
    #: The jobs this one depends on (a workflow's), in the order they were added: id, task,
    #: how they ended, result. Empty for a job without parents.
    parents: tuple[ParentJob, ...] = ()

    @property
    def workflow_id(self) -> int | None:
        """The workflow the job belongs to; None outside workflows."""
        return self.job.workflow_id

    @property
    def parent_results(self) -> dict[int, Any]:
        """What each parent that succeeded returned, by parent id, in the order the parents
        were added; a parent that ended otherwise (a run-anyway edge) is absent."""
        return {
            parent.id: parent.result
            for parent in self.parents
            if parent.status is JobStatus.SUCCEEDED
        }

    @property
    def tags(self) -> tuple[str, ...]:
        """The job's tags (``configure(tags=[...])``); empty without."""
        return self.job.tags

    @property
    def meta(self) -> dict[str, Any]:
        """The job's metadata (``configure(meta={...})``), a dict; empty without."""
        return self.job.meta

    def should_abort(self) -> bool:
        """True once someone asked to abort this job, once it ran past its task's
        ``timeout``, or when the worker is shutting down past its ``shutdown_timeout``; a long
        sync task should check it and return."""
        job_id = self.job.id
        return job_id in self._abort_requested or job_id in self._stop_asked
