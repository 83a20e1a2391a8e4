"""Jobs as values: what a defer writes and what a claim reads back."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import re
import reprlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from .errors import InvalidJobArguments, InvalidJobOptions, InvalidJobResult, JobTimeout
from .statuses import CANCELLED_BY_TASK, SNOOZED, UNIQUE_REQUIRED_STATUSES, JobStatus

DEFAULT_QUEUE = "default"


# Frozen without __slots__: a claim builds a Job per row straight into its __dict__ (see
# from_claim_row), which a frozen dataclass's __init__ (one object.__setattr__ per field) makes
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
    #: The W3C trace context of the defer, as JSON, when the app traces (OpenTelemetry);
    #: the worker's span for the job links to it. None otherwise.
    trace_context: str | None = None
    #: The job's tags (``configure(tags=[...])``), in the order given; empty without.
    tags: tuple[str, ...] = ()
    #: The JSON object given as ``configure(meta={...})``; empty without.
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: A unique job's key (``configure(unique=...)``), a hash; None for other jobs.
    unique_key: str | None = None
    #: Why the stored arguments could not be read (a row written or edited outside
    #: sqla_jobs: not a JSON object, nested too deep to decode); ``args`` is then empty and a
    #: worker fails the job with this reason instead of running it. None normally.
    args_error: str | None = None
    #: What the task returned (decoded JSON) when the job succeeded; None when it returned
    #: None, its task does not store results (``store_result=False``), or it has not
    #: succeeded. Read by `JobManager.get_job`, `get_result` and `wait_for`, not by listings.
    result: Any = None
    #: The workflow the job belongs to (``app.workflow()``, ``app.defer_workflow()``); None
    #: for a job deferred on its own.
    workflow_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Build a Job from a row of the jobs table (any subset of its columns); ``args`` as
        the statements read it (JSON text), or already decoded."""
        values = {name: row[name] for name in _FIELD_NAMES if name in row}
        if "status" in values:
            values["status"] = JobStatus(values["status"])
        if isinstance(values.get("args"), str):
            values["args"], values["args_error"] = load_args(values["args"])
        if "tags" in values:
            values["tags"] = () if values["tags"] is None else tuple(values["tags"])
        if "meta" in values:
            values["meta"] = load_meta(values["meta"])
        if isinstance(values.get("result"), str):
            values["result"] = load_result(values["result"])
        return cls(**values)

    @classmethod
    def from_claim_row(cls, row: dict[str, Any], worker_id: int) -> Job:
        """Build a Job from a row a claim returned (the claim's hot path): every Job field but
        the two the claim set, status ('doing') and ``worker_id``. The row becomes the Job's
        attributes."""
        row["status"] = JobStatus.DOING
        row["worker_id"] = worker_id
        args = row["args"]
        if args == "{}":
            row["args"] = {}
        elif type(args) is str:
            row["args"], error = load_args(args)
            if error is not None:
                row["args_error"] = error
        # Most jobs have neither tags nor metadata: two NULLs.
        tags = row["tags"]
        row["tags"] = () if tags is None else tuple(tags)
        meta = row["meta"]
        row["meta"] = {} if meta is None else load_meta(meta)
        job = object.__new__(cls)
        object.__setattr__(job, "__dict__", row)  # the row's dict, not a copy of it
        return job


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def load_args(text: str) -> tuple[dict[str, Any], str | None]:
    """A job's arguments from their JSON text, and None; or ``{}`` and why they cannot be used
    (the statements read arguments as text, so that one bad row cannot fail a whole claim or
    listing in the driver)."""
    try:
        args = json.loads(text)
    except RecursionError:
        return {}, f"the stored arguments nest too deep to decode (over {MAX_ARGS_DEPTH} allowed)"
    except ValueError as exc:
        return {}, f"the stored arguments are not valid JSON ({exc})"
    if type(args) is not dict:
        kind = _JSON_KINDS.get(type(args), "not an object")
        return {}, f"the stored arguments are {kind}, not a JSON object of argument names"
    return args, None


def load_meta(value: object) -> dict[str, Any]:
    """A job's metadata from its JSON text (or as a driver decoded it); an empty dict for
    none, or for a value that is not a JSON object (a row written outside sqla_jobs)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return {}
    return value if type(value) is dict else {}


def load_result(text: str) -> Any:
    """A job's result from its JSON text (the statements read it as text, as the arguments);
    the text itself if it is not JSON (a row edited outside sqla_jobs)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Job))


