"""Prometheus metrics: what each worker ran, counted as it runs, and (later) the queue's state.

A worker counts its jobs in plain Python (`JobCounts`: a dict increment and a bucket search per
job, no lock), and only a scrape turns the counts into metrics (`WorkerCollector`), so that
counting costs the hot path next to nothing and needs no ``prometheus_client`` until metrics are
served. ``sqla-jobs worker --metrics-port 9100`` (``WorkerOptions(metrics_port=...)``) serves
them; the library is ``prometheus_client`` (extra ``sqla_jobs[metrics]``).

Labels are queue, task and outcome only: never a job id or an argument, whose values have no
bound.
"""

from __future__ import annotations

import bisect
import datetime
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import MetricsUnavailable
from .statuses import JobStatus

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .jobs import Job

__all__ = [
    "DURATION_BUCKETS",
    "WAIT_BUCKETS",
    "Histogram",
    "JobCounts",
    "WorkerCollector",
    "outcome_label",
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
    JobStatus.TODO: "retried",
}


def outcome_label(status: JobStatus) -> str:
    """The ``outcome`` label of a job that ended in ``status``: ``retried`` for one that went
    back to the queue to run again."""
    return _OUTCOMES.get(status, status.value)


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

    def job_ended(self, job: Job, status: JobStatus, seconds: float) -> None:
        """Count ``job``, which ran ``seconds`` and ended in ``status``."""
        key = (job.queue, job.task_name, outcome_label(status))
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
            "(succeeded, failed, retried, aborted).",
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


def worker_registry(counts: JobCounts) -> CollectorRegistry:
    """A registry of one worker's metrics (not the process-wide default registry: a host
    application's own metrics are its own to serve)."""
    registry: CollectorRegistry = _prometheus().CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(counts))
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
