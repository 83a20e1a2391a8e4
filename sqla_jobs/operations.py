"""The job manager's operations, each written once, for the sync and the async API alike.

An operation is a generator: it yields the statements it needs (`Fetch`, `Copy`), receives
their rows, and returns its result. `run` drives it on a connector's sync methods and
`run_async` on its async ones; an error from a statement is thrown back into the operation,
which may turn it into a better one (`AlreadyEnqueued`). So a new operation is one function,
and `JobManager` gives it its two entry points (``x`` and ``x_async``) in one line each.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Generator, Iterable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar

from . import queries
from ._query import Query
from .connectors.base import BaseConnector, Row
from .errors import AlreadyEnqueued, ConnectorError, InvalidJobOptions, JobNotFound
from .jobs import (
    DEFAULT_MAX_ARGS_BYTES,
    Job,
    JobEvent,
    JobSpec,
    check_options,
    check_tags,
    dump_args,
    dump_meta,
    tags_value,
)
from .statuses import FINISHED_STATUSES, QUEUEING_LOCK_INDEX, UNIQUE_KEY_INDEX, JobStatus

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Fetch:
    """Send ``query`` with ``params``; the operation receives its rows (a list, maybe empty)."""

    query: Query
    params: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Copy:
    """COPY ``rows`` into the jobs table's ``columns``; the operation receives None."""

    columns: Sequence[str]
    rows: Iterable[Sequence[Any]]


Step: TypeAlias = Fetch | Copy
#: What an operation is: it yields steps, is sent their results, returns ``T``.
Operation: TypeAlias = Generator[Step, Any, T]


def run(
    connector: BaseConnector,
    operation: Operation[T],
    statements: queries.Statements = queries.DEFAULT,
) -> T:
    """Drive ``operation`` on the connector's sync methods, its statements sent as
    ``statements`` has them (for the tables in the app's schema)."""
    try:
        step = next(operation)
        while True:
            try:
                if isinstance(step, Fetch):
                    query = statements[step.query]
                    reply: list[Row] | None = connector.fetch_all(query, step.params)
                else:
                    connector.copy_rows(statements.jobs_table, step.columns, step.rows)
                    reply = None
            except ConnectorError as exc:
                step = operation.throw(exc)  # raised at the operation's ``yield``
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(
    connector: BaseConnector,
    operation: Operation[T],
    statements: queries.Statements = queries.DEFAULT,
) -> T:
    """Drive ``operation`` on the connector's async methods (see `run`)."""
    try:
        step = next(operation)
        while True:
            try:
                if isinstance(step, Fetch):
                    query = statements[step.query]
                    reply: list[Row] | None = await connector.fetch_all_async(query, step.params)
                else:
                    await connector.copy_rows_async(statements.jobs_table, step.columns, step.rows)
                    reply = None
            except ConnectorError as exc:
                step = operation.throw(exc)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# -- defer -------------------------------------------------------------------------------------

#: Batches of at least this many jobs are written with COPY when the connector can (psycopg
#: 3): two round trips instead of one, but several times faster per row.
COPY_THRESHOLD = 1000


#: How many times a unique job's defer that returns the existing job tries again when the job
#: holding its key finished (or was deleted) between its insert and its look-up.
UNIQUE_TRIES = 5

_CopyRow = tuple[Any, ...]


@dataclasses.dataclass(slots=True)
class _Batch:
    """A batch's jobs checked, as the statements take them: each list None when no job of
    the batch uses the column (one NULL, not one per job)."""

    args: list[str]
    tags: list[str | None] | None = None
    metas: list[str | None] | None = None
    unique_keys: list[str | None] | None = None
    unique_statuses: list[str | None] | None = None
    returns_existing: bool = False


