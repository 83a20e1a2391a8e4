"""Prometheus metrics: what each worker ran, counted as it runs, and the queue's state, read
from the database at scrape time.

A worker counts its jobs in plain Python (`JobCounts`: a dict increment and a bucket search per
job, no lock), and only a scrape turns the counts into metrics (`WorkerCollector`), so that
counting costs the hot path next to nothing and needs no ``prometheus_client`` until metrics are
served. ``sqla-jobs worker --metrics-port 9100`` (``WorkerOptions(metrics_port=...)``) serves
them; the library is ``prometheus_client`` (extra ``sqla_jobs[metrics]``).

The queue's state (`QueueCollector`: ``sqla_jobs_jobs{queue,status}``,
``sqla_jobs_oldest_waiting_seconds{queue}``, ``sqla_jobs_workers``) is read through the app's
job manager, cached a few seconds so that several scrapers cost one read, at a worker's
``/metrics`` and at the dashboard's.

Labels are queue, task, status and outcome only: never a job id or an argument, whose values
have no bound.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import operations as ops
from .errors import JobsError, MetricsUnavailable
from .statuses import JobStatus

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .jobs import Job
    from .manager import JobManager

logger = logging.getLogger("sqla_jobs.metrics")

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "WAIT_BUCKETS",
    "Histogram",
    "JobCounts",
    "QueueCollector",
    "QueueState",
    "WorkerCollector",
    "exposition",
    "outcome_label",
    "queue_families",
    "queue_state",
    "require_prometheus",
    "serve",
    "worker_registry",
]

#: Seconds a job ran: from 5 ms (a no-op) to an hour.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
#: Seconds a job waited, from the time it was deferred (or scheduled) to its start.
WAIT_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600,
)  # fmt: skip

_OUTCOMES = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.ABORTED: "aborted",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.TODO: "retried",
}


def outcome_label(status: JobStatus, *, snoozed: bool = False) -> str:
    """The ``outcome`` label of a job that ended in ``status``: ``retried`` for one that went
    back to the queue to run again, ``snoozed`` for one its task put back (`Snooze`),
    ``cancelled`` for one its task cancelled (`CancelJob`)."""
    return "snoozed" if snoozed else _OUTCOMES.get(status, status.value)


class Histogram:
    """Observations in buckets (not cumulative; a scrape adds them up), their count and sum."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, as Prometheus wants them, ``+Inf`` last."""
        counts = list(self.counts)  # one snapshot, so that +Inf is the count
        pairs = []
        running = 0
        for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return pairs


class JobCounts:
    """What one worker ran: jobs ended by queue, task and outcome; run time by queue and task;
    wait by queue. Updated from the worker's event loop, read by scrapes from another thread
    (CPython's dict and list operations are atomic under the GIL)."""

    def __init__(self) -> None:
        self.finished: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.waits: dict[str, Histogram] = {}

    def job_started(self, job: Job) -> None:
        """Count how long ``job`` waited: from when it could run (deferred, or scheduled for
        later) to its start, both by the database's clock."""
        if job.started_at is None:
            return
        since = job.scheduled_at if job.scheduled_at is not None else job.created_at
        if since is None:
            return
        waited = max((job.started_at - since) / _SECOND, 0.0)
        histogram = self.waits.get(job.queue)
        if histogram is None:
            histogram = self.waits[job.queue] = Histogram(WAIT_BUCKETS)
        histogram.observe(waited)

    def job_ended(
        self, job: Job, status: JobStatus, seconds: float, *, snoozed: bool = False
    ) -> None:
        """Count ``job``, which ran ``seconds`` and ended in ``status`` (``snoozed``: back to
        the queue at its task's request)."""
        key = (job.queue, job.task_name, outcome_label(status, snoozed=snoozed))
        self.finished[key] = self.finished.get(key, 0) + 1
        task = (job.queue, job.task_name)
        histogram = self.durations.get(task)
        if histogram is None:
            histogram = self.durations[task] = Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)


_SECOND = datetime.timedelta(seconds=1)


class WorkerCollector:
    """A ``prometheus_client`` collector of one worker's `JobCounts`:
    ``sqla_jobs_jobs_finished_total{queue,task,outcome}``,
    ``sqla_jobs_job_duration_seconds{queue,task}`` and ``sqla_jobs_job_wait_seconds{queue}``."""

    def __init__(self, counts: JobCounts) -> None:
        self.counts = counts

    def describe(self) -> list[Any]:
        return []  # the metrics come and go with the queues and tasks seen

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        finished = CounterMetricFamily(
            "sqla_jobs_jobs_finished",
            "Jobs this worker ran to an end, by queue, task and outcome "
            "(succeeded, failed, retried, aborted, snoozed, cancelled).",
            labels=("queue", "task", "outcome"),
        )
        for (queue, task, outcome), count in list(self.counts.finished.items()):
            finished.add_metric((queue, task, outcome), count)
        yield finished
        durations = HistogramMetricFamily(
            "sqla_jobs_job_duration_seconds",
            "How long this worker's jobs ran, by queue and task.",
            labels=("queue", "task"),
        )
        for (queue, task), histogram in list(self.counts.durations.items()):
            durations.add_metric((queue, task), histogram.cumulative(), histogram.total)
        yield durations
        waits = HistogramMetricFamily(
            "sqla_jobs_job_wait_seconds",
            "How long jobs waited to start on this worker, from when they could run "
            "(deferred, or scheduled for later), by queue.",
            labels=("queue",),
        )
        for queue, histogram in list(self.counts.waits.items()):
            waits.add_metric((queue,), histogram.cumulative(), histogram.total)
        yield waits