#: At most this many bytes (UTF-8) in a task name, a queue name, a lock or a queueing lock: a
#: queue name is a NOTIFY payload (at most 8,000 bytes) and every name is an index key (at
#: most ~2,700 bytes), so a longer one would fail in PostgreSQL with a less helpful error.
MAX_NAME_BYTES = 1000
#: Arguments nest at most this deep (dicts and lists inside one another): the worker decodes
#: them with Python's json module, whose recursion a job nested ~1,000 deep would exhaust.
MAX_ARGS_DEPTH = 100
#: A job's arguments, as JSON, take at most this many bytes unless the app says otherwise
#: (``App(max_args_bytes=...)``): a worker holds the arguments of every job it has claimed.
DEFAULT_MAX_ARGS_BYTES = 1024 * 1024
#: A job's result (what its task returned), as JSON, takes at most this many bytes, as
#: arguments do by default: it is stored with the job and read back whole.
MAX_RESULT_BYTES = DEFAULT_MAX_ARGS_BYTES
#: A tag is at most this many bytes (UTF-8): a short label, and a key of the tags' index.
MAX_TAG_BYTES = 255
#: A job has at most this many tags (each is an index entry of every version of its row).
MAX_TAGS = 50
#: A job's metadata, as JSON, takes at most this many bytes: a worker holds it with the job.
MAX_META_BYTES = 64 * 1024
#: A priority is a PostgreSQL ``integer``.
PRIORITY_RANGE = range(-(2**31), 2**31)


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
    #: Set by the job manager when the app traces (`sqla_jobs.tracing`).
    trace_context: str | None = None
    #: Labels to find the job by (`check_options` refuses bad ones); None or empty: none.
    tags: Sequence[str] | None = None
    #: A JSON object stored with the job, for its task and for people; None or empty: none.
    meta: Mapping[str, Any] | None = None
    #: Makes the job unique (`Unique`); None: not unique.
    unique: Unique | None = None
    #: What a defer of a unique job does when its key is taken: ``"raise"``
    #: (`AlreadyEnqueued`) or ``"return_existing"`` (the id of the job holding the key).
    on_conflict: OnConflict = "raise"

    def args_json(self, max_bytes: int = DEFAULT_MAX_ARGS_BYTES) -> str:
        """Check the job's options (`InvalidJobOptions`) and return its arguments as JSON text
        (`InvalidJobArguments` naming the argument at fault)."""
        check_options(self)
        return dump_args(self.task_name, self.args, max_bytes)


OnConflict = Literal["raise", "return_existing"]
_ON_CONFLICT = ("raise", "return_existing")