def array_literal(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of ``items`` (text, each quoted), for a cast to an array."""
    quoted = (item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return "{" + ",".join(f'"{item}"' for item in quoted) + "}"


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (``{1,2,3}``), for a cast to ``bigint[]`` or
    ``integer[]``: the worker's finish sends its batch's ids so, ~5x cheaper than a driver's
    adaptation of a Python list, on the worker's hot path."""
    return "{" + ",".join(map(str, values)) + "}"


def _unique_statuses(spec: JobSpec) -> str | None:
    unique = spec.unique
    if unique is None:
        return None
    return "{" + ",".join(JobStatus(status).value for status in unique.statuses) + "}"


def defer(spec: JobSpec, *, max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES) -> Operation[int]:
    params = _one_job_params(spec, max_args_bytes)  # a bad job raises before any statement
    key = params["unique_key"]
    if key is not None and spec.on_conflict == "return_existing":
        return (yield from _defer_or_existing(spec, params))
    try:
        rows: list[Row] = yield Fetch(queries.defer_job, params)
    except ConnectorError as exc:
        if exc.constraint_name == UNIQUE_KEY_INDEX:
            holders = yield from _unique_holders([key])
            raise _unique_taken([spec], key, holders.get(key)) from exc
        if exc.constraint_name != QUEUEING_LOCK_INDEX:
            raise
        raise _already_enqueued([spec], spec.queueing_lock) from exc
    return int(rows[0]["id"])


def _defer_or_existing(spec: JobSpec, params: dict[str, Any]) -> Operation[int]:
    """A unique job written, or the id of the job that holds its key."""
    key = params["unique_key"]
    for _ in range(UNIQUE_TRIES):
        try:
            rows: list[Row] = yield Fetch(queries.defer_job_unless_unique_taken, params)
        except ConnectorError as exc:
            if exc.constraint_name != QUEUEING_LOCK_INDEX:
                raise
            raise _already_enqueued([spec], spec.queueing_lock) from exc
        if rows:
            return int(rows[0]["id"])
        holders = yield from _unique_holders([key])
        if key in holders:
            return int(holders[key]["id"])
    raise _unique_taken([spec], key, None)


def defer_many(
    specs: Sequence[JobSpec],
    *,
    can_copy: bool,
    copy_threshold: int = COPY_THRESHOLD,
    max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES,
) -> Operation[list[int]]:
    """All the jobs in one transaction, or none; their ids in order."""
    if not specs:
        return []
    # Every job is checked before any statement: a bad one leaves nothing written.
    batch = _checked_batch(specs, max_args_bytes)
    if batch.returns_existing:
        return (yield from _defer_many_or_existing(specs, batch))
    try:
        if can_copy and len(specs) >= copy_threshold and batch.unique_keys is None:
            rows: list[Row] = yield Fetch(queries.reserve_job_ids, {"count": len(specs)})
            ids = sorted(rows[0]["ids"])
            if batch.tags is None and batch.metas is None:
                yield Copy(queries.COPY_COLUMNS, _copy_rows(ids, specs, batch.args))
            else:
                yield Copy(queries.COPY_COLUMNS_WITH_TAGS, _copy_rows_with_tags(ids, specs, batch))
            return ids
        rows = yield Fetch(queries.defer_jobs, _many_jobs_params(specs, batch))
        return [int(row["id"]) for row in rows]
    except ConnectorError as exc:
        if exc.constraint_name not in (QUEUEING_LOCK_INDEX, UNIQUE_KEY_INDEX):
            raise
        refused = exc
    if refused.constraint_name == UNIQUE_KEY_INDEX:
        assert batch.unique_keys is not None
        raise (yield from _unique_refusal(specs, batch.unique_keys)) from refused
    key = yield from _clashing_lock(specs)
    raise _already_enqueued(specs, key) from refused


def _defer_many_or_existing(specs: Sequence[JobSpec], batch: _Batch) -> Operation[list[int]]:
    """A batch whose unique jobs return the existing job when their key is taken: the ids of
    the jobs written and of those found, in order. A job whose key's holder finished between
    the insert and the look-up is written by a further statement."""
    assert batch.unique_keys is not None
    keys = batch.unique_keys
    ids: list[int | None] = [None] * len(specs)
    pending = list(range(len(specs)))
    for _ in range(UNIQUE_TRIES):
        params = _many_jobs_params([specs[i] for i in pending], _sub_batch(batch, pending))
        try:
            rows: list[Row] = yield Fetch(queries.defer_jobs_unless_unique_taken, params)
        except ConnectorError as exc:
            if exc.constraint_name != QUEUEING_LOCK_INDEX:
                raise
            key = yield from _clashing_lock(specs)
            raise _already_enqueued(specs, key) from exc
        rows.sort(key=lambda row: int(row["id"]))
        written = {row["unique_key"]: int(row["id"]) for row in rows if row["unique_key"]}
        plain = iter(int(row["id"]) for row in rows if not row["unique_key"])
        for i in pending:
            key = keys[i]
            ids[i] = next(plain) if key is None else written.get(key)
        pending = [i for i in pending if ids[i] is None]
        if not pending:
            break
        # Only unique jobs are left: the others were written.
        missing = [key for i in pending if (key := keys[i]) is not None]
        holders = yield from _unique_holders(list(dict.fromkeys(missing)))
        for i in pending:
            holder = holders.get(keys[i] or "")
            if holder is not None:
                ids[i] = int(holder["id"])
        pending = [i for i in pending if ids[i] is None]
        if not pending:
            break
    if pending:
        raise _unique_taken(specs, keys[pending[0]], None)
    return [job_id for job_id in ids if job_id is not None]


def _sub_batch(batch: _Batch, indexes: Sequence[int]) -> _Batch:
    if len(indexes) == len(batch.args):
        return batch

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in indexes]

    return _Batch(
        args=[batch.args[i] for i in indexes],
        tags=pick(batch.tags),
        metas=pick(batch.metas),
        unique_keys=pick(batch.unique_keys),
        unique_statuses=pick(batch.unique_statuses),
        returns_existing=batch.returns_existing,
    )


