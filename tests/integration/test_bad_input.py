"""Bad input against real PostgreSQL, through the public API: what a defer accepts reads back
exactly (from the database and in the task), what it refuses raises a specific error and
leaves nothing written, single or batch, on every connector; hostile names round-trip as
queue, lock and queueing lock. The pure checks are in tests/unit/test_input_checks.py."""

from __future__ import annotations

import datetime
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sqla_jobs
from sqla_jobs.jobs import MAX_NAME_BYTES

if TYPE_CHECKING:
    from conftest import Connectors, Database

json_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=15,
)

HOSTILE_NAMES = [
    "o'brien",
    "a$$b",
    "$1",
    "x.job",
    "a\\b",
    "new\nline",
    'say "hi"',
    "%(queue)s",
    "Robert'); DROP TABLE sqla_jobs_jobs;--",
    "ünïcødé ✓ 🐘",
    " leading and trailing ",
    "n" * MAX_NAME_BYTES,
]


@pytest.fixture
async def psycopg_app(db_url: str, connectors: type[Connectors]) -> AsyncIterator[sqla_jobs.App]:
    app = sqla_jobs.App(connector=connectors.from_dsn("psycopg", db_url))
    async with app.open_async():
        yield app


@pytest.fixture
def sync_app(connector_kind: str, db_url: str, connectors: type[Connectors]) -> sqla_jobs.App:
    """An app deferring with the sync API (every connector has it) on ``connector_kind``."""
    return sqla_jobs.App(connector=connectors.from_dsn(connector_kind, db_url))


@given(args=st.dictionaries(json_text, json_values, max_size=4))
@example(args={"big": 3.829620172551429e16, "huge": -1e308, "text": "1e+16"})
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_json_arguments_read_back_from_postgresql_as_they_were_deferred(
    sync_app: sqla_jobs.App, args: dict[str, Any]
) -> None:
    job_id = sync_app.configure_task("tests.anything").defer(**args)

    read = sync_app.job_manager.get_job(job_id).args
    assert read == args
    assert _types(read) == _types(args)  # a float stays a float, even 1e+16


async def test_the_task_receives_exactly_what_was_deferred(async_app: sqla_jobs.App) -> None:
    received: list[dict[str, Any]] = []

    @async_app.task(name="tests.record")
    def record(**kwargs: Any) -> None:
        received.append(kwargs)

    sent: list[dict[str, Any]] = [
        {"text": "ü\n\t\"'\\", "emoji": "🐘", "empty": ""},
        {"big": 2**64 + 1, "negative": -(2**63), "float": 0.1, "tiny": 5e-324, "zero": 0},
        {"nested": {"a": [1, [2, [3, {"b": None}]]], "t": True, "f": False}},
        {"json_looking": '{"not": "parsed"}', "sql_looking": "'; DROP TABLE x;--"},
        {"long": "x" * 100_000},
    ]
    for args in sent:
        await record.defer_async(**args)
    await async_app.run_worker_async(wait=False)

    assert received == sent


async def test_a_defer_refused_for_its_arguments_writes_nothing(
    app: sqla_jobs.App, database: Database
) -> None:
    task = app.configure_task("tests.anything")
    bad_values: list[Any] = [
        math.nan,
        {1: "int key"},
        "lone \ud800 surrogate",
        "nul \x00",
        object(),
        _nested(2_000),
    ]
    for value in bad_values:
        with pytest.raises(sqla_jobs.InvalidJobArguments, match="Argument 'value'"):
            await _defer(task, value=value)
    assert database.job_count() == 0


@pytest.mark.parametrize("size", [2, 1500], ids=["statement", "copy"])
async def test_a_batch_with_one_bad_job_writes_none_of_its_jobs(
    app: sqla_jobs.App, database: Database, size: int
) -> None:
    task = app.configure_task("tests.anything")
    batch: list[dict[str, Any]] = [{"n": n} for n in range(size)]
    batch[size // 2] = {"n": math.inf}

    with pytest.raises(sqla_jobs.InvalidJobArguments, match="Argument 'n'"):
        task.batch_defer(*batch)
    with pytest.raises(sqla_jobs.InvalidJobArguments, match="Argument 'n'"):
        await task.batch_defer_async(*batch)
    assert database.job_count() == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"priority": 2**31}, "out of range"),
        ({"priority": "1"}, "must be an int"),
        ({"queue": "q" * 10_000}, "10,000 bytes long"),
        ({"queue": "a\x00b"}, "NUL"),
        ({"lock": 42}, "lock .* must be a string"),
        ({"queueing_lock": "x\udcff"}, "lone surrogate"),
    ],
)
async def test_a_defer_refused_for_its_options_writes_nothing(
    app: sqla_jobs.App, database: Database, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
        app.configure_task("tests.anything", **options).defer(a=1)
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
        await app.configure_task("tests.anything", **options).batch_defer_async({"a": 1})
    assert database.job_count() == 0


async def test_arguments_over_the_apps_limit_are_refused_and_under_it_accepted(
    db_url: str, connectors: type[Connectors], database: Database
) -> None:
    app = sqla_jobs.App(connector=connectors.from_dsn("psycopg", db_url), max_args_bytes=1000)
    async with app.open_async():
        task = app.configure_task("tests.anything")
        await task.defer_async(blob="x" * 900)
        with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"at most 1,000 are allowed"):
            await task.defer_async(blob="x" * 1000)
    default = sqla_jobs.App(connector=connectors.from_dsn("psycopg2", db_url))
    with pytest.raises(sqla_jobs.InvalidJobArguments, match=r"at most 1,048,576"):
        default.configure_task("tests.anything").defer(blob="x" * (1024 * 1024))
    assert database.job_count() == 1


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
async def test_hostile_names_round_trip_as_task_queue_lock_and_queueing_lock(
    psycopg_app: sqla_jobs.App, name: str
) -> None:
    received: list[tuple[str, dict[str, Any]]] = []

    @psycopg_app.task(name=name, queue=name, lock=name, queueing_lock=name, pass_context=True)
    def hostile(context: sqla_jobs.JobContext, **kwargs: Any) -> None:
        received.append((context.job.queue, kwargs))

    job_id = await hostile.defer_async(name=name)
    job = psycopg_app.job_manager.get_job(job_id)
    assert (job.task_name, job.queue, job.lock, job.queueing_lock) == (name, name, name, name)
    assert [j.id for j in psycopg_app.job_manager.list_jobs(queue=name, lock=name)] == [job_id]
    with pytest.raises(sqla_jobs.AlreadyEnqueued) as caught:
        await hostile.defer_async(name="again")
    assert caught.value.queueing_lock == name

    await psycopg_app.run_worker_async(wait=False, queues=[name])

    assert received == [(name, {"name": name})]
    assert psycopg_app.job_manager.get_job(job_id).status is sqla_jobs.JobStatus.SUCCEEDED


