"""Workflows through the public API, on a real PostgreSQL: jobs deferred together in one
transaction, each starting once the jobs it depends on succeeded; the database releases,
cancels and revives dependents when jobs end (revision 0010's triggers).

Deferring, reading and cancelling run once per connector; jobs are run by a worker on psycopg 3
in this process, which shares the app's tasks (as in test_results.py).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from helpers import sqlalchemy_url
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sqla_jobs
from sqla_jobs import JobStatus, chain, chord, group
from sqla_jobs.statuses import CANCELLED_BY_PARENT
from sqla_jobs.worker.database import WorkerDatabase

if TYPE_CHECKING:
    from conftest import Database

PREFIX = "tests.workflows."


class Flaky:
    """Fails the runs it is told to fail, by key: a task that fails, then succeeds once
    retried by hand."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.lock = threading.Lock()


def register(app: sqla_jobs.App, flaky: Flaky | None = None) -> dict[str, sqla_jobs.Task]:
    flaky = flaky or Flaky()

    @app.task(name=PREFIX + "value")
    def value(value: Any = None) -> Any:
        return value

    @app.task(name=PREFIX + "nap")
    async def nap(seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value

    @app.task(name=PREFIX + "collect", pass_context=True)
    def collect(context: sqla_jobs.JobContext) -> Any:
        return {
            "results": list(context.parent_results.values()),
            "ids": list(context.parent_results),
            "parents": [[p.id, p.task_name, str(p.status)] for p in context.parents],
            "workflow_id": context.workflow_id,
        }

    @app.task(name=PREFIX + "fails")
    def fails() -> None:
        raise ValueError("this step fails")

    @app.task(name=PREFIX + "flaky")
    def flaky_step(key: str) -> str:
        with flaky.lock:
            if key in flaky.failing:
                flaky.failing.discard(key)
                raise RuntimeError(f"{key} fails this time")
        return key

    return {name.removeprefix(PREFIX): task for name, task in app.tasks.items()}


@pytest.fixture
async def worker_app(db_url: str) -> AsyncIterator[sqla_jobs.App]:
    """An app on psycopg 3 that defers and runs workflows, with the tasks of `register`."""
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    register(app)
    await app.open_async()
    yield app
    await app.close_async()


def tasks(app: sqla_jobs.App) -> dict[str, sqla_jobs.Task]:
    return {name.removeprefix(PREFIX): task for name, task in app.tasks.items()}


async def drain(app: sqla_jobs.App, concurrency: int = 4) -> None:
    """Run a worker until no runnable job is left (blocked jobs are not runnable)."""
    await asyncio.wait_for(
        app.run_worker_async(
            wait=False,
            install_signal_handlers=False,
            polling_interval=0.05,
            concurrency=concurrency,
        ),
        timeout=30,
    )


def statuses(database: Database, job_ids: Any) -> list[str]:
    return [database.job(job_id)["status"] for job_id in job_ids]


# -- shapes, run by a worker ---------------------------------------------------------------------


async def test_a_chain_runs_its_steps_one_after_another(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(
        chain(t["nap"].step(seconds=0.05), t["nap"].step(seconds=0.05), t["value"].step(value=3))
    )
    assert statuses(database, run.job_ids) == ["todo", "blocked", "blocked"]

    await drain(worker_app)

    rows = [database.job(job_id) for job_id in run.job_ids]
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    for before, after in itertools.pairwise(rows):
        assert after["started_at"] >= before["finished_at"]
    assert [row["parents_left"] for row in rows] == [None, 0, 0]


async def test_a_group_runs_its_steps_at_the_same_time(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(group(*(t["nap"].step(seconds=0.5) for _ in range(3))))
    assert statuses(database, run.job_ids) == ["todo"] * 3

    await drain(worker_app, concurrency=3)

    rows = [database.job(job_id) for job_id in run.job_ids]
    assert max(row["started_at"] for row in rows) < min(row["finished_at"] for row in rows)


async def test_a_chord_callback_reads_the_group_results_in_the_order_they_were_added(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    header = [t["nap"].step(seconds=0.2 - 0.05 * n, value=f"r{n}") for n in range(4)]
    run = worker_app.defer_workflow(chord(header, t["collect"].step()), name="chord")

    await drain(worker_app)

    *parents, callback = run.job_ids
    assert database.job(callback)["result"] == {
        "results": ["r0", "r1", "r2", "r3"],
        "ids": parents,
        "parents": [[p, PREFIX + "nap", "succeeded"] for p in parents],
        "workflow_id": run.workflow_id,
    }
    info = worker_app.job_manager.get_workflow(run.workflow_id)
    assert (info.name, info.status, info.succeeded) == ("chord", "finished", True)
    assert info.dependencies == [(callback, parent, "cancel") for parent in parents]


async def test_parents_the_claim_could_not_read_are_read_when_the_job_starts(
    worker_app: sqla_jobs.App, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(chain(t["value"].step(value="v"), t["collect"].step()))
    read = WorkerDatabase.parents_of
    calls: list[list[int]] = []

    async def fails_once(self: WorkerDatabase, job_ids: Any) -> Any:
        calls.append(list(job_ids))
        if len(calls) == 1:
            raise sqla_jobs.ConnectorError("the server went away")
        return await read(self, job_ids)

    monkeypatch.setattr(WorkerDatabase, "parents_of", fails_once)
    await drain(worker_app)

    assert calls == [[run.job_ids[1]], [run.job_ids[1]]]
    assert database.job(run.job_ids[1])["result"]["results"] == ["v"]


async def test_a_workflow_built_step_by_step_waits_for_what_after_names(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    wf = worker_app.workflow(name="order")
    charge = wf.add(t["value"].step(value="charged"))
    ship_and_mail = wf.add(
        group(t["value"].step(value="shipped"), t["value"].step(value="mailed")), after=[charge]
    )
    summary = wf.add(t["collect"].step(), after=[ship_and_mail])
    run = await wf.defer_async()

    assert isinstance(run[charge], int)
    assert len(run[ship_and_mail]) == 2
    assert run.job_ids == (run[charge], *run[ship_and_mail], run[summary])
    await drain(worker_app)

    assert database.job(run[summary])["result"]["results"] == ["shipped", "mailed"]
    assert statuses(database, run.job_ids) == ["succeeded"] * 4


async def test_blocked_jobs_are_not_claimed_while_their_parent_waits(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    later = t["value"].configure(schedule_in={"hours": 1})
    run = worker_app.defer_workflow(chain(later.step(value=1), t["value"].step(value=2)))

    await drain(worker_app)

    assert statuses(database, run.job_ids) == ["todo", "blocked"]


# -- when a parent does not succeed ------------------------------------------------------------


async def test_a_parent_that_fails_for_good_cancels_its_dependents_and_their_descendants(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(
        chain(
            t["fails"].step(),
            group(t["value"].step(value=1), chain(t["value"].step(), t["value"].step())),
            t["value"].step(),
        )
    )

    await drain(worker_app)

    failed, *rest = run.job_ids
    assert statuses(database, run.job_ids) == ["failed"] + ["cancelled"] * 4
    for job_id in rest:
        row = database.job(job_id)
        assert row["last_error"] == f"{CANCELLED_BY_PARENT}: job {failed} failed"
        assert row["started_at"] is None and row["finished_at"] is not None
    history = worker_app.job_manager.get_job_history(rest[-1])
    assert [event.status for event in history] == [JobStatus.BLOCKED, JobStatus.CANCELLED]
    assert history[-1].error == f"{CANCELLED_BY_PARENT}: job {failed} failed"


async def test_a_parent_that_fails_and_is_retried_by_its_strategy_cancels_nothing(
    db_url: str, database: Database
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    flaky = Flaky()
    flaky.failing.add("once")

    @app.task(name=PREFIX + "retried", retry=sqla_jobs.RetryStrategy(max_attempts=2))
    def retried(key: str) -> str:
        with flaky.lock:
            if key in flaky.failing:
                flaky.failing.discard(key)
                raise RuntimeError("first run fails")
        return key

    register(app)
    async with app.open_async():
        run = app.defer_workflow(chain(retried.step(key="once"), tasks(app)["collect"].step()))
        await drain(app)

    assert statuses(database, run.job_ids) == ["succeeded", "succeeded"]
    assert database.job(run.job_ids[1])["result"]["results"] == ["once"]


async def test_a_run_anyway_edge_runs_the_job_without_the_failed_parent_result(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    wf = worker_app.workflow()
    good = wf.add(t["value"].step(value="good"))
    bad = wf.add(t["fails"].step())
    cleanup = wf.add(t["collect"].step(), after=[good, bad], on_parent_failure="run")
    strict = wf.add(t["value"].step(), after=[bad])
    run = wf.defer()

    await drain(worker_app)

    assert statuses(database, [run[cleanup], run[strict]]) == ["succeeded", "cancelled"]
    result = database.job(run[cleanup])["result"]
    assert result["results"] == ["good"]
    assert result["parents"] == [
        [run[good], PREFIX + "value", "succeeded"],
        [run[bad], PREFIX + "fails", "failed"],
    ]
    info = worker_app.job_manager.get_workflow(run.workflow_id)
    assert (info.status, info.succeeded) == ("finished", False)
    assert info.counts == {JobStatus.SUCCEEDED: 2, JobStatus.FAILED: 1, JobStatus.CANCELLED: 1}


async def test_a_failed_parent_retried_by_hand_then_succeeding_lets_its_dependents_run(
    db_url: str, database: Database
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    flaky = Flaky()
    flaky.failing.add("charge")
    t = register(app, flaky)
    async with app.open_async():
        wf = app.workflow()
        other = wf.add(t["value"].step(value="other"))
        charge = wf.add(t["flaky"].step(key="charge"))
        ship = wf.add(t["collect"].step(), after=[other, charge])
        last = wf.add(t["collect"].step(), after=[ship])
        run = wf.defer()
        await drain(app)
        assert statuses(database, run.job_ids) == ["succeeded", "failed", "cancelled", "cancelled"]

        assert app.job_manager.retry_job(run[charge])

        assert statuses(database, run.job_ids) == ["succeeded", "todo", "blocked", "blocked"]
        assert database.job(run[ship])["parents_left"] == 1
        assert database.job(run[last])["last_error"] is None
        await drain(app)

    assert statuses(database, run.job_ids) == ["succeeded"] * 4
    assert database.job(run[ship])["result"]["results"] == ["other", "charge"]


async def test_cancelling_a_blocked_job_cancels_what_depends_on_it(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    later = t["value"].configure(schedule_in={"hours": 1})
    run = worker_app.defer_workflow(chain(later.step(), t["value"].step(), t["value"].step()))

    assert worker_app.job_manager.cancel_job(run.job_ids[1])

    assert statuses(database, run.job_ids) == ["todo", "cancelled", "cancelled"]
    assert database.job(run.job_ids[2])["last_error"] == (
        f"{CANCELLED_BY_PARENT}: job {run.job_ids[1]} cancelled"
    )


async def test_a_chain_of_1000_steps_is_cancelled_by_one_statement(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(chain(*(t["value"].step(value=n) for n in range(1000))))

    started = time.monotonic()
    assert worker_app.job_manager.cancel_job(run.job_ids[0])
    took = time.monotonic() - started

    counts = database.rows(
        "SELECT status::text, count(*) FROM sqla_jobs_jobs WHERE workflow_id = %s GROUP BY 1",
        (run.workflow_id,),
    )
    assert {row["status"]: row["count"] for row in counts} == {"cancelled": 1000}
    assert took < 5, took
    print(f"1,000 steps cancelled in {took:.3f} s")


async def test_deleting_a_parent_that_has_not_run_releases_its_dependents(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    later = t["value"].configure(schedule_in={"hours": 1})
    wf = worker_app.workflow()
    parent = wf.add(later.step())
    strict = wf.add(t["value"].step(), after=[parent])
    anyway = wf.add(t["value"].step(value="anyway"), after=[parent], on_parent_failure="run")
    run = wf.defer()

    assert worker_app.job_manager.delete_job(run[parent])

    assert statuses(database, [run[strict], run[anyway]]) == ["cancelled", "todo"]
    assert database.job(run[strict])["last_error"] == (
        f"{CANCELLED_BY_PARENT}: job {run[parent]} was deleted before it ended"
    )
    assert (
        database.scalar(
            "SELECT count(*) FROM sqla_jobs_job_dependencies WHERE parent_id = %s", (run[parent],)
        )
        == 0
    )


async def test_pruning_a_finished_workflow_leaves_nothing_of_it(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(
        chord([t["value"].step(), t["value"].step()], t["value"].step())
    )
    kept = worker_app.defer_workflow(t["value"].configure(schedule_in={"hours": 1}).step())
    await drain(worker_app)

    assert worker_app.job_manager.prune_jobs(older_than=datetime.timedelta(0)) == 3

    assert database.scalar("SELECT count(*) FROM sqla_jobs_job_dependencies") == 0
    assert database.rows("SELECT id FROM sqla_jobs_workflows") == [{"id": kept.workflow_id}]
    with pytest.raises(sqla_jobs.WorkflowNotFound, match=r"list_jobs\(workflow_id=\.\.\.\)"):
        worker_app.job_manager.get_workflow(run.workflow_id)


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 1])
async def test_two_parents_ending_in_two_transactions_release_their_child_once(
    worker_app: sqla_jobs.App, database: Database, db_url: str, first: int
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(
        chord([t["value"].step(), t["value"].step()], t["value"].step())
    )
    parents, child = run.job_ids[:2], run.job_ids[2]
    update = "UPDATE sqla_jobs_jobs SET status = 'succeeded' WHERE id = %s"

    with psycopg.connect(db_url) as one, psycopg.connect(db_url) as two:
        one.execute(update, (parents[first],))
        # The second waits for the child's row, which the first holds until it commits.
        waiting = threading.Thread(target=two.execute, args=(update, (parents[1 - first],)))
        waiting.start()
        assert database.wait_until(
            lambda: (
                database.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                == 1
            )
        )
        assert database.job(child)["status"] == "blocked"
        one.commit()
        waiting.join(10)
        assert not waiting.is_alive()
        two.commit()

    row = database.job(child)
    assert (row["status"], row["parents_left"]) == ("todo", 0)
    assert [event["status"] for event in database.events(child)] == ["blocked", "todo"]


async def test_a_deadlock_between_two_finishes_aborts_one_and_its_retry_counts_right(
    worker_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    """Two transactions each finishing a parent of the other's next child: PostgreSQL aborts
    one (40P01), as it may abort a worker's batched finish in a diamond-shaped workflow. The
    worker's completer keeps a failed flush's outcomes and writes them again; here the retry
    is by hand, and every child is released once."""
    t = tasks(worker_app)
    wf = worker_app.workflow()
    p = [wf.add(t["value"].step()) for _ in range(4)]
    x = wf.add(t["value"].step(), after=[p[0], p[3]])
    y = wf.add(t["value"].step(), after=[p[1], p[2]])
    run = wf.defer()
    update = "UPDATE sqla_jobs_jobs SET status = 'succeeded' WHERE id = %s"

    with psycopg.connect(db_url) as one, psycopg.connect(db_url) as two:
        one.execute(update, (run[p[0]],))  # holds x
        two.execute(update, (run[p[1]],))  # holds y
        errors: list[BaseException] = []

        def finish(conn: psycopg.Connection[Any], parent: int) -> None:
            try:
                conn.execute(update, (parent,))
            except psycopg.errors.DeadlockDetected as exc:
                errors.append(exc)
                conn.rollback()

        waiting = threading.Thread(target=finish, args=(one, run[p[2]]))  # wants y
        waiting.start()
        finish(two, run[p[3]])  # wants x: one of the two is aborted
        waiting.join(10)
        assert len(errors) == 1 and errors[0].sqlstate == "40P01"
        one.commit()
        two.commit()

    # The aborted transaction's parents are still running; finishing them again counts right.
    for parent in p:
        if database.job(run[parent])["status"] != "succeeded":
            database.conn.execute(update, (run[parent],))
    assert [
        (row["status"], row["parents_left"]) for row in map(database.job, (run[x], run[y]))
    ] == [
        ("todo", 0),
        ("todo", 0),
    ]


# -- deferring -----------------------------------------------------------------------------------


async def test_every_connector_defers_reads_and_cancels_a_workflow(
    app: sqla_jobs.App, database: Database
) -> None:
    t = register(app)
    run = app.defer_workflow(
        chord([t["value"].step(value=1), t["value"].step(value=2)], t["collect"].step()),
        name="per connector",
    )
    async_run = await app.defer_workflow_async(chain(t["value"].step(), t["value"].step()))

    info = app.job_manager.get_workflow(run.workflow_id)
    assert info.name == "per connector"
    assert [job.id for job in info.jobs] == list(run.job_ids)
    assert [job.status for job in info.jobs] == [JobStatus.TODO, JobStatus.TODO, JobStatus.BLOCKED]
    assert {job.workflow_id for job in info.jobs} == {run.workflow_id}
    assert info.status == "running"
    listed = app.job_manager.list_jobs(workflow_id=async_run.workflow_id)
    assert [job.id for job in listed] == sorted(async_run.job_ids, reverse=True)
    assert database.job(run.job_ids[0])["has_dependents"] is True
    assert database.job(run.job_ids[2])["has_dependents"] is None

    assert app.job_manager.cancel_workflow(run.workflow_id) == 3
    assert await app.job_manager.cancel_workflow_async(async_run.workflow_id) == 2
    assert app.job_manager.cancel_workflow(run.workflow_id) == 0
    info = await app.job_manager.get_workflow_async(run.workflow_id)
    assert info.status == "finished"
    with pytest.raises(sqla_jobs.WorkflowNotFound, match="No workflow with id 123456789"):
        app.job_manager.cancel_workflow(123456789)


async def test_cancel_workflow_leaves_running_jobs_unless_asked_to_abort(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    run = worker_app.defer_workflow(chain(t["value"].step(), t["value"].step()))
    database.conn.execute(
        "UPDATE sqla_jobs_jobs SET status = 'doing' WHERE id = %s", (run.job_ids[0],)
    )

    assert worker_app.job_manager.cancel_workflow(run.workflow_id) == 1
    assert statuses(database, run.job_ids) == ["doing", "cancelled"]
    assert worker_app.job_manager.cancel_workflow(run.workflow_id, abort=True) == 1
    assert statuses(database, run.job_ids) == ["aborting", "cancelled"]


async def test_a_bad_step_anywhere_writes_nothing(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    steps = [t["value"].step(value=n) for n in range(10)]
    steps[6] = t["value"].step(value=object())  # not JSON

    with pytest.raises(sqla_jobs.InvalidJobArguments):
        worker_app.defer_workflow(chain(*steps))

    assert database.job_count() == 0
    assert database.scalar("SELECT count(*) FROM sqla_jobs_workflows") == 0


def test_steps_with_a_queueing_lock_a_unique_key_or_bind_are_refused(
    worker_app: sqla_jobs.App,
) -> None:
    value = tasks(worker_app)["value"]
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="without queueing_lock"):
        value.configure(queueing_lock="once").step()
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="without unique"):
        value.configure(unique=True).step()
    engine = create_engine(sqlalchemy_url("postgresql://nowhere/db", "psycopg"))
    with Session(engine) as session, pytest.raises(sqla_jobs.InvalidJobOptions, match="defer"):
        value.configure(bind=session).step()
    with pytest.raises(sqla_jobs.InvalidJobOptions, match=r"'cancel'.*'run'"):
        worker_app.workflow(on_parent_failure="ignore")  # type: ignore[arg-type]
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="at least one step"):
        worker_app.workflow().defer()


@pytest.fixture
def sync_engine(db_url: str) -> Iterator[Any]:
    engine = create_engine(sqlalchemy_url(db_url, "psycopg"))
    yield engine
    engine.dispose()


async def test_a_workflow_deferred_through_a_session_shares_its_fate(
    worker_app: sqla_jobs.App, database: Database, sync_engine: Any
) -> None:
    t = tasks(worker_app)
    with Session(sync_engine) as session:
        worker_app.defer_workflow(chain(t["value"].step(), t["value"].step()), bind=session)
        session.rollback()
    assert database.job_count() == 0
    assert database.scalar("SELECT count(*) FROM sqla_jobs_workflows") == 0

    with Session(sync_engine) as session:
        run = worker_app.defer_workflow(
            chain(t["value"].step(value=1), t["collect"].step()), bind=session
        )
        assert database.job_count() == 0
        session.commit()
    await drain(worker_app)

    assert database.job(run.job_ids[1])["result"]["results"] == [1]


async def test_a_workflow_deferred_through_an_async_session_shares_its_fate(
    worker_app: sqla_jobs.App, database: Database, db_url: str
) -> None:
    t = tasks(worker_app)
    engine = create_async_engine(sqlalchemy_url(db_url, "psycopg"))
    try:
        async with AsyncSession(engine) as session:
            wf = worker_app.workflow()
            wf.add(t["value"].step())
            await wf.defer_async(bind=session)
            await session.rollback()
        assert database.job_count() == 0

        async with AsyncSession(engine) as session:
            run = await worker_app.defer_workflow_async(
                chain(t["value"].step(value=2), t["collect"].step()), bind=session
            )
            await session.commit()
    finally:
        await engine.dispose()
    await drain(worker_app)

    assert database.job(run.job_ids[1])["result"]["results"] == [2]


async def test_ten_thousand_steps_defer_in_well_under_a_second(
    worker_app: sqla_jobs.App, database: Database
) -> None:
    t = tasks(worker_app)
    fan_out = group(*(t["value"].step(value=n) for n in range(10_000)))
    shape = chord([fan_out], t["value"].step())

    started = time.monotonic()
    run = worker_app.defer_workflow(shape)
    took = time.monotonic() - started

    assert len(run.job_ids) == 10_001
    assert database.scalar("SELECT count(*) FROM sqla_jobs_job_dependencies") == 10_000
    assert database.job(run.job_ids[-1])["parents_left"] == 10_000
    assert took < 1.0, f"{took:.2f} s"
    print(f"10,001 steps deferred in {took:.3f} s")