def _unique_holders(keys: Sequence[str]) -> Operation[dict[str, Row]]:
    """The jobs that hold ``keys``, by key (none if the caller's transaction is aborted)."""
    try:
        rows: list[Row] = yield Fetch(queries.unique_jobs, {"unique_keys": list(keys)})
    except ConnectorError:  # e.g. the caller's transaction, which the refusal aborted
        return {}
    return {row["unique_key"]: row for row in rows}


def _unique_refusal(
    specs: Sequence[JobSpec], keys: Sequence[str | None]
) -> Operation[AlreadyEnqueued]:
    """The AlreadyEnqueued of a batch the unique index refused: which key, held by which job
    (two jobs of the batch, or a job of the table)."""
    seen: set[str] = set()
    for key in keys:
        if key is not None:
            if key in seen:
                return _unique_taken(specs, key, None, in_batch=True)
            seen.add(key)
    holders = yield from _unique_holders(list(seen))
    for key in keys:
        if key is not None and key in holders:
            return _unique_taken(specs, key, holders[key])
    return _unique_taken(specs, None, None)


def _unique_taken(
    specs: Sequence[JobSpec],
    key: str | None,
    holder: Row | None,
    *,
    in_batch: bool = False,
) -> AlreadyEnqueued:
    """The AlreadyEnqueued of unique jobs whose key another job holds."""
    spec = next((s for s in specs if s.unique is not None), specs[0])
    unique = spec.unique
    if unique is not None and unique.key is not None:
        what = f"unique key {unique.key!r}"
    else:
        what = "these arguments"
    if in_batch:
        held = "another job of this batch has the same unique key"
    elif holder is not None:
        held = f"job {holder['id']} ({holder['status']}) holds its unique key"
    else:
        held = "another job holds its unique key"
    statuses = ", ".join(JobStatus(s).value for s in unique.statuses) if unique else ""
    batch = f" None of the {len(specs)} jobs of this batch were deferred." if len(specs) > 1 else ""
    return AlreadyEnqueued(
        f"A job of task {spec.task_name!r} with {what} already exists: {held}, and only one "
        f"job per key may be {statuses} at a time.{batch} Catch sqla_jobs.AlreadyEnqueued "
        "(its job_id names the existing job), or pass on_conflict='return_existing' to get "
        "that job's id instead.",
        unique_key=key,
        job_id=None if holder is None else int(holder["id"]),
    )


def _clashing_lock(specs: Sequence[JobSpec]) -> Operation[str | None]:
    """Which queueing lock of a refused batch is taken: by two jobs of the batch, or by a job
    that waits (None if that job has started since)."""
    locks = [spec.queueing_lock for spec in specs if spec.queueing_lock is not None]
    distinct = list(dict.fromkeys(locks))
    if len(distinct) < len(locks):
        return next(lock for lock in distinct if locks.count(lock) > 1)
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    try:
        rows: list[Row] = yield Fetch(queries.waiting_queueing_locks, {"queueing_locks": distinct})
    except ConnectorError:  # e.g. the caller's transaction, which the refusal aborted
        return None
    return str(rows[0]["queueing_lock"]) if rows else None


