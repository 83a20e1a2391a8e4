"""The worker's job counts and their Prometheus form: buckets, labels, outcomes (no database:
the counts are fed by hand; tests/integration/test_metrics.py scrapes a real worker)."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sqla_jobs import JobStatus
from sqla_jobs.jobs import Job
from sqla_jobs.metrics import (
    DURATION_BUCKETS,
    Histogram,
    JobCounts,
    outcome_label,
    worker_registry,
)

T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def job(job_id: int, *, queue: str = "q", task: str = "t", waited: float = 1.5) -> Job:
    return Job(
        id=job_id,
        queue=queue,
        task_name=task,
        args={"secret": "argument value"},
        priority=0,
        lock=None,
        queueing_lock=None,
        status=JobStatus.DOING,
        scheduled_at=None,
        attempts=1,
        created_at=T0,
        started_at=T0 + datetime.timedelta(seconds=waited),
        finished_at=None,
        last_error=None,
        worker_id=1,
    )


def samples(counts: JobCounts) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(worker_registry(counts)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_histogram_counts_each_value_in_the_first_bucket_that_holds_it() -> None:
    histogram = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 3.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("1.0", 2), ("5.0", 3), ("+Inf", 4)]
    assert histogram.total == 11.5


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (JobStatus.SUCCEEDED, "succeeded"),
        (JobStatus.FAILED, "failed"),
        (JobStatus.ABORTED, "aborted"),
        (JobStatus.TODO, "retried"),
    ],
)
def test_outcome_labels(status: JobStatus, label: str) -> None:
    assert outcome_label(status) == label


def test_the_collector_reports_finishes_durations_and_waits_by_queue_and_task() -> None:
    counts = JobCounts()
    for job_id, status in enumerate([JobStatus.SUCCEEDED] * 3 + [JobStatus.FAILED], 1):
        counts.job_started(job(job_id))
        counts.job_ended(job(job_id), status, 0.02)
    counts.job_started(job(9, queue="other", task="u", waited=100))
    counts.job_ended(job(9, queue="other", task="u"), JobStatus.TODO, 20.0)

    found = samples(counts)

    finished = "sqla_jobs_jobs_finished_total"
    assert found[(finished, (("outcome", "succeeded"), ("queue", "q"), ("task", "t")))] == 3
    assert found[(finished, (("outcome", "failed"), ("queue", "q"), ("task", "t")))] == 1
    assert found[(finished, (("outcome", "retried"), ("queue", "other"), ("task", "u")))] == 1
    duration = "sqla_jobs_job_duration_seconds"
    assert found[(duration + "_count", (("queue", "q"), ("task", "t")))] == 4
    assert found[(duration + "_bucket", (("le", "0.025"), ("queue", "q"), ("task", "t")))] == 4
    assert found[(duration + "_bucket", (("le", "0.01"), ("queue", "q"), ("task", "t")))] == 0
    assert found[(duration + "_sum", (("queue", "other"), ("task", "u")))] == 20.0
    wait = "sqla_jobs_job_wait_seconds"
    assert found[(wait + "_count", (("queue", "q"),))] == 4
    assert found[(wait + "_sum", (("queue", "q"),))] == 6.0
    assert found[(wait + "_bucket", (("le", "60.0"), ("queue", "other")))] == 0
    assert found[(wait + "_bucket", (("le", "300.0"), ("queue", "other")))] == 1


def test_labels_never_carry_a_job_id_or_an_argument() -> None:
    counts = JobCounts()
    counts.job_started(job(424242))
    counts.job_ended(job(424242), JobStatus.SUCCEEDED, 0.1)
    labels = {name for key in samples(counts) for name, _ in key[1]}
    text = generate_latest(worker_registry(counts)).decode()
    assert labels <= {"queue", "task", "outcome", "le"}
    assert "424242" not in text and "argument value" not in text


def test_a_job_scheduled_for_later_waits_from_its_scheduled_time() -> None:
    counts = JobCounts()
    scheduled = dataclasses.replace(
        job(1, waited=600), scheduled_at=T0 + datetime.timedelta(seconds=599)
    )
    counts.job_started(scheduled)
    assert counts.waits["q"].total == 1.0


def test_buckets_span_short_and_hour_long_jobs() -> None:
    assert DURATION_BUCKETS[0] <= 0.005 and DURATION_BUCKETS[-1] >= 3600
