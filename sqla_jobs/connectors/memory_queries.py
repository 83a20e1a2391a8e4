"""The statements of `sqla_jobs.queries`, by name, as `InMemoryConnector` runs them.

One function per query (registered with `@_implements(name)`), doing over the in-memory tables
what its SQL does in PostgreSQL, the triggers aside: `sqla_jobs.connectors.memory.Statement`
collects the rows a function inserts, updates or deletes, then checks the unique indexes and
writes the events and notifications, as the triggers would. Read a query's rendered SQL
(`queries.<name>.sql`) next to its function here; a behaviour test on both backends keeps them
alike.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConnectorError
from ..queries import Query
from ..statuses import FINISHED_STATUSES, RUNNING_STATUSES, JobStatus
from .base import Params, Row, translate_error

if TYPE_CHECKING:
    from .memory import Statement

UTC = datetime.UTC
#: How errors name where a statement ran (`translate_error`'s target).
TARGET = "in memory"

TODO = JobStatus.TODO.value
DOING = JobStatus.DOING.value
ABORTING = JobStatus.ABORTING.value
RUNNING = frozenset(status.value for status in RUNNING_STATUSES)
FINISHED = frozenset(status.value for status in FINISHED_STATUSES)
#: The ends whose history step carries the job's last error.
ENDED_IN_ERROR = frozenset({JobStatus.FAILED.value, JobStatus.ABORTED.value})
STATUSES = frozenset(status.value for status in JobStatus)


def refused(
    query: Query, message: str, sqlstate: str, *, constraint_name: str | None = None
) -> ConnectorError:
    """The error a PostgreSQL connector raises for the same refusal (`translate_error`), so
    that the manager's handling of it (`AlreadyEnqueued`) is the same."""
    return translate_error(
        _Refusal(message),
        target=TARGET,
        sqlstate=sqlstate,
        constraint_name=constraint_name,
        query=query,
    )


class _Refusal(Exception):
    """What the server would have said."""


# -- values as PostgreSQL's columns take them ---------------------------------------------------


def _timestamp(statement: Statement, value: Any) -> datetime.datetime | None:
    """A ``timestamptz`` value; a naive datetime is read as UTC (a database in UTC would)."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise refused(
            statement.query,
            f"invalid input syntax for type timestamp with time zone: {value!r}",
            "22007",
        )
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _jsonb(statement: Statement, text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise refused(
            statement.query, f"invalid input syntax for type json: {text!r}", "22P02"
        ) from None


def _status(statement: Statement, value: Any) -> str:
    if value not in STATUSES:
        raise refused(
            statement.query,
            f'invalid input value for enum sqla_jobs_job_status: "{value}"',
            "22P02",
        )
    return str(value)


def _not_null(statement: Statement, table: str, values: Row, columns: Iterable[str]) -> Row:
    for column in columns:
        if values[column] is None:
            raise refused(
                statement.query,
                f'null value in column "{column}" of relation "{table}" violates not-null '
                "constraint",
                "23502",
            )
    return values


def _equal(value: Any, other: Any) -> bool:
    """SQL's ``=``: never true when either side is NULL."""
    return value is not None and other is not None and value == other


def _ids(values: Iterable[int] | None) -> list[int]:
    """The distinct ids of an ``= ANY(array)`` condition (NULL matches nothing)."""
    return list(dict.fromkeys(values or ()))


def _limited(rows: list[Row], limit: int | None, offset: int = 0) -> list[Row]:
    """LIMIT / OFFSET, where a NULL limit is no limit."""
    return rows[offset:] if limit is None else rows[offset : offset + limit]


_JOB_COLUMNS = (
    "id",
    "queue",
    "task_name",
    "args",
    "priority",
    "lock",
    "queueing_lock",
    "status",
    "scheduled_at",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "last_error",
    "worker_id",
)


def _job_row(row: Row) -> Row:
    """The job's columns as a statement returns them: a copy, which the caller may change."""
    result = {column: row[column] for column in _JOB_COLUMNS}
    result["args"] = copy.deepcopy(row["args"])
    return result


# -- the statements, by name -------------------------------------------------------------------

Implementation = Callable[["Statement", Params], list[Row]]
IMPLEMENTATIONS: dict[str, Implementation] = {}