def _checked_batch(specs: Sequence[JobSpec], max_args_bytes: int) -> _Batch:
    """Each job's options checked, its arguments as JSON, its tags, meta and unique key as the
    statements take them. The jobs of a batch mostly share their options (one task, queue,
    priority, the same tags and meta objects): each set of options is checked once, tags and
    meta told apart by identity (one configure() gives every job of its batch the same
    objects), which costs no hashing of lists."""
    checked: set[tuple[Any, ...]] = set()
    args = []
    extras = False
    modes: set[str] = set()
    for spec in specs:
        options: tuple[Any, ...] = (
            spec.task_name,
            spec.queue,
            spec.priority,
            spec.lock,
            spec.queueing_lock,
            spec.scheduled_at,
        )
        if spec.tags is not None or spec.meta is not None or spec.unique is not None:
            options += (id(spec.tags), id(spec.meta), id(spec.unique), spec.on_conflict)
        elif spec.on_conflict != "raise":
            options += (spec.on_conflict,)
        if options not in checked:
            check_options(spec)
            checked.add(options)
            if spec.tags or spec.meta or spec.unique is not None:
                extras = True
            if spec.unique is not None:
                modes.add(spec.on_conflict)
        args.append(dump_args(spec.task_name, spec.args, max_args_bytes))
    batch = _Batch(args)
    if not extras:
        return batch
    if len(modes) > 1:
        raise InvalidJobOptions(
            "A batch mixes unique jobs that raise AlreadyEnqueued with unique jobs that return "
            "the existing job (on_conflict): defer them in two batches."
        )
    batch.returns_existing = modes == {"return_existing"}
    tags: dict[int, str | None] = {}
    metas: dict[int, str | None] = {}
    batch.tags = []
    batch.metas = []
    for spec in specs:
        if spec.tags is None:
            batch.tags.append(None)
        else:
            if id(spec.tags) not in tags:
                tags[id(spec.tags)] = _tags_literal(spec.tags)
            batch.tags.append(tags[id(spec.tags)])
        if spec.meta is None:
            batch.metas.append(None)
        else:
            if id(spec.meta) not in metas:
                metas[id(spec.meta)] = dump_meta(spec.task_name, spec.meta)
            batch.metas.append(metas[id(spec.meta)])
    if not any(batch.tags):
        batch.tags = None
    if not any(batch.metas):
        batch.metas = None
    if modes:
        batch.unique_keys = [_unique_key(spec) for spec in specs]
        batch.unique_statuses = [_unique_statuses(spec) for spec in specs]
    return batch


def _tags_literal(tags: Sequence[str] | None) -> str | None:
    value = tags_value(tags)
    return None if value is None else array_literal(value)


def _unique_key(spec: JobSpec) -> str | None:
    if spec.unique is None:
        return None
    return spec.unique.key_for(spec.task_name, spec.args, spec.scheduled_at)


def _one_job_params(spec: JobSpec, max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES) -> dict[str, Any]:
    args = spec.args_json(max_args_bytes)  # checks the options too
    unique = spec.unique
    return {
        "queue": spec.queue,
        "task_name": spec.task_name,
        "priority": spec.priority,
        "lock": spec.lock,
        "queueing_lock": spec.queueing_lock,
        "args": args,
        "scheduled_at": spec.scheduled_at,
        "trace_context": spec.trace_context,
        "tags": None if not spec.tags else _tags_literal(spec.tags),
        "meta": None if not spec.meta else dump_meta(spec.task_name, spec.meta),
        "unique_key": None if unique is None else _unique_key(spec),
        "unique_statuses": None if unique is None else _unique_statuses(spec),
    }


def _many_jobs_params(specs: Sequence[JobSpec], batch: _Batch) -> dict[str, Any]:
    return {
        "queues": [s.queue for s in specs],
        "task_names": [s.task_name for s in specs],
        "priorities": [s.priority for s in specs],
        "locks": [s.lock for s in specs],
        "queueing_locks": [s.queueing_lock for s in specs],
        "args": batch.args,
        "scheduled_ats": [s.scheduled_at for s in specs],
        "trace_contexts": [s.trace_context for s in specs],
        # A NULL array: unnest pads it with a NULL per job.
        "tags": batch.tags,
        "metas": batch.metas,
        "unique_keys": batch.unique_keys,
        "unique_statuses": batch.unique_statuses,
    }


