"""Tags and metadata on jobs, through the public API, once per connector: what each defer path
stores, the listings and counts by tag, what the task's context shows, and bad input refused
with nothing written."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Database

TAGS = ["tenant:7", "plan:gold", 'quote"and\\backslash', "ünïcode", "comma,inside", "{braces}"]
META = {"request_id": "abc", "user": {"id": 7, "roles": ["admin"]}, "ratio": 0.5}


def register(app: sqla_jobs.App) -> sqla_jobs.Task:
    @app.task(name="tests.tagged")
    def tagged(**kwargs: Any) -> None:
        pass

    return tagged


def stored(database: Database, job_id: int) -> tuple[list[str] | None, dict[str, Any] | None]:
    job = database.job(job_id)
    return job["tags"], job["meta"]


# -- every defer path stores them --------------------------------------------------------------


async def test_defer_stores_tags_and_meta_and_jobs_without_them_store_null(
    app: sqla_jobs.App, database: Database
) -> None:
    task = register(app)

    tagged = task.configure(tags=TAGS, meta=META).defer(n=1)
    plain = task.defer(n=2)
    empty = task.configure(tags=[], meta={}).defer(n=3)

    assert stored(database, tagged) == (TAGS, META)
    assert stored(database, plain) == (None, None)
    assert stored(database, empty) == (None, None)


async def test_defer_async_stores_tags_and_meta(app: sqla_jobs.App, database: Database) -> None:
    job_id = await register(app).configure(tags=TAGS, meta=META).defer_async(n=1)

    assert stored(database, job_id) == (TAGS, META)


async def test_repeated_tags_are_stored_once_in_the_order_given(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = register(app).configure(tags=["b", "a", "b", "a"]).defer()

    assert stored(database, job_id) == (["b", "a"], None)


async def test_batch_defer_stores_tags_and_meta_on_every_job(
    app: sqla_jobs.App, database: Database
) -> None:
    task = register(app)
    ids = task.configure(tags=TAGS, meta=META).batch_defer({"n": 1}, {"n": 2})
    async_ids = await task.configure(tags=["x"]).batch_defer_async({"n": 3})

    assert [stored(database, job_id) for job_id in ids] == [(TAGS, META)] * 2
    assert stored(database, async_ids[0]) == (["x"], None)


async def test_a_copy_batch_stores_tags_and_meta_and_one_without_stores_null(
    app: sqla_jobs.App, database: Database
) -> None:
    app.job_manager.copy_threshold = 5
    task = register(app)

    tagged = task.configure(tags=TAGS, meta=META).batch_defer(*({"n": n} for n in range(6)))
    plain = task.batch_defer(*({"n": n} for n in range(6)))

    assert {stored(database, job_id) == (TAGS, META) for job_id in tagged} == {True}
    assert {stored(database, job_id) for job_id in plain} == {(None, None)}


async def test_a_batch_of_jobs_with_different_tags_stores_each_its_own(
    app: sqla_jobs.App, database: Database
) -> None:
    manager = app.job_manager
    specs = [
        sqla_jobs.jobs.JobSpec("tests.tagged", {"n": n}, tags=tags, meta=meta)
        for n, (tags, meta) in enumerate([(["a"], None), (None, {"k": 1}), (["b", "c"], {"k": 2})])
    ]

    ids = manager.defer_many(specs)
    manager.copy_threshold = 1
    copied = manager.defer_many(specs)

    expected = [(["a"], None), (None, {"k": 1}), (["b", "c"], {"k": 2})]
    assert [stored(database, job_id) for job_id in ids] == expected
    assert [stored(database, job_id) for job_id in copied] == expected


async def test_configure_task_by_name_takes_tags_and_meta(
    app: sqla_jobs.App, database: Database
) -> None:
    job_id = app.configure_task("not.imported.here", tags=["t"], meta={"a": 1}).defer()

    assert stored(database, job_id) == (["t"], {"a": 1})


# -- reading them back -------------------------------------------------------------------------


async def test_get_and_list_jobs_read_tags_and_meta_back(app: sqla_jobs.App) -> None:
    task = register(app)
    tagged = task.configure(tags=TAGS, meta=META).defer()
    plain = task.defer()

    job = app.job_manager.get_job(tagged)
    assert (job.tags, dict(job.meta)) == (tuple(TAGS), META)
    other = app.job_manager.get_job(plain)
    assert (other.tags, dict(other.meta)) == ((), {})


async def test_list_jobs_by_tags_finds_the_jobs_having_all_of_them(app: sqla_jobs.App) -> None:
    task = register(app)
    both = task.configure(tags=["tenant:7", "plan:gold"]).defer()
    seven = task.configure(tags=["tenant:7"]).defer()
    task.configure(tags=["tenant:8", "plan:gold"]).defer()
    task.defer()
    manager = app.job_manager

    assert [job.id for job in manager.list_jobs(tags=["tenant:7"])] == [seven, both]
    assert [job.id for job in manager.list_jobs(tags=["plan:gold", "tenant:7"])] == [both]
    assert [job.id for job in await manager.list_jobs_async(tags=["tenant:7"], limit=1)] == [seven]
    assert manager.list_jobs(tags=["tenant:7"], status="succeeded") == []
    assert manager.list_jobs(tags=["nobody"]) == []
    assert len(manager.list_jobs(tags=[])) == 4  # no tag asked: every job


async def test_count_jobs_by_tags_counts_the_jobs_having_all_of_them(app: sqla_jobs.App) -> None:
    task = register(app)
    task.configure(tags=["tenant:7"], queue="mail").batch_defer({}, {})
    task.configure(tags=["tenant:7", "plan:gold"]).defer()
    task.configure(tags=["tenant:8"]).defer()
    manager = app.job_manager

    assert manager.count_jobs(tags=["tenant:7"]) == {
        ("mail", sqla_jobs.JobStatus.TODO): 2,
        ("default", sqla_jobs.JobStatus.TODO): 1,
    }
    assert await manager.count_jobs_async(tags=["tenant:7", "plan:gold"]) == {
        ("default", sqla_jobs.JobStatus.TODO): 1
    }
    assert manager.count_jobs(tags=["nobody"]) == {}


async def test_a_task_reads_its_jobs_tags_and_meta_from_its_context(
    async_app: sqla_jobs.App,
) -> None:
    seen: dict[int, tuple[tuple[str, ...], dict[str, Any]]] = {}

    @async_app.task(name="tests.context", pass_context=True)
    async def with_context(context: sqla_jobs.JobContext) -> None:
        seen[context.job.id] = (context.tags, dict(context.meta))

    @async_app.task(name="tests.sync_context", pass_context=True)
    def sync_with_context(context: sqla_jobs.JobContext) -> None:
        seen[context.job.id] = (context.tags, dict(context.meta))

    tagged = with_context.configure(tags=TAGS, meta=META).defer()
    plain = with_context.defer()
    sync_tagged = sync_with_context.configure(tags=["s"], meta={"k": [1]}).defer()

    await async_app.run_worker_async(wait=False, install_signal_handlers=False)

    assert seen == {
        tagged: (tuple(TAGS), META),
        plain: ((), {}),
        sync_tagged: (("s",), {"k": [1]}),
    }


# -- bad input ---------------------------------------------------------------------------------

BAD_TAGS = [
    ("tenant:7", "must be a list of strings, not str"),
    (["ok", 7], "tag of a job of task 'tests.tagged' must be a string, not int"),
    ([""], "must not be empty"),
    (["a\x00b"], "NUL character"),
    (["x" * 256], "256 bytes long in UTF-8; at most 255"),
    (["\udc80"], "not valid Unicode"),
    ([str(n) for n in range(51)], "51 tags given of a job of task 'tests.tagged'; at most 50"),
]
BAD_META = [
    (["a"], "must be a dict (a JSON object), not list"),
    ({"a": object()}, "key 'a': object"),
    ({"a": float("nan")}, "key 'a'"),
    ({1: "a"}, "has the key 1, which JSON would turn into a string"),
    ({"a": "\x00"}, "NUL character"),
    ({"a": "x" * 70_000}, "takes 70,008 bytes as JSON; at most 65,536"),
]


@pytest.mark.parametrize(("tags", "message"), BAD_TAGS)
async def test_bad_tags_are_refused_naming_the_problem_and_nothing_is_written(
    app: sqla_jobs.App, database: Database, tags: Any, message: str
) -> None:
    task = register(app)
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=re.escape(message)):
        task.configure(tags=tags).defer()
    spec = sqla_jobs.jobs.JobSpec("tests.tagged", {}, tags=tags)
    with pytest.raises(sqla_jobs.InvalidJobOptions):  # straight to the manager: checked too
        app.job_manager.defer_many([sqla_jobs.jobs.JobSpec("tests.tagged", {}), spec])
    with pytest.raises(sqla_jobs.InvalidJobOptions):
        await app.job_manager.defer_async(spec)

    assert database.job_count() == 0


@pytest.mark.parametrize(("meta", "message"), BAD_META)
async def test_bad_meta_is_refused_naming_the_problem_and_nothing_is_written(
    app: sqla_jobs.App, database: Database, meta: Any, message: str
) -> None:
    task = register(app)
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=re.escape(message)):
        task.configure(meta=meta)
    spec = sqla_jobs.jobs.JobSpec("tests.tagged", {}, meta=meta)
    app.job_manager.copy_threshold = 2
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=re.escape(message)):
        app.job_manager.defer_many([sqla_jobs.jobs.JobSpec("tests.tagged", {}), spec])
    with pytest.raises(sqla_jobs.InvalidJobOptions):
        app.job_manager.defer(spec)

    assert database.job_count() == 0


async def test_listing_by_bad_tags_is_refused_naming_the_problem(app: sqla_jobs.App) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="not the string 'tenant:7'"):
        app.job_manager.list_jobs(tags="tenant:7")  # type: ignore[arg-type]
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="NUL character"):
        app.job_manager.count_jobs(tags=["a\x00"])
