"""Jobs as values: arguments are stored as JSON or refused naming the argument; rows read back
into `Job`."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import pytest

import sqla_jobs
from sqla_jobs import Job, JobStatus, Unique
from sqla_jobs.jobs import JobSpec, dump_args


class Invoice:
    pass


def test_arguments_are_dumped_as_compact_json_that_loads_back_equal() -> None:
    args = {"text": "héllo ✓", "n": 2**62, "f": 0.5, "none": None, "list": [1, {"a": []}]}

    dumped = dump_args("billing.charge", args)

    assert json.loads(dumped) == args
    assert ", " not in dumped and ": " not in dumped


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Invoice(), "Invoice"),
        (datetime.datetime(2030, 1, 1), "datetime"),
        ({1, 2}, "set"),
        (b"raw", "bytes"),
        ([1, Invoice()], "list"),
        ({"nested": Invoice()}, "dict"),
    ],
)
def test_argument_that_is_not_json_is_refused_naming_it_its_type_and_the_task(
    value: Any, type_name: str
) -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments) as caught:
        dump_args("billing.charge", {"amount": 10, "invoice": value})

    message = str(caught.value)
    assert "'invoice'" in message
    assert "'amount'" not in message
    assert "'billing.charge'" in message
    assert type_name in message
    assert "JSON" in message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param(-math.inf, id="minus_infinity"),
    ],
)
def test_non_finite_float_is_refused_naming_the_argument(value: float) -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'ratio'"):
        dump_args("stats.update", {"ratio": value})


def test_text_with_a_nul_character_is_refused_naming_the_argument() -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'name'"):
        dump_args("users.rename", {"name": "bad\x00name"})


def test_arguments_with_keys_json_cannot_hold_are_refused_naming_the_task() -> None:
    with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"'grid\.fill'.*string keys"):
        dump_args("grid.fill", {"cells": "ok", (1, 2): "x"})  # type: ignore[dict-item]


def test_invalid_job_arguments_is_a_type_error_and_a_jobs_error() -> None:
    assert issubclass(sqla_jobs.InvalidJobArguments, TypeError)
    assert issubclass(sqla_jobs.InvalidJobArguments, sqla_jobs.JobsError)


def test_job_spec_dumps_its_arguments_naming_its_task() -> None:
    spec = JobSpec(task_name="mail.send", args={"to": Invoice()})

    with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"'to' of task 'mail\.send'"):
        spec.args_json()
    assert JobSpec(task_name="mail.send", args={"to": "x"}).args_json() == '{"to":"x"}'


NOW = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)

FULL_ROW: dict[str, Any] = {
    "id": 12,
    "queue": "mail",
    "task_name": "mail.send",
    "args": {"to": "ada@example.com"},
    "priority": 5,
    "lock": "user:1",
    "queueing_lock": "welcome:1",
    "status": "doing",
    "scheduled_at": NOW,
    "attempts": 2,
    "created_at": NOW,
    "started_at": NOW,
    "finished_at": None,
    "last_error": "Traceback ...",
    "worker_id": 3,
    "trace_context": None,
    "tags": None,
    "meta": None,
    "workflow_id": 7,
}


def from_claim_row(row: dict[str, Any]) -> Job:
    """A Job as a claim of worker 3 builds it: the row has no status nor worker_id."""
    claimed = {k: v for k, v in row.items() if k not in ("status", "worker_id")}
    return Job.from_claim_row(claimed, worker_id=3)


def test_job_from_a_full_row_keeps_every_column_and_types_the_status() -> None:
    job = Job.from_row(FULL_ROW)

    assert dataclasses.asdict(job) == {
        **FULL_ROW,
        "status": JobStatus.DOING,
        "args_error": None,
        "tags": (),
        "meta": {},
        "unique_key": None,
        "result": None,
    }
    assert job.status is JobStatus.DOING


@pytest.mark.parametrize("build", [Job.from_row, from_claim_row])
def test_tags_and_meta_are_read_per_job_and_empty_when_null(build: Any) -> None:
    tagged = build({**FULL_ROW, "tags": ["tenant:7", "a"], "meta": '{"k": [1, {"x": null}]}'})
    plain = build(dict(FULL_ROW))

    assert (tagged.tags, tagged.meta) == (("tenant:7", "a"), {"k": [1, {"x": None}]})
    assert (plain.tags, plain.meta) == ((), {})
    plain.meta["mine"] = 1  # each job has its own
    assert build(dict(FULL_ROW)).meta == {}


@pytest.mark.parametrize("text", ["[1]", "{", '"x"'])
def test_meta_that_is_not_a_json_object_reads_as_empty(text: str) -> None:
    assert from_claim_row({**FULL_ROW, "meta": text}).meta == {}


@pytest.mark.parametrize("build", [Job.from_row, from_claim_row])
def test_arguments_read_as_text_are_decoded_per_job(build: Any) -> None:
    job = build({**FULL_ROW, "args": '{"to": "ada@example.com", "n": [1, 2.5]}'})

    assert (job.args, job.args_error) == ({"to": "ada@example.com", "n": [1, 2.5]}, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1, 2]", "are an array, not a JSON object"),
        ('"x"', "are a string"),
        ("7", "are a number"),
        ("true", "are a boolean"),
        ("null", "are null"),
        ("{", "not valid JSON"),
        ('{"a": ' + "[" * 5_000 + "]" * 5_000 + "}", "nest too deep"),
    ],
)
@pytest.mark.parametrize("build", [Job.from_row, from_claim_row])
def test_arguments_that_cannot_be_used_leave_the_job_readable_with_the_reason(
    build: Any, text: str, reason: str
) -> None:
    job = build({**FULL_ROW, "args": text})

    assert job.args == {}
    assert reason in (job.args_error or "")


def test_job_from_a_partial_row_takes_defaults_for_the_missing_columns() -> None:
    job = Job.from_row({"id": 1, "queue": "default", "task_name": "t", "args": {}})

    assert job == Job(id=1, queue="default", task_name="t", args={})
    assert (job.status, job.priority, job.attempts, job.lock) == (JobStatus.TODO, 0, 0, None)


def test_job_from_a_row_ignores_columns_it_does_not_know() -> None:
    job = Job.from_row({**FULL_ROW, "xmin": "123", "periodic_id": "p"})

    assert job == Job.from_row(FULL_ROW)


def test_job_from_a_row_with_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="exploded"):
        Job.from_row({**FULL_ROW, "status": "exploded"})


def test_job_is_an_immutable_value() -> None:
    job = Job.from_row(FULL_ROW)

    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.extra = 1  # type: ignore[attr-defined]


def test_a_claimed_row_makes_the_same_job_as_the_constructor() -> None:
    claimed = from_claim_row(FULL_ROW)

    assert claimed == Job(**{**FULL_ROW, "status": JobStatus.DOING, "tags": (), "meta": {}})
    assert claimed.status is JobStatus.DOING
    with pytest.raises(dataclasses.FrozenInstanceError):
        claimed.attempts = 5  # type: ignore[misc]


def test_a_unique_key_depends_on_the_task_the_arguments_or_key_and_the_period() -> None:
    at = datetime.datetime(2030, 1, 1, 9, 10, tzinfo=datetime.UTC)
    later_that_hour = at + datetime.timedelta(minutes=40)
    by_args = Unique()
    assert by_args.key_for("t", {"a": 1, "b": [1, 2]}, None) == by_args.key_for(
        "t", {"b": [1, 2], "a": 1}, at
    )
    assert by_args.key_for("t", {"a": 1}, None) != by_args.key_for("u", {"a": 1}, None)
    assert by_args.key_for("t", {"a": 1}, None) != by_args.key_for("t", {"a": 2}, None)
    keyed = Unique(key="k")
    assert keyed.key_for("t", {"a": 1}, None) == keyed.key_for("t", {"a": 2}, None)
    assert keyed.key_for("t", {}, None) != by_args.key_for("t", {}, None)
    hourly = Unique(key="k", period=datetime.timedelta(hours=1))
    assert hourly.key_for("t", {}, at) == hourly.key_for("t", {}, later_that_hour)
    assert hourly.key_for("t", {}, at) != hourly.key_for("t", {}, at + datetime.timedelta(hours=1))
    assert hourly.key_for("t", {}, at) != Unique(key="k", period=60).key_for("t", {}, at)
    assert len(hourly.key_for("t", {}, at)) == 64
