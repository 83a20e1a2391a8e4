"""Jobs as values: what a defer writes and what a claim reads back."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from typing import Any

from .errors import InvalidJobArguments
from .statuses import JobStatus

DEFAULT_QUEUE = "default"


# Frozen without __slots__: a claim builds a Job per row straight into its __dict__ (see
# from_full_row), which a frozen dataclass's __init__ (one object.__setattr__ per field) makes
# six times slower.
@dataclasses.dataclass(frozen=True)
class Job:
    """One job as stored in ``sqla_jobs_jobs``; an ORM-free value."""

    id: int
    queue: str
    task_name: str
    args: dict[str, Any]
    priority: int = 0
    lock: str | None = None
    queueing_lock: str | None = None
    status: JobStatus = JobStatus.TODO
    scheduled_at: datetime.datetime | None = None
    attempts: int = 0
    created_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    last_error: str | None = None
    worker_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Build a Job from a row of the jobs table (any subset of its columns)."""
        values = {name: row[name] for name in _FIELD_NAMES if name in row}
        if "status" in values:
            values["status"] = JobStatus(values["status"])
        return cls(**values)

    @classmethod
    def from_full_row(cls, row: dict[str, Any]) -> Job:
        """Build a Job from a row holding exactly the Job fields (the claim's hot path); the
        row becomes the Job's attributes."""
        row["status"] = _STATUS_BY_VALUE[row["status"]]
        job = object.__new__(cls)
        job.__dict__.update(row)
        return job


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Job))
_STATUS_BY_VALUE = {status.value: status for status in JobStatus}


# Not frozen: a batch defer builds one per job, and a frozen dataclass's __init__ costs 2.5
# times as much. Nothing changes a spec once built.
@dataclasses.dataclass(slots=True)
class JobSpec:
    """A job about to be deferred: everything but what the database assigns."""

    task_name: str
    args: Mapping[str, Any]
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    lock: str | None = None
    queueing_lock: str | None = None
    scheduled_at: datetime.datetime | None = None

    def args_json(self) -> str:
        """The arguments as JSON text, or an error naming the argument that is not JSON."""
        return dump_args(self.task_name, self.args)


# One encoder for every job: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dump_args(task_name: str, args: Mapping[str, Any]) -> str:
    """The job's arguments as JSON text that PostgreSQL's jsonb accepts, or an error that names
    the argument at fault."""
    if not args:
        return "{}"  # tasks without arguments are common; the encoder costs 2 us a call
    try:
        text = _ENCODE(args)
    except (TypeError, ValueError):
        pass
    else:
        # Valid JSON, but jsonb cannot store a NUL character.
        if "\\u0000" not in text:
            return text
    for key, value in args.items():
        problem = _json_problem(value)
        if problem is not None:
            raise InvalidJobArguments(
                f"Argument {key!r} of task {task_name!r} cannot be stored as JSON ({problem}). "
                "Pass JSON values (str, int, finite float, bool, None, lists and dicts of "
                "them), e.g. an id instead of an object."
            )
    raise InvalidJobArguments(
        f"The arguments of task {task_name!r} cannot be stored as JSON. "
        "Use string keys and JSON-serialisable values."
    )


def _json_problem(value: Any) -> str | None:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__}: {exc}"
    if "\\u0000" in text:
        return "it contains a NUL character (\\x00), which PostgreSQL cannot store"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class JobEvent:
    """One status change of a job (``sqla_jobs.schema.job_history``: the job's row and the
    events it no longer shows); ``error`` is the run's error when it ended in failed, aborted or
    a retry."""

    status: JobStatus
    at: datetime.datetime
    error: str | None = None