def _copy_rows(
    ids: Sequence[int], specs: Sequence[JobSpec], args: Sequence[str]
) -> Iterator[_CopyRow]:
    """The rows of `queries.COPY_COLUMNS`, in order."""
    for job_id, s, arguments in zip(ids, specs, args, strict=True):
        yield (
            job_id,
            s.queue,
            s.task_name,
            s.priority,
            s.lock,
            s.queueing_lock,
            arguments,
            s.scheduled_at,
            s.trace_context,
        )


def _copy_rows_with_tags(
    ids: Sequence[int], specs: Sequence[JobSpec], batch: _Batch
) -> Iterator[_CopyRow]:
    """The rows of `queries.COPY_COLUMNS_WITH_TAGS`, in order."""
    count = len(specs)
    tags = batch.tags or [None] * count
    metas = batch.metas or [None] * count
    for row, tag, meta in zip(_copy_rows(ids, specs, batch.args), tags, metas, strict=True):
        yield (*row, tag, meta)


def _already_enqueued(specs: Sequence[JobSpec], key: str | None) -> AlreadyEnqueued:
    """The AlreadyEnqueued for jobs the queueing-lock index refused, naming the job."""
    clashing = next((s for s in specs if key is not None and s.queueing_lock == key), None)
    task = f" of task {clashing.task_name!r}" if clashing else ""
    which = f"with queueing_lock {key!r}" if key is not None else "with one of its queueing locks"
    batch = f" None of the {len(specs)} jobs of this batch were deferred." if len(specs) > 1 else ""
    return AlreadyEnqueued(
        f"A job{task} {which} is already waiting: only one job per queueing lock may wait at "
        f"a time.{batch} Catch sqla_jobs.AlreadyEnqueued to ignore the duplicate, or defer it "
        "without a queueing_lock.",
        queueing_lock=key,
    )


# -- inspection --------------------------------------------------------------------------------


def get_job(job_id: int) -> Operation[Job]:
    rows: list[Row] = yield Fetch(queries.get_job, {"job_id": job_id})
    if not rows:
        raise _not_found(job_id)
    return Job.from_row(rows[0])


def count_jobs(tags: Sequence[str] | None = None) -> Operation[dict[tuple[str, JobStatus], int]]:
    """Jobs per (queue, status); with ``tags``, of the jobs having all of them."""
    wanted = None if tags is None else tag_filter(tags)
    if not wanted:
        rows: list[Row] = yield Fetch(queries.count_jobs_by_status)
    else:
        rows = yield Fetch(queries.count_jobs_by_status_with_tags, {"tags": wanted})
    return {(row["queue"], JobStatus(row["status"])): int(row["count"]) for row in rows}


Statuses = JobStatus | str | Collection[JobStatus | str]


def list_jobs(
    *,
    queue: str | None,
    task_name: str | None,
    status: Statuses | None,
    lock: str | None,
    limit: int,
    offset: int,
    tags: Sequence[str] | None = None,
    workflow_id: int | None = None,
) -> Operation[list[Job]]:
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be 0 or more, not {limit} and {offset}")
    params: dict[str, Any] = {
        "queue": queue,
        "task_name": task_name,
        "lock": lock,
        "workflow_id": workflow_id,
        "statuses": None if status is None else _statuses(status, "status"),
        "limit": limit,
        "offset": offset,
    }
    query = queries.list_jobs
    if tags is not None and (wanted := tag_filter(tags)):  # none asked: no filter
        params["tags"] = wanted
        query = queries.list_jobs_with_tags
    rows: list[Row] = yield Fetch(query, params)
    return [Job.from_row(row) for row in rows]


def tag_filter(tags: Sequence[str]) -> list[str]:
    """The tags a listing or a count asks for, checked like a job's (`InvalidJobOptions`):
    jobs having every one of them match."""
    if isinstance(tags, str):
        raise InvalidJobOptions(
            f"tags= takes a list of tags (jobs having all of them match), not the string "
            f"{tags!r}: e.g. tags=[{tags!r}]."
        )
    tags = list(tags)
    check_tags(tags, None)
    return tags


def job_history(job_id: int) -> Operation[list[JobEvent]]:
    rows: list[Row] = yield Fetch(queries.job_history, {"job_id": job_id})
    # Every job's history starts with its creation (its row's created_at): nothing, no job.
    if not rows:
        raise _not_found(job_id)
    return [JobEvent(JobStatus(row["status"]), row["at"], row["error"]) for row in rows]