@dataclasses.dataclass(frozen=True, slots=True)
class Unique:
    """What makes a job unique: no other job with the same key may exist in one of
    ``statuses`` (a unique index enforces it, whatever the timing of the deferrers).

    The key is the task's name with ``key``, or with the job's arguments (as JSON, keys
    sorted) when ``key`` is None; with ``period`` (seconds, or a timedelta) it also holds the
    period of time the job is scheduled in (or deferred in, without a schedule), counted from
    the Unix epoch in UTC: one job per task and arguments per hour, say. ``statuses`` must
    include the waiting and running ones (todo, doing, aborting); add finished ones (e.g.
    succeeded) to refuse a job that already ran.
    """

    key: str | None = None
    period: float | datetime.timedelta | None = None
    statuses: Collection[JobStatus | str] = UNIQUE_REQUIRED_STATUSES

    def __post_init__(self) -> None:
        if self.key is not None:
            _check_name("unique key", self.key, None, required=True)
        period = self.period
        if isinstance(period, datetime.timedelta):
            period = period.total_seconds()
        if period is not None and (
            isinstance(period, bool)
            or not isinstance(period, int | float)
            or not math.isfinite(period)
            or period <= 0
        ):
            raise InvalidJobOptions(
                f"Unique(period=...) must be a positive number of seconds or a timedelta, not "
                f"{_short(self.period)}: e.g. Unique(period=timedelta(hours=1)) for one job "
                "per hour."
            )
        object.__setattr__(self, "period", period)
        statuses = [self.statuses] if isinstance(self.statuses, str) else self.statuses
        try:
            chosen = {JobStatus(status) for status in statuses}
        except (ValueError, TypeError):
            known = ", ".join(status.value for status in JobStatus)
            raise InvalidJobOptions(
                f"Unique(statuses=...) must be job statuses ({known}), not {_short(self.statuses)}."
            ) from None
        missing = [s.value for s in UNIQUE_REQUIRED_STATUSES if s not in chosen]
        if missing:
            raise InvalidJobOptions(
                f"Unique(statuses=...) must include {', '.join(missing)}: a job is unique at "
                "least while it waits or runs (todo, doing, aborting), as it moves among them "
                "with no chance to refuse a clash. Add finished statuses (e.g. succeeded) to "
                "refuse a job that already ran."
            )
        # In the enum's order: the same statuses are always stored the same way.
        object.__setattr__(self, "statuses", tuple(s for s in JobStatus if s in chosen))

    def key_for(
        self, task_name: str, args: Mapping[str, Any], scheduled_at: datetime.datetime | None
    ) -> str:
        """The job's unique key: a SHA-256, in hex, of its task name, its key (or its
        arguments) and its period. Arguments must have passed `dump_args`."""
        if self.key is not None:
            what: list[Any] = [task_name, "key", self.key]
        else:
            what = [task_name, "args", args]
        if self.period is not None:
            moment = scheduled_at or datetime.datetime.now(datetime.UTC)
            period = float(self.period)  # type: ignore[arg-type]
            what += ["period", repr(period), math.floor(moment.timestamp() / period)]
        text = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def unique_option(value: object) -> Unique | None:
    """``configure(unique=...)``: True (by task and arguments), a `Unique`, or None/False."""
    if value is None or value is False:
        return None
    if value is True:
        return Unique()
    if isinstance(value, Unique):
        return value
    raise InvalidJobOptions(
        f"unique must be True, False or a sqla_jobs.Unique(...), not {type(value).__name__} "
        f"{_short(value)}: e.g. unique=True (one job per task and arguments while it waits or "
        "runs) or unique=Unique(key=..., period=...)."
    )


def check_options(spec: JobSpec) -> None:
    """Raise `InvalidJobOptions`, naming the option and the fix, for a name that PostgreSQL
    cannot store or index, a priority that is not an integer in range, a naive schedule, tags
    that are not a list of short strings, a unique option that is not one."""
    _check_name("task name", spec.task_name, spec.task_name, required=True)
    _check_name("queue", spec.queue, spec.task_name, required=True)
    _check_name("lock", spec.lock, spec.task_name, required=False)
    _check_name("queueing_lock", spec.queueing_lock, spec.task_name, required=False)
    priority = spec.priority
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidJobOptions(
            f"priority of a job of task {_short(spec.task_name)} must be an int, not "
            f"{type(priority).__name__} {_short(priority)}."
        )
    if priority not in PRIORITY_RANGE:
        raise InvalidJobOptions(
            f"priority {priority} of a job of task {_short(spec.task_name)} is out of range: "
            f"use {PRIORITY_RANGE.start} to {PRIORITY_RANGE.stop - 1} (higher runs first)."
        )
    at = spec.scheduled_at
    if at is not None and not (isinstance(at, datetime.datetime) and at.tzinfo is not None):
        raise InvalidJobOptions(
            f"scheduled_at of a job of task {_short(spec.task_name)} must be an aware datetime "
            f"(e.g. datetime.now(timezone.utc) + timedelta(minutes=5)), not {_short(at)}."
        )
    if spec.tags is not None:
        check_tags(spec.tags, spec.task_name)
    if spec.meta is not None and not isinstance(spec.meta, dict):
        dump_meta(spec.task_name, spec.meta)  # raises, saying what it takes
    if spec.unique is not None and not isinstance(spec.unique, Unique):
        unique_option(spec.unique)  # raises, saying what it takes
    check_on_conflict(spec.on_conflict, spec.unique, spec.task_name)


def check_on_conflict(on_conflict: object, unique: Unique | None, task_name: object) -> None:
    """Raise `InvalidJobOptions` for an ``on_conflict`` that is not one, or without
    ``unique``."""
    if on_conflict not in _ON_CONFLICT:
        raise InvalidJobOptions(
            f"on_conflict of a job of task {_short(task_name)} must be 'raise' or "
            f"'return_existing', not {_short(on_conflict)}."
        )
    if on_conflict != "raise" and unique is None:
        raise InvalidJobOptions(
            f"on_conflict={on_conflict!r} of a job of task {_short(task_name)} applies to "
            "unique jobs: pass unique=True (or a sqla_jobs.Unique) with it."
        )