def _implements(*names: str) -> Callable[[Implementation], Implementation]:
    def register(function: Implementation) -> Implementation:
        for name in names:
            IMPLEMENTATIONS[name] = function
        return function

    return register


def implemented_queries() -> frozenset[str]:
    """Names of the queries this connector runs (a test checks it covers `queries.ALL`)."""
    return frozenset(IMPLEMENTATIONS)


_NEW_JOB_COLUMNS = (
    "queue",
    "task_name",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled_at",
)
_NOT_NULL_JOB_COLUMNS = ("queue", "task_name", "priority", "args")


def _new_job(statement: Statement, values: Row) -> Row:
    # The identity default comes first: a refused row has used its id, as in PostgreSQL.
    job_id = statement.next_id("jobs")
    values = {
        **values,
        "args": _jsonb(statement, values["args"]) if values["args"] is not None else None,
        "scheduled_at": _timestamp(statement, values["scheduled_at"]),
    }
    _not_null(statement, "sqla_jobs_jobs", values, _NOT_NULL_JOB_COLUMNS)
    return statement.insert_job(job_id, values)


@_implements("defer_job")
def _defer_job(statement: Statement, params: Params) -> list[Row]:
    row = _new_job(statement, {column: params[column] for column in _NEW_JOB_COLUMNS})
    return [{"id": row["id"]}]


@_implements("defer_jobs")
def _defer_jobs(statement: Statement, params: Params) -> list[Row]:
    # unnest() pads shorter arrays with NULLs; the not-null columns then refuse the row.
    arrays = (
        "queues",
        "task_names",
        "priorities",
        "locks",
        "queueing_locks",
        "args",
        "scheduled_ats",
    )
    batch = itertools.zip_longest(*(params[name] or () for name in arrays))
    rows = [
        _new_job(statement, dict(zip(_NEW_JOB_COLUMNS, values, strict=True))) for values in batch
    ]
    return [{"id": row["id"]} for row in rows]


@_implements("waiting_queueing_locks")
def _waiting_queueing_locks(statement: Statement, params: Params) -> list[Row]:
    wanted = set(params["queueing_locks"])
    held = sorted(
        job["queueing_lock"]
        for job in statement.db.jobs.values()
        if job["status"] == "todo" and job["queueing_lock"] in wanted
    )
    return [{"queueing_lock": lock} for lock in held[:1]]


@_implements("claim_jobs", "claim_jobs_in_queues")
def _claim_jobs(statement: Statement, params: Params) -> list[Row]:
    jobs = statement.db.jobs.values()
    now = statement.now
    queues = None
    if statement.query.name == "claim_jobs_in_queues":
        queues = frozenset(params["queues"] or ())  # = ANY(NULL) matches nothing
    running_locks = {row["lock"] for row in jobs if row["status"] in RUNNING}
    # Jobs sharing a lock run in defer order: only the oldest waiting one may start, whatever
    # its queue or schedule.
    oldest_waiting: dict[str, int] = {}
    for row in jobs:
        if row["status"] == TODO and row["lock"] is not None:
            lock_id = oldest_waiting.get(row["lock"])
            if lock_id is None or row["id"] < lock_id:
                oldest_waiting[row["lock"]] = row["id"]
    candidates = [
        row
        for row in jobs
        if row["status"] == TODO
        and (row["scheduled_at"] is None or row["scheduled_at"] <= now)
        and (
            row["lock"] is None
            or (row["lock"] not in running_locks and oldest_waiting[row["lock"]] == row["id"])
        )
        and (queues is None or row["queue"] in queues)
    ]
    candidates.sort(key=lambda row: (-row["priority"], row["id"]))
    claimed = [
        statement.update_job(
            row,
            status=DOING,
            attempts=row["attempts"] + 1,
            started_at=now,
            worker_id=params["worker_id"],
        )
        for row in _limited(candidates, params["limit"])
    ]
    return [_job_row(row) for row in claimed]


def _still_running_here(row: Row | None, params: Params, attempt: int) -> bool:
    """The job is running its attempt ``attempt``, under the worker writing its outcome."""
    return (
        row is not None
        and row["status"] in (DOING, ABORTING)
        and row["worker_id"] == params["worker_id"]
        and row["attempts"] == attempt
    )


def _ran(params: Params) -> Iterator[tuple[int, int]]:
    """The (id, attempt) pairs of a batch of jobs the worker ran."""
    yield from zip(_ids(params["ids"]), params["attempts"] or (), strict=True)