def list_workers() -> Operation[list[dict[str, Any]]]:
    rows: list[Row] = yield Fetch(queries.list_workers)
    for row in rows:
        row["heartbeat_age"] = float(row["heartbeat_age"])
    return rows


def _statuses(statuses: Statuses, what: str) -> list[str]:
    """Status values from one status or many, with an error naming the valid ones."""
    items = [statuses] if isinstance(statuses, str) else list(statuses)
    try:
        return [JobStatus(item).value for item in items]
    except ValueError:
        known = ", ".join(status.value for status in JobStatus)
        raise ValueError(f"{what}: {statuses!r} is not a job status; use {known}") from None


def _not_found(job_id: int) -> JobNotFound:
    return JobNotFound(
        f"No job with id {job_id}: it never existed or was deleted (delete_jobs, prune_jobs). "
        "List jobs with `sqla-jobs jobs list`."
    )


# -- management --------------------------------------------------------------------------------


def cancel_job(job_id: int) -> Operation[bool]:
    if (yield Fetch(queries.cancel_jobs, {"job_ids": [job_id]})):
        return True
    yield from get_job(job_id)  # JobNotFound, or it exists in another status
    return False


def abort_job(job_id: int) -> Operation[JobStatus]:
    rows: list[Row] = yield Fetch(queries.abort_jobs, {"job_ids": [job_id]})
    if rows:
        return JobStatus(rows[0]["status"])
    return (yield from get_job(job_id)).status


def _check_schedule(schedule_at: datetime.datetime | None) -> None:
    if schedule_at is not None and schedule_at.tzinfo is None:
        raise ValueError(
            f"schedule_at={schedule_at!r} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5))."
        )


def retry_job(job_id: int, schedule_at: datetime.datetime | None) -> Operation[bool]:
    _check_schedule(schedule_at)
    try:
        rows: list[Row] = yield Fetch(
            queries.retry_jobs, {"job_ids": [job_id], "scheduled_at": schedule_at}
        )
    except ConnectorError as exc:
        if exc.constraint_name == UNIQUE_KEY_INDEX:
            job = yield from get_job(job_id)
            holder = (yield from _unique_holders([job.unique_key or ""])).get(job.unique_key or "")
            holding = f"job {holder['id']} ({holder['status']})" if holder else "another job"
            raise AlreadyEnqueued(
                f"Job {job_id} cannot go back to the queue: it is unique, and {holding} holds "
                "its unique key now. Retry it once that job has finished (or left the statuses "
                "it is unique among), or cancel that job.",
                unique_key=job.unique_key,
                job_id=None if holder is None else int(holder["id"]),
            ) from exc
        if exc.constraint_name != QUEUEING_LOCK_INDEX:
            raise
        key = (yield from get_job(job_id)).queueing_lock
        raise AlreadyEnqueued(
            f"Job {job_id} cannot go back to the queue: another job with queueing_lock "
            f"{key!r} is already waiting, and only one may wait at a time. Retry it once that "
            "job has started, or cancel that job.",
            queueing_lock=key,
        ) from exc
    if rows:
        return True
    yield from get_job(job_id)
    return False


def delete_job(job_id: int) -> Operation[bool]:
    if (yield Fetch(queries.delete_jobs, {"job_ids": [job_id]})):
        return True
    yield from get_job(job_id)
    return False


@dataclasses.dataclass(slots=True)
class BulkResult:
    """What a bulk action did: ``done`` (changed), ``skipped`` (in a status the action leaves
    alone), ``gone`` (no such job), ``refused`` (job id and why: a retry whose queueing lock
    another waiting job holds)."""

    action: str
    done: list[int] = dataclasses.field(default_factory=list)
    skipped: list[int] = dataclasses.field(default_factory=list)
    gone: list[int] = dataclasses.field(default_factory=list)
    refused: list[tuple[int, str]] = dataclasses.field(default_factory=list)


#: The bulk actions, by name: the statement, by the same rules as the one-job operations.
BULK_ACTIONS = {
    "cancel": queries.cancel_jobs,
    "abort": queries.abort_jobs,
    "retry": queries.retry_jobs,
    "delete": queries.delete_jobs,
}