def check_tags(tags: object, task_name: object) -> None:
    """Raise `InvalidJobOptions` unless ``tags`` is a list (or tuple) of at most `MAX_TAGS`
    non-empty strings of at most `MAX_TAG_BYTES` bytes that PostgreSQL can store."""
    of_task = "" if task_name is None else f" of a job of task {_short(task_name)}"
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise InvalidJobOptions(
            f"The tags{of_task} must be a list of strings, not {type(tags).__name__} "
            f"{_short(tags)}: e.g. tags=['tenant:7']."
        )
    if len(tags) > MAX_TAGS:
        raise InvalidJobOptions(
            f"{len(tags)} tags given{of_task}; at most {MAX_TAGS} are allowed (each is an "
            "index entry). Put the rest in meta=..."
        )
    for tag in tags:
        _check_name("tag", tag, task_name, required=True, max_bytes=MAX_TAG_BYTES)


def tags_value(tags: Sequence[str] | None) -> list[str] | None:
    """Checked tags as stored: without repeats, in the order given; None for none."""
    if not tags:
        return None
    if len(tags) == 1:
        return list(tags)
    return list(dict.fromkeys(tags))


def dump_meta(task_name: str, meta: Mapping[str, Any] | None) -> str | None:
    """A job's metadata as JSON text that jsonb accepts and reads back as written, or None
    for none; `InvalidJobOptions` naming what is wrong with it."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidJobOptions(
            f"The meta of a job of task {_short(task_name)} must be a dict (a JSON object), "
            f"not {type(meta).__name__} {_short(meta)}: e.g. meta={{'request_id': 'abc'}}."
        )
    if not meta:
        return None
    bad_key = next((key for key in meta if not isinstance(key, str)), None)
    if bad_key is not None:
        raise InvalidJobOptions(
            f"The meta of a job of task {_short(task_name)} has the key {_short(bad_key)}, "
            "which JSON would turn into a string: use string keys."
        )
    text = _encoded(meta)
    if text is None:
        raise InvalidJobOptions(
            f"The meta of a job of task {_short(task_name)} cannot be stored as JSON "
            f"({_meta_problem(meta)}). Pass a dict of string keys to JSON values (str, int, "
            "finite float, bool, None, lists and dicts of them)."
        )
    size = len(text) if text.isascii() else len(text.encode())
    if size > MAX_META_BYTES:
        raise InvalidJobOptions(
            f"The meta of a job of task {_short(task_name)} takes {size:,} bytes as JSON; at "
            f"most {MAX_META_BYTES:,} are allowed: a worker holds it with the job. Store big "
            "data elsewhere (a table, a file) and put its key in meta."
        )
    return text


def _meta_problem(meta: dict[Any, Any]) -> str:
    for key, value in meta.items():
        if not isinstance(key, str):
            return f"the key {_short(key)} is not a string, and JSON would turn it into one"
        if (problem := _text_problem(key)) is not None:
            return f"the key {_short(key)}: {problem}"
        if (problem := _json_problem(value)) is not None:
            return f"key {key!r}: {problem}"
    return "it is not JSON"


def _check_name(
    what: str,
    value: object,
    task_name: object,
    *,
    required: bool,
    max_bytes: int = MAX_NAME_BYTES,
) -> None:
    if value is None and not required:
        return
    of_task = (
        "" if what == "task name" or task_name is None else f" of a job of task {_short(task_name)}"
    )
    if not isinstance(value, str):
        raise InvalidJobOptions(
            f"The {what}{of_task} must be a string, not {type(value).__name__} {_short(value)}."
        )
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise InvalidJobOptions(
                f"The {what} {_short(value)}{of_task} is not valid Unicode (it holds a lone "
                "surrogate, e.g. from decoding bytes with errors='surrogateescape'): "
                "PostgreSQL stores UTF-8 text only."
            ) from None
    if "\x00" in value:
        raise InvalidJobOptions(
            f"The {what} {_short(value)}{of_task} holds a NUL character (\\x00), which "
            "PostgreSQL text cannot store."
        )
    if size > max_bytes:
        why = (
            "(it is an index key, and a queue name a NOTIFY payload). Use a shorter name, e.g. "
            "a hash of it."
            if what != "tag"
            else "(a tag is a short label, and a key of the tags' index). Put longer values in "
            "meta=..."
        )
        raise InvalidJobOptions(
            f"The {what} {_short(value)}{of_task} is {size:,} bytes long in UTF-8; at most "
            f"{max_bytes:,} fit {why}"
        )
    if required and not value:
        raise InvalidJobOptions(f"The {what}{of_task} must not be empty.")


def _short(value: object) -> str:
    """``repr(value)``, cut to a readable length for a message."""
    return reprlib.repr(value)


# One encoder for every job: json.dumps with options builds a new one per call. Non-ASCII text
# stays as it is (jsonb reads UTF-8): its size is then its size in the database, and a lone
# surrogate, which jsonb refuses, shows as text that does not encode.
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_CONTAINERS = (dict, list, tuple)


def dump_args(
    task_name: str, args: Mapping[str, Any], max_bytes: int = DEFAULT_MAX_ARGS_BYTES
) -> str:
    """The job's arguments as JSON text that PostgreSQL's jsonb accepts and that reads back as
    it was written, or an error that names the argument at fault."""
    if not isinstance(args, dict):
        raise InvalidJobArguments(
            f"The arguments of task {task_name!r} must be a dict of argument names to values "
            f"(the task's keyword arguments), not {type(args).__name__}."
        )
    if not args:
        return "{}"  # tasks without arguments are common; the encoder costs 2 us a call
    text = _encoded(args)
    if text is None:
        raise _argument_problem(task_name, args)
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise InvalidJobArguments(
            f"The arguments of task {task_name!r} take {size:,} bytes as JSON; at most "
            f"{max_bytes:,} are allowed (App(max_args_bytes=...)): a worker holds the "
            "arguments of every job it claims. Store big data elsewhere (a table, a file) and "
            "pass its key."
        )
    return text


def dump_result(job_id: int, task_name: str, value: Any, max_bytes: int = MAX_RESULT_BYTES) -> str:
    """What a task returned as JSON text that jsonb accepts and reads back as it was, or
    `InvalidJobResult` naming the problem and the fix (the worker then fails the job)."""
    problem: str | None = None
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError, RecursionError) as exc:
        text, problem = "", f"{type(exc).__name__}: {exc}"
    if problem is None and isinstance(value, _CONTAINERS):
        problem = _nesting_problem(value, 1)
    if problem is None:
        problem = _text_problem(text)
    if problem is not None:
        raise InvalidJobResult(
            f"Job {job_id} ({task_name}) returned {_short(value)}, which cannot be stored as "
            f"its result ({problem}). Return JSON values (str, int, finite float, bool, "
            "lists and dicts of them with string keys), e.g. an id instead of an object; or "
            f"declare the task with @app.task(store_result=False) if nobody reads its result."
        )
    if "e+" in text:
        text = _exact_json(value)
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise InvalidJobResult(
            f"Job {job_id} ({task_name}) returned {size:,} bytes of JSON; a result may take "
            f"at most {max_bytes:,}. Store big data elsewhere (a table, a file) and return its "
            "key; or declare the task with @app.task(store_result=False) if nobody reads its "
            "result."
        )
    return text


def _encoded(args: dict[str, Any]) -> str | None:
    """The JSON text, or None when some argument cannot be stored or read back as it is."""
    try:
        text = _ENCODE(args)
    except (TypeError, ValueError, RecursionError):
        return None
    # Nesting deeper than allowed needs that many brackets; a key that is not a string (JSON
    # makes it one) needs a dict inside the arguments. Short flat arguments, the common case,
    # skip the walk.
    if len(text) > 2 * MAX_ARGS_DEPTH or text.find("{", 1) != -1:
        for value in args.values():
            if isinstance(value, _CONTAINERS) and _nesting_problem(value, 1) is not None:
                return None
    # Valid JSON, but jsonb stores neither a NUL character nor a lone surrogate.
    if _has_nul(text) or not (text.isascii() or _encodes(text)):
        return None
    if "e+" in text:  # a float such as 1e+16 (or text that holds "e+")
        text = _exact_json(args)
    return text


def _exact_json(value: Any) -> str:
    """JSON whose floats read back from jsonb as the same floats. jsonb keeps a number as a
    decimal and writes it without exponent: 3.829620172551429e+16 would come back as the int
    38296201725514290, which is not even equal to the float (38296201725514288). A float with
    a positive exponent is written with all its digits and a decimal point instead."""
    if isinstance(value, float):
        text = repr(value)
        return f"{value:.1f}" if "e+" in text else text
    if isinstance(value, dict):
        items = (f"{_ENCODE(key)}:{_exact_json(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_exact_json(item) for item in value) + "]"
    return _ENCODE(value)


# A NUL character, as JSON writes it: \u0000 after an even number of backslashes (a text
# holding a backslash then "u0000" is written \\u0000, and is fine).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _has_nul(text: str) -> bool:
    return "\\u0000" in text and _NUL.search(text) is not None


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _nesting_problem(value: object, depth: int) -> str | None:
    """What keeps a nested value from reading back as written: too deep, or a key that is not
    a string (JSON would turn it into one)."""
    if depth > MAX_ARGS_DEPTH:
        return f"it nests dicts and lists more than {MAX_ARGS_DEPTH} deep"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"it holds the key {_short(key)}, which JSON would turn into a string: use "
                    "string keys"
                )
            if isinstance(item, _CONTAINERS) and (problem := _nesting_problem(item, depth + 1)):
                return problem
    else:
        for item in value:  # type: ignore[attr-defined]
            if isinstance(item, _CONTAINERS) and (problem := _nesting_problem(item, depth + 1)):
                return problem
    return None


def _argument_problem(task_name: str, args: dict[str, Any]) -> InvalidJobArguments:
    for key, value in args.items():
        if not isinstance(key, str):
            break
        if (problem := _text_problem(key)) is not None:
            return InvalidJobArguments(
                f"The argument name {_short(key)} of task {task_name!r} cannot be stored "
                f"({problem}). Use argument names without it."
            )
        problem = _json_problem(value)
        if problem is not None:
            return InvalidJobArguments(
                f"Argument {key!r} of task {task_name!r} cannot be stored as JSON ({problem}). "
                "Pass JSON values (str, int, finite float, bool, None, lists and dicts of "
                "them), e.g. an id instead of an object."
            )
    return InvalidJobArguments(
        f"The arguments of task {task_name!r} cannot be stored as JSON. "
        "Use string keys and JSON-serialisable values."
    )


def _json_problem(value: Any) -> str | None:
    if isinstance(value, _CONTAINERS) and (problem := _nesting_problem(value, 1)):
        return problem
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__}: {exc}"
    return _text_problem(text)


def _text_problem(text: str) -> str | None:
    """What keeps JSON text (or a name) out of PostgreSQL: a NUL character, a lone surrogate."""
    if "\x00" in text or _has_nul(text):
        return "it contains a NUL character (\\x00), which PostgreSQL cannot store"
    if not (text.isascii() or _encodes(text)):
        return (
            "it holds text that is not valid Unicode (a lone surrogate), which PostgreSQL "
            "cannot store"
        )
    return None


# The last line of the traceback of a run stopped at its task's timeout.
_TIMED_OUT = f"{JobTimeout.__module__}.{JobTimeout.__qualname__}:"


@dataclasses.dataclass(frozen=True, slots=True)
class JobEvent:
    """One status change of a job (``sqla_jobs.schema.job_history``: the job's row and the
    events it no longer shows); ``error`` is the run's error when it ended in failed, aborted,
    a retry or a snooze, or when its task cancelled it."""

    status: JobStatus
    at: datetime.datetime
    error: str | None = None

    @property
    def label(self) -> str:
        """The status as a history shows it: with what ended the run when the status alone
        does not tell, ``todo (snoozed)`` (the task asked to run later), ``failed (timed
        out)`` or ``todo (timed out)`` (a retry), ``cancelled (by the task)``."""
        error = self.error
        if not error:
            return self.status.value
        if self.status is JobStatus.TODO and error.startswith(SNOOZED):
            return "todo (snoozed)"
        if self.status is JobStatus.CANCELLED and error.startswith(CANCELLED_BY_TASK):
            return "cancelled (by the task)"
        if self.status in (JobStatus.FAILED, JobStatus.TODO):
            lines = error.rstrip().splitlines()
            if lines and lines[-1].startswith(_TIMED_OUT):
                return f"{self.status.value} (timed out)"
        return self.status.value