@_implements("finish_succeeded")
def _finish_succeeded(statement: Statement, params: Params) -> list[Row]:
    for job_id, attempt in _ran(params):
        row = statement.db.jobs.get(job_id)
        if row is not None and _still_running_here(row, params, attempt):
            statement.update_job(row, status=JobStatus.SUCCEEDED.value, finished_at=statement.now)
    return []


@_implements("delete_jobs_by_id")
def _delete_jobs_by_id(statement: Statement, params: Params) -> list[Row]:
    for job_id, attempt in _ran(params):
        row = statement.db.jobs.get(job_id)
        if (
            row is not None
            and row["worker_id"] == params["worker_id"]
            and row["attempts"] == attempt
        ):
            statement.delete_job(row)
    return []


@_implements("finish_jobs")
def _finish_jobs(statement: Statement, params: Params) -> list[Row]:
    outcomes = zip(
        params["ids"] or (),
        params["attempts"] or (),
        params["statuses"] or (),
        params["errors"] or (),
        params["retry_ats"] or (),
        strict=True,
    )
    for job_id, attempt, status, error, retry_at in outcomes:
        row = statement.db.jobs.get(job_id)
        if (
            row is None
            or job_id in statement.updated
            or not _still_running_here(row, params, attempt)
        ):
            continue  # UPDATE ... FROM updates a row once, with the first outcome that matches
        status = _status(statement, status)
        statement.update_job(
            row,
            status=status,
            last_error=row["last_error"] if error is None else error,
            # A retry's new time; any other outcome keeps the time the job was scheduled for.
            scheduled_at=(
                row["scheduled_at"] if retry_at is None else _timestamp(statement, retry_at)
            ),
            finished_at=None if status == TODO else statement.now,
            worker_id=None if status == TODO else row["worker_id"],
        )
    return []


# -- workers -----------------------------------------------------------------------------------


@_implements("register_worker")
def _register_worker(statement: Statement, params: Params) -> list[Row]:
    values = {column: params[column] for column in ("name", "hostname", "pid", "concurrency")}
    _not_null(statement, "sqla_jobs_workers", values, values)
    worker_id = statement.next_id("workers")
    statement.db.workers[worker_id] = {
        "id": worker_id,
        **values,
        "queues": None if params["queues"] is None else list(params["queues"]),
        "started_at": statement.now,
        "last_heartbeat": statement.now,
    }
    return [{"id": worker_id}]


@_implements("heartbeat")
def _heartbeat(statement: Statement, params: Params) -> list[Row]:
    worker = statement.db.workers.get(params["worker_id"])
    if worker is None:
        return []
    worker["last_heartbeat"] = statement.now
    return [{"id": worker["id"]}]


@_implements("notify")
def _notify(statement: Statement, params: Params) -> list[Row]:
    statement.sent.append((params["channel"], params["payload"]))
    return [{"pg_notify": ""}]


@_implements("unregister_worker")
def _unregister_worker(statement: Statement, params: Params) -> list[Row]:
    statement.db.workers.pop(params["worker_id"], None)
    return []


@_implements("requeue_worker_jobs")
def _requeue_worker_jobs(statement: Statement, params: Params) -> list[Row]:
    unstarted = set(_ids(params["unstarted"]))
    held = set(_ids(params["held"]))
    for job_id in _ids(params["ids"]):
        row = statement.db.jobs.get(job_id)
        if row is None or not _equal(row["worker_id"], params["worker_id"]):
            continue
        if row["status"] not in RUNNING:
            continue
        if row["status"] == ABORTING:
            # A job asked to abort ends aborted rather than running again.
            statement.update_job(row, status=JobStatus.ABORTED.value, finished_at=statement.now)
        else:
            statement.update_job(
                row,
                status=TODO,
                finished_at=None,
                worker_id=None,
                started_at=None,
                attempts=row["attempts"] - 1 if job_id in unstarted else row["attempts"],
                scheduled_at=(
                    statement.now + params["held_for"] if job_id in held else row["scheduled_at"]
                ),
            )
    return []


@_implements("list_workers")
def _list_workers(statement: Statement, params: Params) -> list[Row]:
    return [
        {
            **worker,
            "queues": None if worker["queues"] is None else list(worker["queues"]),
            "heartbeat_age": _heartbeat_age(statement, worker),
        }
        for _, worker in sorted(statement.db.workers.items())
    ]