async def test_a_schedule_must_be_an_aware_datetime(app: sqla_jobs.App, database: Database) -> None:
    naive = datetime.datetime(2030, 1, 1)
    with pytest.raises(ValueError, match="time zone"):
        app.configure_task("tests.anything", schedule_at=naive)
    assert database.job_count() == 0


def _types(value: Any) -> Any:
    """``value`` with each scalar replaced by its type (lists for tuples: JSON has arrays)."""
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_types(item) for item in value]
    return type(value)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def _defer(deferrer: sqla_jobs.JobDeferrer, **kwargs: Any) -> int:
    if deferrer.app.job_manager.connector.can_run_worker:
        return await deferrer.defer_async(**kwargs)
    return deferrer.defer(**kwargs)


async def test_a_sync_task_may_take_any_argument_name(async_app: sqla_jobs.App) -> None:
    """The worker hands a sync task to its thread with the arguments bound: none of them may
    collide with the worker's own parameters."""
    received: list[dict[str, Any]] = []

    @async_app.task(name="tests.names")
    def names(**kwargs: Any) -> None:
        received.append(kwargs)

    args = {name: name for name in ("name", "func", "call", "threads", "job_id", "self", "args")}
    await names.defer_async(**args)
    await async_app.run_worker_async(wait=False)

    assert received == [args]


async def test_the_worker_fails_rows_it_cannot_run_with_a_reason_and_goes_on(
    async_app: sqla_jobs.App, database: Database
) -> None:
    """Rows written or edited outside sqla_jobs: each fails with its reason, the others run,
    and listing or reading them works."""
    ran: list[dict[str, Any]] = []

    @async_app.task(name="tests.strict")
    def strict(a: int) -> None:
        ran.append({"a": a})

    deep = '{"a": ' + "[" * 2_000 + "]" * 2_000 + "}"
    rows = {
        "array": ("tests.strict", "[1, 2]"),
        "string": ("tests.strict", '"text"'),
        "null": ("tests.strict", "null"),
        "deep": ("tests.strict", deep),
        "signature": ("tests.strict", '{"b": 1}'),
        "unknown": ("tests.nobody", '{"a": 1}'),
        "good": ("tests.strict", '{"a": 1}'),
    }
    ids = {
        name: database.scalar(
            "INSERT INTO sqla_jobs_jobs (queue, task_name, args) "
            "VALUES ('default', %(task)s, %(args)s::jsonb) RETURNING id",
            {"task": task, "args": args},
        )
        for name, (task, args) in rows.items()
    }

    listed = {job.id: job for job in async_app.job_manager.list_jobs()}
    assert listed[ids["deep"]].args_error is not None
    assert listed[ids["good"]].args == {"a": 1} and listed[ids["good"]].args_error is None

    await async_app.run_worker_async(wait=False)

    assert ran == [{"a": 1}]
    errors = {name: async_app.job_manager.get_job(job_id) for name, job_id in ids.items()}
    assert {name: job.status.value for name, job in errors.items()} == {
        **{name: "failed" for name in rows},
        "good": "succeeded",
    }
    assert "an array, not a JSON object" in (errors["array"].last_error or "")
    assert "a string, not a JSON object" in (errors["string"].last_error or "")
    assert "are null, not" in (errors["null"].last_error or "")
    assert "nest too deep" in (errors["deep"].last_error or "")
    assert "unexpected keyword argument 'b'" in (errors["signature"].last_error or "")
    assert "does not" in (errors["unknown"].last_error or "")
    assert f"WHERE id = {ids['array']}" in (errors["array"].last_error or "")