@dataclasses.dataclass(frozen=True, slots=True)
class QueueState:
    """The queue as the database has it: jobs per (queue, status), estimated past
    `operations.EXACT_COUNT_LIMIT` jobs; per queue, the age of the oldest job due and waiting;
    the workers whose heartbeat is recent."""

    counts: ops.Counts
    oldest_waiting: dict[str, float]
    live_workers: int


def queue_state(live_after: float = 60.0) -> ops.Operation[QueueState]:
    """`QueueState`, as an operation; a worker counts as live when its last heartbeat is under
    ``live_after`` seconds old (the default stalled timeout)."""
    counts = yield from ops.job_counts()
    waiting = yield from ops.oldest_waiting()
    workers = yield from ops.list_workers()
    return QueueState(
        counts,
        {str(row["queue"]): float(row["age"]) for row in waiting},
        sum(1 for worker in workers if float(worker["heartbeat_age"]) < live_after),
    )


def queue_families(state: QueueState | None) -> list[Any]:
    """The metric families of ``state``; None (the database did not answer): only
    ``sqla_jobs_database_up 0``."""
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily(
        "sqla_jobs_database_up", "Whether the last read of the queue's state succeeded."
    )
    up.add_metric((), 0 if state is None else 1)
    if state is None:
        return [up]
    estimated = " (estimated from a sample past 100,000 jobs)" if state.counts.estimated else ""
    jobs = GaugeMetricFamily(
        "sqla_jobs_jobs", f"Jobs by queue and status{estimated}.", labels=("queue", "status")
    )
    for queue, statuses in state.counts.by_queue.items():
        for status, count in statuses.items():
            jobs.add_metric((queue, status.value), count)
    oldest = GaugeMetricFamily(
        "sqla_jobs_oldest_waiting_seconds",
        "Age of the oldest job due and waiting, by queue (no sample: none waits).",
        labels=("queue",),
    )
    for queue, age in state.oldest_waiting.items():
        oldest.add_metric((queue,), age)
    workers = GaugeMetricFamily(
        "sqla_jobs_workers", "Workers whose last heartbeat is under a minute old."
    )
    workers.add_metric((), state.live_workers)
    return [up, jobs, oldest, workers]


class QueueCollector:
    """A ``prometheus_client`` collector of the queue's state, read through ``manager`` (its
    sync methods: scrapes come from a thread) and kept ``cache_seconds``."""

    def __init__(self, manager: JobManager, *, cache_seconds: float = 5.0) -> None:
        self.manager = manager
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._state: QueueState | None = None

    def describe(self) -> list[Any]:
        return []

    def state(self) -> QueueState | None:
        """The cached state, read again when older than ``cache_seconds``; None when the
        database did not answer (logged)."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.cache_seconds:
                try:
                    self._state = self.manager.run(queue_state())
                except JobsError as exc:
                    logger.warning("metrics: the queue's state could not be read: %s", exc)
                    self._state = None
                self._read_at = now
            return self._state

    def collect(self) -> Iterator[Any]:
        yield from queue_families(self.state())


def exposition(families: Sequence[Any]) -> bytes:
    """``families`` in Prometheus' text format."""
    prometheus = _prometheus()

    class _Families:
        def collect(self) -> Sequence[Any]:
            return families

    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(_Families())
    result: bytes = prometheus.generate_latest(registry)
    return result


#: The content type of `exposition`'s text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def worker_registry(counts: JobCounts, manager: JobManager | None = None) -> CollectorRegistry:
    """A registry of one worker's metrics, and of the queue's state when ``manager`` is given
    (not the process-wide default registry: a host application's own metrics are its own to
    serve)."""
    registry: CollectorRegistry = _prometheus().CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(counts))
    if manager is not None:
        registry.register(QueueCollector(manager))
    return registry


def serve(registry: CollectorRegistry, *, port: int, host: str = "0.0.0.0") -> Any:
    """Serve ``registry`` at ``http://host:port/metrics`` from a thread; returns the server
    (``server.shutdown()`` stops it)."""
    server, _thread = _prometheus().start_http_server(port, addr=host, registry=registry)
    return server


def require_prometheus() -> None:
    """Raise `MetricsUnavailable` (naming the extra) if ``prometheus_client`` is missing."""
    _prometheus()


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable(
            "Prometheus metrics need prometheus_client: pip install 'sqla_jobs[metrics]'"
        ) from None
    return prometheus_client