# -- inspection and management -----------------------------------------------------------------


@_implements("get_job")
def _get_job(statement: Statement, params: Params) -> list[Row]:
    row = statement.db.jobs.get(params["job_id"])
    return [] if row is None else [_job_row(row)]


_STATUS_ORDER = {status.value: position for position, status in enumerate(JobStatus)}


@_implements("count_jobs_by_status")
def _count_jobs_by_status(statement: Statement, params: Params) -> list[Row]:
    counts = Counter((row["queue"], row["status"]) for row in statement.db.jobs.values())
    return [
        {"queue": queue, "status": status, "count": count}
        for (queue, status), count in sorted(
            counts.items(), key=lambda item: (item[0][0], _STATUS_ORDER[item[0][1]])
        )
    ]


@_implements("check_schema")
def _check_schema(statement: Statement, params: Params) -> list[Row]:
    # The tables always exist here.
    return [{"count_1": 0}]


@_implements("list_jobs")
def _list_jobs(statement: Statement, params: Params) -> list[Row]:
    statuses = params["statuses"]
    filters = [
        (column, params[param])
        for column, param in (("queue", "queue"), ("task_name", "task_name"), ("lock", "lock"))
        if params[param] is not None
    ]
    rows = [
        row
        for row in statement.db.jobs.values()
        if all(row[column] == value for column, value in filters)
        and (statuses is None or row["status"] in statuses)
    ]
    rows.sort(key=lambda row: row["id"], reverse=True)
    return [_job_row(row) for row in _limited(rows, params["limit"], params["offset"] or 0)]


_HISTORY_STEPS = {TODO: 0, DOING: 1, ABORTING: 2}


@_implements("job_history")
def _job_history(statement: Statement, params: Params) -> list[Row]:
    """Stored events plus what the job's row shows, duplicates dropped (schema.job_history)."""
    steps = {
        (event["status"], event["at"], event["error"])
        for event in statement.db.job_events
        if event["job_id"] == params["job_id"]
    }
    row = statement.db.jobs.get(params["job_id"])
    if row is not None:
        steps.add((TODO, row["created_at"], None))
        if row["started_at"] is not None and row["status"] != TODO:
            steps.add((DOING, row["started_at"], None))
        if row["status"] in FINISHED and row["finished_at"] is not None:
            error = row["last_error"] if row["status"] in ENDED_IN_ERROR else None
            steps.add((row["status"], row["finished_at"], error))
    ordered = sorted(steps, key=lambda step: (step[1], _HISTORY_STEPS.get(step[0], 3)))
    return [{"status": status, "at": at, "error": error} for status, at, error in ordered]


@_implements("cancel_job")
def _cancel_job(statement: Statement, params: Params) -> list[Row]:
    row = statement.db.jobs.get(params["job_id"])
    if row is None or row["status"] != TODO:
        return []
    statement.update_job(row, status=JobStatus.CANCELLED.value, finished_at=statement.now)
    return [{"id": row["id"]}]


@_implements("abort_job")
def _abort_job(statement: Statement, params: Params) -> list[Row]:
    row = statement.db.jobs.get(params["job_id"])
    if row is None or row["status"] not in (TODO, DOING):
        return []
    if row["status"] == TODO:
        new = statement.update_job(row, status=JobStatus.CANCELLED.value, finished_at=statement.now)
    else:
        # The update trigger tells the worker running it (ABORT_CHANNEL).
        new = statement.update_job(row, status=ABORTING, finished_at=None)
    return [{"status": new["status"]}]


_RETRYABLE = frozenset({JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.ABORTED.value})


@_implements("retry_job")
def _retry_job(statement: Statement, params: Params) -> list[Row]:
    row = statement.db.jobs.get(params["job_id"])
    if row is None or row["status"] not in _RETRYABLE:
        return []
    statement.update_job(
        row,
        status=TODO,
        attempts=0,
        scheduled_at=_timestamp(statement, params["scheduled_at"]),
        started_at=None,
        finished_at=None,
        worker_id=None,
    )
    return [{"id": row["id"]}]


