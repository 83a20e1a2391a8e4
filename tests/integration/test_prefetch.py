"""How many jobs a worker claims ahead of its free slots (``prefetch``), seen from the
database: a trigger the test installs records each claim (one statement moving jobs from todo
to doing) with the number of jobs it took and how many the worker then held."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import pytest

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Database

_RECORD_CLAIMS = """
CREATE TABLE test_claims (id bigserial PRIMARY KEY, worker_id bigint, jobs int, held int);
CREATE FUNCTION test_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_claims (worker_id, jobs, held)
    SELECT new_rows.worker_id, count(*), (
        SELECT count(*) FROM sqla_jobs_jobs AS held
        WHERE held.worker_id = new_rows.worker_id AND held.status IN ('doing', 'aborting')
    )
    FROM new_rows JOIN old_rows USING (id)
    WHERE old_rows.status = 'todo' AND new_rows.status = 'doing'
    GROUP BY new_rows.worker_id;
    RETURN NULL;
END $$;
CREATE TRIGGER test_record_claim AFTER UPDATE ON sqla_jobs_jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION test_record_claim();
"""


class Claims:
    def __init__(self, database: Database) -> None:
        self.database = database

    def sizes(self) -> list[int]:
        """The number of jobs each claim took, in claim order."""
        return [
            row["jobs"] for row in self.database.rows("SELECT jobs FROM test_claims ORDER BY id")
        ]

    def most_held(self, worker_id: int) -> int:
        """The most jobs the worker held (claimed, outcome not written yet) after a claim."""
        return int(
            self.database.scalar(
                "SELECT max(held) FROM test_claims WHERE worker_id = %s", (worker_id,)
            )
        )


@pytest.fixture
def claims(database: Database) -> Claims:
    database.conn.execute(_RECORD_CLAIMS)
    return Claims(database)


async def test_worker_running_short_jobs_claims_ahead_more_than_its_slots(
    async_app: sqla_jobs.App, database: Database, claims: Claims
) -> None:
    @async_app.task(name="tests.noop")
    async def noop(n: int) -> None:
        pass

    await noop.batch_defer_async(*({"n": n} for n in range(1500)))
    concurrency = 4
    await asyncio.wait_for(
        async_app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        ),
        timeout=60,
    )

    sizes = claims.sizes()
    assert sum(sizes) == 1500
    # prefetch=concurrency, the floor, holds 2 x concurrency jobs: no claim could take more.
    assert max(sizes) > 2 * concurrency, sizes
    in_big_claims = sum(n for n in sizes if n > 2 * concurrency)
    assert in_big_claims > 1500 / 2, f"most jobs came in small claims: {sizes}"


async def test_workers_running_long_jobs_claim_ahead_no_more_than_their_slots(
    async_app: sqla_jobs.App, database: Database, claims: Claims
) -> None:
    @async_app.task(name="tests.slow")
    async def slow(n: int) -> None:
        await asyncio.sleep(0.2)

    jobs = 24
    await slow.batch_defer_async(*({"n": n} for n in range(jobs)))
    concurrency = 2
    workers = [
        sqla_jobs.Worker(
            async_app,
            sqla_jobs.WorkerOptions(
                concurrency=concurrency, wait=False, install_signal_handlers=False, name=name
            ),
        )
        for name in ("first", "second")
    ]
    await asyncio.wait_for(asyncio.gather(*(worker.run() for worker in workers)), timeout=30)

    assert database.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'succeeded'") == jobs
    # Each claim fills the slots and claims ahead as many again, as with prefetch=concurrency.
    assert max(claims.sizes()) <= 2 * concurrency, claims.sizes()
    ran = collections.Counter(job["worker_id"] for job in database.jobs())
    assert set(ran) == {worker.worker_id for worker in workers}
    assert min(ran.values()) >= jobs / 3, f"one worker took most jobs: {ran}"
    for worker in workers:
        # Claimed ahead, plus jobs that ended while a claim ran but whose end was not written
        # yet: jobs started together end together.
        held = claims.most_held(worker.worker_id)
        assert held <= 3 * concurrency, f"worker {worker.name} held {held} jobs at once"


async def test_explicit_prefetch_holds_exactly_that_many_ahead_however_short_the_jobs(
    async_app: sqla_jobs.App, database: Database, claims: Claims
) -> None:
    @async_app.task(name="tests.noop")
    async def noop(n: int) -> None:
        pass

    await noop.batch_defer_async(*({"n": n} for n in range(600)))
    await asyncio.wait_for(
        async_app.run_worker_async(
            concurrency=3, prefetch=2, wait=False, install_signal_handlers=False
        ),
        timeout=60,
    )
    sizes = claims.sizes()
    assert sum(sizes) == 600
    assert max(sizes) <= 3 + 2, sizes


async def test_worker_without_prefetch_claims_only_for_free_slots_however_short_the_jobs(
    async_app: sqla_jobs.App, database: Database, claims: Claims
) -> None:
    @async_app.task(name="tests.noop")
    async def noop(n: int) -> None:
        pass

    await noop.batch_defer_async(*({"n": n} for n in range(600)))
    await asyncio.wait_for(
        async_app.run_worker_async(
            concurrency=3, prefetch=0, wait=False, install_signal_handlers=False
        ),
        timeout=60,
    )
    sizes = claims.sizes()
    assert sum(sizes) == 600
    assert max(sizes) <= 3, sizes


async def test_later_claim_of_higher_priority_starts_before_jobs_claimed_ahead(
    async_app: sqla_jobs.App, database: Database, claims: Claims
) -> None:
    ran: list[str] = []
    first_started = asyncio.Event()

    @async_app.task(name="tests.slow")
    async def slow(name: str) -> None:
        ran.append(name)
        first_started.set()
        await asyncio.sleep(0.15)

    await slow.batch_defer_async(*({"name": f"low{n}"} for n in range(6)))
    worker = sqla_jobs.Worker(
        async_app,
        sqla_jobs.WorkerOptions(
            concurrency=1, prefetch=5, polling_interval=0.05, install_signal_handlers=False
        ),
    )
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(first_started.wait(), timeout=5)
        # One runs, five are claimed ahead, in one claim.
        assert claims.sizes() == [6]
        await slow.configure(priority=10).defer_async(name="high")
        done = await database.wait_until_async(lambda: len(ran) == 7, within=10)
        assert done, ran
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
    # Claimed while low-priority jobs waited for the slot, it starts before those left.
    assert ran.index("high") < ran.index("low5"), ran


async def test_jobs_claimed_ahead_by_a_busy_worker_go_back_to_the_queue_when_it_stops(
    async_app: sqla_jobs.App, database: Database
) -> None:
    @async_app.task(name="tests.short")
    async def short(n: int) -> None:
        await asyncio.sleep(0.002)

    jobs = 3000
    await short.batch_defer_async(*({"n": n} for n in range(jobs)))
    worker = sqla_jobs.Worker(
        async_app,
        sqla_jobs.WorkerOptions(
            concurrency=2, polling_interval=0.05, install_signal_handlers=False
        ),
    )
    running = asyncio.create_task(worker.run())
    try:
        assert await database.wait_until_async(
            lambda: (
                database.scalar("SELECT count(*) FROM sqla_jobs_jobs WHERE status = 'succeeded'")
                >= 300
            ),
            within=20,
        )
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)

    counts = collections.Counter(job["status"] for job in database.jobs())
    assert set(counts) == {"succeeded", "todo"}, counts
    assert counts["succeeded"] + counts["todo"] == jobs
    waiting = database.rows(
        "SELECT worker_id, attempts, started_at FROM sqla_jobs_jobs WHERE status = 'todo'"
    )
    # Claimed ahead but never run: no attempt is counted against their retries.
    assert {(row["worker_id"], row["attempts"], row["started_at"]) for row in waiting} == {
        (None, 0, None)
    }
