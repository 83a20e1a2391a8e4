"""Unique jobs, through the public API, once per connector: a second job with the same key is
refused (or the first one's id returned) while the first is in one of the chosen statuses,
whatever the timing of the deferrers; batches are all or nothing; bad options write nothing."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import TYPE_CHECKING, Any

import pytest

import sqla_jobs
from sqla_jobs import AlreadyEnqueued, InvalidJobOptions, JobStatus, Unique

if TYPE_CHECKING:
    from conftest import Database

UTC = datetime.UTC


def register(app: sqla_jobs.App) -> tuple[sqla_jobs.Task, sqla_jobs.Task]:
    @app.task(name="tests.report")
    def report(**kwargs: Any) -> None:
        pass

    @app.task(name="tests.other")
    def other(**kwargs: Any) -> None:
        pass

    return report, other


# -- one job per key ---------------------------------------------------------------------------


async def test_a_second_unique_job_with_the_same_arguments_is_refused_naming_the_first(
    app: sqla_jobs.App, database: Database
) -> None:
    report, other = register(app)
    first = report.configure(unique=True).defer(report_id=7, lang="en")

    with pytest.raises(AlreadyEnqueued, match=rf"job {first} \(todo\) holds its unique key") as e:
        report.configure(unique=True).defer(lang="en", report_id=7)  # keys in another order
    with pytest.raises(AlreadyEnqueued):
        await report.configure(unique=True).defer_async(report_id=7, lang="en")
    assert e.value.job_id == first
    assert e.value.unique_key == database.job(first)["unique_key"]

    # Other arguments, another task, or a job that is not unique: all written.
    report.configure(unique=True).defer(report_id=8, lang="en")
    other.configure(unique=True).defer(report_id=7, lang="en")
    report.defer(report_id=7, lang="en")
    assert database.job_count() == 4


async def test_return_existing_gives_the_id_of_the_job_holding_the_key(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    deferrer = report.configure(unique=True, on_conflict="return_existing")

    first = deferrer.defer(report_id=7)
    assert deferrer.defer(report_id=7) == first
    assert await deferrer.defer_async(report_id=7) == first
    assert (
        app.configure_task("tests.report", unique=True, on_conflict="return_existing").defer(
            report_id=7
        )
        == first
    )
    assert database.job_count() == 1


async def test_a_given_key_makes_jobs_unique_whatever_their_arguments_within_their_task(
    app: sqla_jobs.App, database: Database
) -> None:
    report, other = register(app)
    first = report.configure(unique=Unique(key="daily")).defer(day=1)

    with pytest.raises(AlreadyEnqueued, match="unique key 'daily'"):
        report.configure(unique=Unique(key="daily")).defer(day=2)
    other.configure(unique=Unique(key="daily")).defer(day=2)  # another task's key

    assert [job["task_name"] for job in database.jobs()] == ["tests.report", "tests.other"]
    assert database.jobs()[0]["id"] == first


async def test_a_job_that_left_the_chosen_statuses_frees_its_key(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    first = report.configure(unique=True).defer(n=1)
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() WHERE id = %s",
        (first,),
    )

    second = report.configure(unique=True).defer(n=1)

    assert second != first
    # Among finished statuses too: a job that succeeded keeps its key.
    kept = Unique(statuses=["todo", "doing", "aborting", "succeeded"])
    third = report.configure(unique=kept).defer(n=2)
    database.conn.execute("UPDATE sqla_jobs_jobs SET status = 'succeeded' WHERE id = %s", (third,))
    with pytest.raises(AlreadyEnqueued, match=rf"job {third} \(succeeded\)"):
        report.configure(unique=kept).defer(n=2)


async def test_a_period_makes_one_job_per_period_of_the_schedule(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    hourly = report.configure(
        unique=Unique(period=datetime.timedelta(hours=1)), on_conflict="return_existing"
    )
    nine = datetime.datetime(2030, 1, 1, 9, tzinfo=UTC)

    at_nine = report.configure(
        unique=Unique(period=3600), on_conflict="return_existing", schedule_at=nine
    ).defer(n=1)
    at_nine_thirty = report.configure(
        unique=Unique(period=3600),
        on_conflict="return_existing",
        schedule_at=nine + datetime.timedelta(minutes=30),
    ).defer(n=1)
    at_ten = report.configure(
        unique=Unique(period=3600),
        on_conflict="return_existing",
        schedule_at=nine + datetime.timedelta(hours=1),
    ).defer(n=1)
    now = hourly.defer(n=1)

    assert at_nine == at_nine_thirty
    assert len({at_nine, at_ten, now}) == 3
    assert database.job_count() == 3


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_with_a_taken_key_or_a_key_twice_writes_none_of_its_jobs(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    first = report.configure(unique=True).defer(n=1)
    unique = report.configure(unique=True)

    with pytest.raises(AlreadyEnqueued, match=rf"job {first} .* None of the 3 jobs") as e:
        unique.batch_defer({"n": 2}, {"n": 1}, {"n": 3})
    assert e.value.job_id == first
    with pytest.raises(AlreadyEnqueued, match="another job of this batch has the same unique key"):
        await unique.batch_defer_async({"n": 4}, {"n": 4})
    app.job_manager.copy_threshold = 2  # a unique batch is an INSERT, never a COPY
    with pytest.raises(AlreadyEnqueued):
        unique.batch_defer({"n": 5}, {"n": 1})

    assert [job["id"] for job in database.jobs()] == [first]


async def test_a_batch_returning_existing_jobs_gives_each_its_jobs_id_in_order(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    unique = report.configure(unique=True, on_conflict="return_existing")
    first = unique.defer(n=1)

    ids = unique.batch_defer({"n": 2}, {"n": 1}, {"n": 3}, {"n": 2})
    again = await unique.batch_defer_async({"n": 3}, {"n": 4})

    assert ids[1] == first and ids[3] == ids[0]
    assert len({ids[0], ids[1], ids[2]}) == 3
    assert again[0] == ids[2]
    assert sorted(job["id"] for job in database.jobs()) == sorted({*ids, *again})
    assert database.job_count() == 4


async def test_a_batch_may_not_mix_raising_and_returning_unique_jobs(
    app: sqla_jobs.App, database: Database
) -> None:
    spec = sqla_jobs.jobs.JobSpec
    specs = [
        spec("tests.report", {"n": 1}, unique=Unique()),
        spec("tests.report", {"n": 2}, unique=Unique(), on_conflict="return_existing"),
    ]
    with pytest.raises(InvalidJobOptions, match="defer them in two batches"):
        app.job_manager.defer_many(specs)
    assert database.job_count() == 0


# -- the job's life ----------------------------------------------------------------------------


async def test_a_failed_unique_job_retried_while_another_holds_its_key_is_refused(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    failed = report.configure(unique=True).defer(n=1)
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'failed', finished_at = now() WHERE id = %s",
        (failed,),
    )
    holder = report.configure(unique=True).defer(n=1)
    manager = app.job_manager

    with pytest.raises(AlreadyEnqueued, match=rf"Job {failed} cannot go back.*job {holder}"):
        manager.retry_job(failed)
    result = manager.run(sqla_jobs.operations.act_on_jobs("retry", [failed]))
    assert [job_id for job_id, _ in result.refused] == [failed]

    manager.cancel_job(holder)
    assert manager.retry_job(failed)
    assert database.job(failed)["status"] == "todo"


async def test_the_worker_runs_retries_and_finishes_unique_jobs_and_frees_their_keys(
    async_app: sqla_jobs.App, database: Database
) -> None:
    runs: list[int] = []

    @async_app.task(name="tests.flaky", retry=1)
    async def flaky(n: int) -> None:
        runs.append(n)
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    job_id = flaky.configure(unique=True).defer(n=1)
    await async_app.run_worker_async(wait=False, install_signal_handlers=False)

    assert runs == [1, 1]
    assert database.job(job_id)["status"] == "succeeded"
    assert flaky.configure(unique=True).defer(n=1) != job_id  # its key is free again


# -- under concurrency ---------------------------------------------------------------------------


async def test_concurrent_deferrers_of_the_same_unique_job_make_exactly_one_job(
    app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(app)
    deferrers = 6
    for round_ in range(3):
        barrier = threading.Barrier(deferrers, timeout=30)
        outcomes: list[Any] = []

        def defer(
            on_conflict: Any,
            n: int = round_,
            barrier: threading.Barrier = barrier,
            outcomes: list[Any] = outcomes,
        ) -> None:
            deferrer = report.configure(unique=True, on_conflict=on_conflict)
            barrier.wait()
            try:
                outcomes.append(deferrer.defer(n=n))
            except AlreadyEnqueued as exc:
                outcomes.append(exc)

        mode = "raise" if round_ % 2 == 0 else "return_existing"
        threads = [threading.Thread(target=defer, args=(mode,)) for _ in range(deferrers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        ids = [o for o in outcomes if isinstance(o, int)]
        job_ids = [j["id"] for j in database.jobs() if j["args"] == {"n": round_}]
        assert len(job_ids) == 1, outcomes
        if mode == "raise":
            assert ids == job_ids
            assert len(outcomes) == deferrers
            assert {o.job_id for o in outcomes if isinstance(o, AlreadyEnqueued)} <= {
                job_ids[0],
                None,
            }
        else:
            assert ids == job_ids * deferrers


async def test_concurrent_async_deferrers_of_the_same_unique_job_make_exactly_one_job(
    async_app: sqla_jobs.App, database: Database
) -> None:
    report, _ = register(async_app)
    deferrer = report.configure(unique=True, on_conflict="return_existing")

    ids = await asyncio.gather(*(deferrer.defer_async(n=1) for _ in range(10)))
    batches = await asyncio.gather(
        *(deferrer.batch_defer_async({"n": 2}, {"n": 3}) for _ in range(5))
    )

    assert len(set(ids)) == 1
    assert len({tuple(batch) for batch in batches}) == 1
    assert database.job_count() == 3


# -- bad options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique": "yes"}, "unique must be True, False or a sqla_jobs.Unique"),
        ({"unique": True, "on_conflict": "ignore"}, "must be 'raise' or 'return_existing'"),
        ({"on_conflict": "return_existing"}, "applies to unique jobs: pass unique=True"),
    ],
)
async def test_bad_unique_options_are_refused_at_configure(
    app: sqla_jobs.App, database: Database, options: dict[str, Any], message: str
) -> None:
    report, _ = register(app)
    with pytest.raises(InvalidJobOptions, match=message):
        report.configure(**options).defer()
    assert database.job_count() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": 0}, "positive number of seconds"),
        ({"period": float("inf")}, "positive number of seconds"),
        ({"statuses": ["todo"]}, "must include doing, aborting"),
        ({"statuses": ["done"]}, "must be job statuses"),
        ({"key": ""}, "unique key must not be empty"),
        ({"key": "a\x00"}, "NUL character"),
    ],
)
def test_bad_unique_values_are_refused_naming_the_fix(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidJobOptions, match=message):
        Unique(**options)


def test_unique_statuses_are_kept_in_the_enums_order() -> None:
    chosen = Unique(statuses=["succeeded", "aborting", "doing", "todo"]).statuses
    assert chosen == (JobStatus.TODO, JobStatus.DOING, JobStatus.SUCCEEDED, JobStatus.ABORTING)