@_implements("delete_job")
def _delete_job(statement: Statement, params: Params) -> list[Row]:
    row = statement.db.jobs.get(params["job_id"])
    if row is None or row["status"] in RUNNING:
        return []
    statement.delete_job(row)
    return [{"id": row["id"]}]


@_implements("prune_jobs")
def _prune_jobs(statement: Statement, params: Params) -> list[Row]:
    statuses = frozenset(params["statuses"] or ())
    cutoff = statement.now - params["older_than"]
    prunable = [
        row
        for row in statement.db.jobs.values()
        if row["status"] in statuses
        and (row["finished_at"] if row["finished_at"] is not None else row["created_at"]) < cutoff
    ]
    for row in _limited(prunable, params["batch_size"]):
        statement.delete_job(row)
    return [{"count": len(statement.deleted)}]


# -- jobs written with COPY --------------------------------------------------------------------


@_implements("reserve_job_ids")
def _reserve_job_ids(statement: Statement, params: Params) -> list[Row]:
    # This connector has no COPY (supports_copy is False); the ids are handed out all the same.
    return [{"ids": [statement.next_id("jobs") for _ in range(params["count"] or 0)]}]


# -- periodic tasks ----------------------------------------------------------------------------

_TICK_ARRAYS = (
    "task_names",
    "periodic_ids",
    "defer_timestamps",
    "queues",
    "priorities",
    "locks",
    "queueing_locks",
    "args",
)


_TICK_KEY = ("task_name", "periodic_id", "defer_timestamp")


@_implements("defer_periodic_jobs")
def _defer_periodic_jobs(statement: Statement, params: Params) -> list[Row]:
    db = statement.db
    ticks = list(itertools.zip_longest(*(params[name] or () for name in _TICK_ARRAYS)))
    recorded = {
        (row["task_name"], row["periodic_id"], row["defer_timestamp"])
        for row in db.periodic_defers.values()
    }
    new_records: list[Row] = []
    result: list[Row] = []
    for task_name, periodic_id, timestamp, queue, priority, lock, queueing_lock, args in ticks:
        # Every tick draws a job id, recorded or not (nextval in the SELECT of the insert).
        job_id = statement.next_id("jobs")
        record = {
            "task_name": task_name,
            "periodic_id": periodic_id,
            "defer_timestamp": timestamp,
            "job_id": job_id,
        }
        _not_null(statement, "sqla_jobs_periodic_defers", record, record)
        key = (task_name, periodic_id, timestamp)
        if key in recorded:
            continue  # ON CONFLICT DO NOTHING: this tick was deferred already
        recorded.add(key)
        new_records.append(record)
        # The job's insert does nothing when its queueing lock is taken: the tick stays done.
        written: int | None = None
        if not statement.queueing_lock_taken(queueing_lock):
            values = {
                "queue": queue,
                "task_name": task_name,
                "priority": priority,
                "lock": lock,
                "queueing_lock": queueing_lock,
                "args": _jsonb(statement, args) if args is not None else None,
                "scheduled_at": None,
            }
            _not_null(statement, "sqla_jobs_jobs", values, _NOT_NULL_JOB_COLUMNS)
            written = statement.insert_job(job_id, values)["id"]
        result.append({**{name: record[name] for name in _TICK_KEY}, "job_id": written})

    def write_records() -> None:
        for record in new_records:
            record_id = statement.next_id("periodic_defers")
            db.periodic_defers[record_id] = {"id": record_id, **record}

    statement.on_commit.append(write_records)
    return result


@_implements("prune_periodic_defers")
def _prune_periodic_defers(statement: Statement, params: Params) -> list[Row]:
    db = statement.db
    schedules: dict[tuple[str, str], list[Row]] = {}
    for row in db.periodic_defers.values():
        schedules.setdefault((row["task_name"], row["periodic_id"]), []).append(row)
    keep, before = params["keep"], params["before"]
    if keep is None or before is None:
        return [{"count": 0}]  # a comparison with NULL is never true
    pruned = [
        row["id"]
        for rows in schedules.values()
        for rank, row in enumerate(
            sorted(rows, key=lambda row: row["defer_timestamp"], reverse=True), start=1
        )
        if rank > keep and row["defer_timestamp"] < before
    ]
    for record_id in pruned:
        del db.periodic_defers[record_id]
    return [{"count": len(pruned)}]


# -- stalled jobs ------------------------------------------------------------------------------