def act_on_jobs(action: str, job_ids: Sequence[int]) -> Operation[BulkResult]:
    """``action`` (cancel, abort, retry or delete) on every job of ``job_ids`` at once, by the
    rules of `cancel_job`, `abort_job`, `retry_job` and `delete_job`: two statements whatever
    their number (a retry that a queueing lock or a unique key refuses goes job by job, to say
    which)."""
    statement = BULK_ACTIONS.get(action)
    if statement is None:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(BULK_ACTIONS)}")
    result = BulkResult(action)
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return result
    params: dict[str, Any] = {"job_ids": ids}
    if action == "retry":
        params["scheduled_at"] = None
    try:
        rows: list[Row] = yield Fetch(statement, params)
    except ConnectorError as exc:
        if exc.constraint_name not in (QUEUEING_LOCK_INDEX, UNIQUE_KEY_INDEX):
            raise
        for job_id in ids:  # which of them clash: one at a time
            try:
                retried = yield from retry_job(job_id, None)
            except JobNotFound:
                result.gone.append(job_id)
            except AlreadyEnqueued as refused:
                result.refused.append((job_id, str(refused)))
            else:
                (result.done if retried else result.skipped).append(job_id)
        return result
    changed = {int(row["id"]) for row in rows}
    left = [job_id for job_id in ids if job_id not in changed]
    existing: set[int] = set()
    if left:
        found: list[Row] = yield Fetch(queries.existing_job_ids, {"job_ids": left})
        existing = {int(row["id"]) for row in found}
    for job_id in ids:
        if job_id in changed:
            result.done.append(job_id)
        elif job_id in existing:
            result.skipped.append(job_id)
        else:
            result.gone.append(job_id)
    return result


def prune_jobs(
    older_than: datetime.timedelta, statuses: Statuses, batch_size: int
) -> Operation[int]:
    if not isinstance(older_than, datetime.timedelta) or older_than < datetime.timedelta(0):
        raise ValueError(
            f"older_than must be a timedelta of 0 or more, e.g. timedelta(days=7); "
            f"not {older_than!r}"
        )
    values = _statuses(statuses, "statuses")
    unfinished = [value for value in values if JobStatus(value) not in FINISHED_STATUSES]
    if unfinished or not values:
        raise ValueError(
            f"prune_jobs deletes finished jobs only; {unfinished or 'no status'} given. Pass "
            "statuses among succeeded, failed, cancelled, aborted (cancel or abort a job "
            "first, or delete it with delete_job)."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    params = {"older_than": older_than, "statuses": values, "batch_size": batch_size}
    deleted = 0
    while True:
        rows: list[Row] = yield Fetch(queries.prune_jobs, params)
        batch = int(rows[0]["count"]) if rows else 0
        deleted += batch
        if batch < batch_size:
            return deleted


# -- the queue at a glance (the dashboard's overview, the metrics) ------------------------------

#: Tables up to this many jobs (by the span of their ids) are counted exactly; bigger ones from
#: a sample of their blocks (`Counts.estimated`).
EXACT_COUNT_LIMIT = 100_000
#: Rows a sampled count reads, about.
SAMPLE_ROWS = 20_000


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """Jobs per (queue, status); ``estimated`` when read from a sample."""

    by_queue: dict[str, dict[JobStatus, int]]
    estimated: bool


def job_counts(exact_limit: int = EXACT_COUNT_LIMIT) -> Operation[Counts]:
    """Jobs per queue and status: exact on a table of up to ``exact_limit`` jobs, else
    estimated from a sample of its blocks (a count of every row would read the whole table)."""
    rows: list[Row] = yield Fetch(queries.dashboard_id_span)
    span = int(rows[0]["span"]) if rows else 0
    if span <= exact_limit:
        counted = yield from count_jobs()
        estimated = False
    else:
        percent = min(100.0, 100.0 * SAMPLE_ROWS / span)
        sample: list[Row] = yield Fetch(queries.dashboard_sampled_counts, {"percent": percent})
        scale = 100.0 / percent
        counted = {
            (row["queue"], JobStatus(row["status"])): round(int(row["count"]) * scale)
            for row in sample
        }
        estimated = True
    by_queue: dict[str, dict[JobStatus, int]] = {}
    for (queue, status), count in sorted(counted.items()):
        by_queue.setdefault(queue, {})[status] = count
    return Counts(by_queue, estimated)


def oldest_waiting() -> Operation[list[Row]]:
    """Per queue: jobs due and waiting, and the age in seconds of the oldest."""
    rows: list[Row] = yield Fetch(queries.dashboard_oldest_waiting)
    return [{**row, "age": float(row["age"]), "waiting": int(row["waiting"])} for row in rows]