def _heartbeat_age(statement: Statement, worker: Row | None) -> float | None:
    if worker is None:
        return None
    last_heartbeat: datetime.datetime = worker["last_heartbeat"]
    return (statement.now - last_heartbeat).total_seconds()


@_implements("adopt_stalled_jobs")
def _adopt_stalled_jobs(statement: Statement, params: Params) -> list[Row]:
    db = statement.db
    this_worker = params["worker_id"]
    cutoff = statement.now - params["stalled_timeout"]
    stalled = [
        row
        for row in sorted(db.jobs.values(), key=lambda row: row["id"])
        if row["status"] in RUNNING
        and row["worker_id"] != this_worker  # IS DISTINCT FROM
        and (
            (owner := db.workers.get(row["worker_id"])) is None or owner["last_heartbeat"] < cutoff
        )
    ]
    adopted = []
    for row in _limited(stalled, params["limit"]):
        owner = db.workers.get(row["worker_id"])
        new = statement.update_job(row, worker_id=this_worker)
        result = _job_row(new)
        del result["worker_id"]
        result["stalled_worker_id"] = row["worker_id"]
        result["stalled_worker_name"] = None if owner is None else owner["name"]
        result["heartbeat_age"] = _heartbeat_age(statement, owner)
        adopted.append(result)
    return adopted


@_implements("finish_recovered_jobs")
def _finish_recovered_jobs(statement: Statement, params: Params) -> list[Row]:
    outcomes = zip(
        params["ids"] or (),
        params["statuses"] or (),
        params["errors"] or (),
        params["retry_ats"] or (),
        params["stalled_worker_ids"] or (),
        strict=True,
    )
    finished = []
    for job_id, status, error, retry_at, stalled_worker_id in outcomes:
        status = _status(statement, status)
        row = statement.db.jobs.get(job_id)
        if (
            row is None
            or job_id in statement.updated
            or not _equal(row["worker_id"], params["worker_id"])
            or row["status"] not in RUNNING
        ):
            continue
        requeued = status == TODO and row["status"] != ABORTING
        new = statement.update_job(
            row,
            # A job asked to abort meanwhile ends aborted, whatever was planned.
            status=JobStatus.ABORTED.value if row["status"] == ABORTING else status,
            scheduled_at=(
                row["scheduled_at"] if retry_at is None else _timestamp(statement, retry_at)
            ),
            finished_at=None if requeued else statement.now,
            last_error=error,
            worker_id=None if requeued else stalled_worker_id,
        )
        finished.append({"id": new["id"], "status": new["status"]})
    return finished


@_implements("delete_stalled_workers")
def _delete_stalled_workers(statement: Statement, params: Params) -> list[Row]:
    db = statement.db
    cutoff = statement.now - params["stalled_timeout"]
    holding = {row["worker_id"] for row in db.jobs.values() if row["status"] in RUNNING}
    this_worker = params["worker_id"]
    deleted = [
        worker
        for worker_id, worker in sorted(db.workers.items())
        if this_worker is not None
        and worker_id != this_worker
        and worker["last_heartbeat"] < cutoff
        and worker_id not in holding
    ]
    for worker in deleted:
        del db.workers[worker["id"]]
    return [
        {
            **{column: worker[column] for column in ("id", "name", "hostname", "pid")},
            "heartbeat_age": _heartbeat_age(statement, worker),
        }
        for worker in deleted
    ]


@_implements("aborting_jobs_of_worker")
def _aborting_jobs_of_worker(statement: Statement, params: Params) -> list[Row]:
    return [
        {"id": row["id"]}
        for row in statement.db.jobs.values()
        if _equal(row["worker_id"], params["worker_id"]) and row["status"] == ABORTING
    ]


@_implements("reregister_worker")
def _reregister_worker(statement: Statement, params: Params) -> list[Row]:
    db = statement.db
    worker_id = params["worker_id"]
    if worker_id in db.workers:
        return []
    values = {column: params[column] for column in ("name", "hostname", "pid", "concurrency")}
    _not_null(statement, "sqla_jobs_workers", {"id": worker_id, **values}, ("id", *values))
    db.workers[worker_id] = {
        "id": worker_id,
        **values,
        "queues": None if params["queues"] is None else list(params["queues"]),
        "started_at": statement.now,
        "last_heartbeat": statement.now,
    }
    return [{"id": worker_id}]
