"""The plans PostgreSQL makes for the worker's statements, whatever it knows of the jobs table.

A fresh deploy fills the jobs table before autovacuum's first ANALYZE (or with autovacuum off):
the planner then guesses row counts, and a guess below the claim's limit once made it sort the
whole queue at every claim (200,000 waiting jobs: 1,400 jobs/s instead of 20,000). These tests
read ``EXPLAIN`` of the claim and the finish statements over a table never analysed, analysed,
and analysed when it held ten rows, as custom plans (the first calls of a prepared statement)
and as the generic plan PostgreSQL may keep: the claim must walk its index in order and stop at
its limit, and a finish must find its jobs by their ids, never by a scan of the table or of the
worker's past jobs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from psycopg import sql as pgsql

from sqla_jobs import queries

if TYPE_CHECKING:
    from conftest import Database

WAITING = 200_000
JOBS = queries.JOBS_TABLE
CLAIM_INDEX = "ix_sqla_jobs_jobs_fetch"
QUEUE_INDEX = "ix_sqla_jobs_jobs_fetch_queue"
PRIMARY_KEY = "pk_sqla_jobs_jobs"
DEPENDENCIES_INDEX = "ix_sqla_jobs_job_dependencies_parent_id"
# The sizes a worker claims in (queries.claim_size): exact up to 16, powers of two, fetch_batch.
CLAIM_SIZES = (1, 16, 64, 100, 256, 300, 500)
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

Plan = dict[str, Any]


def load_waiting(database: Database, count: int) -> None:
    database.conn.execute(
        f"INSERT INTO {JOBS} (queue, task_name) "
        "SELECT 'default', 'noop' FROM generate_series(1, %s)",
        (count,),
    )


@pytest.fixture
def jobs_table(database: Database) -> Database:
    """The test's database, where autovacuum never analyses the jobs table behind its back."""
    database.conn.execute(f"ALTER TABLE {JOBS} SET (autovacuum_enabled = false)")
    return database


def never_analysed(database: Database) -> None:
    load_waiting(database, WAITING)


def never_analysed_small(database: Database) -> None:
    load_waiting(database, 20_000)


def analysed(database: Database) -> None:
    load_waiting(database, WAITING)
    database.conn.execute(f"ANALYZE {JOBS}")


def analysed_with_ten_waiting_jobs(database: Database) -> None:
    load_waiting(database, 10)
    database.conn.execute(f"ANALYZE {JOBS}")
    load_waiting(database, WAITING)


def analysed_with_ten_finished_jobs(database: Database) -> None:
    database.conn.execute(
        f"INSERT INTO {JOBS} (task_name, status) "
        "SELECT 'noop', 'succeeded' FROM generate_series(1, 10)"
    )
    database.conn.execute(f"ANALYZE {JOBS}")
    load_waiting(database, WAITING)


def analysed_behind_as_many_blocked_jobs(database: Database) -> None:
    """Workflow jobs waiting for their parents (blocked), older and of higher priority than
    every job to do: the claim's index holds none of them, so the walk never reads one."""
    database.conn.execute(
        f"INSERT INTO {JOBS} (task_name, status, priority, parents_left, workflow_id) "
        "SELECT 'noop', 'blocked', 10, 1, 1 FROM generate_series(1, %s)",
        (WAITING,),
    )
    load_waiting(database, WAITING)
    database.conn.execute(f"ANALYZE {JOBS}")


STATISTICS = [
    never_analysed,
    never_analysed_small,
    analysed,
    analysed_with_ten_waiting_jobs,
    analysed_with_ten_finished_jobs,
    analysed_behind_as_many_blocked_jobs,
]


def explain(database: Database, sql: str, params: dict[str, Any], *, generic: bool) -> Plan:
    """The plan of ``sql``, run and rolled back: as a custom plan for ``params``, or as the
    generic plan of the prepared statement (its parameters unknown when planned)."""
    conn = database.conn
    with conn.transaction(force_rollback=True):
        if not generic:
            row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()
        else:
            names = list(dict.fromkeys(PLACEHOLDER.findall(sql)))
            numbered = PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql)
            conn.execute(f"PREPARE planned AS {numbered}")
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            # EXECUTE takes no bound parameters: its arguments are written in as literals.
            arguments = pgsql.SQL(", ").join(pgsql.Literal(params[name]) for name in names)
            row = conn.execute(
                pgsql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE planned({})").format(arguments)
            ).fetchone()
            conn.execute("DEALLOCATE planned")
    assert row is not None
    document = next(iter(row.values()))
    plan: Plan = (json.loads(document) if isinstance(document, str) else document)[0]
    return plan


def nodes(node: Plan) -> Iterator[Plan]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def scans(node: Plan) -> Iterator[Plan]:
    """The plan's nodes but those of sub-plans (the lock checks run per job, by lock)."""
    yield node
    for child in node.get("Plans", []):
        if child.get("Parent Relationship") != "SubPlan":
            yield from scans(child)


def describe(plan: Plan) -> str:
    return json.dumps(plan["Plan"], indent=1)


def assert_claim_walks_its_index_in_order(plan: Plan, limit: int) -> None:
    """An ordered index scan of the claim's partial index under a Limit; nothing reads or sorts
    the queue as a whole."""
    every = list(nodes(plan["Plan"]))
    kinds = {node["Node Type"] for node in every}
    assert "Sort" not in kinds and "Incremental Sort" not in kinds, describe(plan)
    assert "Hash Join" not in kinds and "Merge Join" not in kinds, describe(plan)
    assert not [
        node
        for node in every
        if node.get("Relation Name") == JOBS and node["Node Type"] == "Seq Scan"
    ], describe(plan)
    walks = [node for node in scans(plan["Plan"]) if node.get("Index Name") == CLAIM_INDEX]
    assert len(walks) == 1, describe(plan)
    walk = walks[0]
    assert walk["Node Type"] == "Index Scan" and walk["Scan Direction"] == "Forward", describe(plan)
    # It stops at the limit: it reads no more rows than the claim takes.
    assert walk["Actual Rows"] == limit, describe(plan)
    # Bitmap scans of other indexes are only the update's look-up of the chosen ids.
    for node in every:
        if node["Node Type"] == "Bitmap Index Scan":
            assert node["Index Name"] == PRIMARY_KEY, describe(plan)
    assert "JIT" not in plan, "a cost this high switches JIT compilation on at every call"


def assert_claim_walks_each_queue_in_order(plan: Plan, limit: int, queues: int) -> None:
    """One ordered walk of the queue index per queue, each stopping at the limit; the only
    sort is of what the walks return."""
    every = list(nodes(plan["Plan"]))
    assert "Hash Join" not in {node["Node Type"] for node in every}, describe(plan)
    assert not [
        node
        for node in every
        if node.get("Relation Name") == JOBS and node["Node Type"] == "Seq Scan"
    ], describe(plan)
    walks = [node for node in scans(plan["Plan"]) if node.get("Index Name") == QUEUE_INDEX]
    assert len(walks) == 1, describe(plan)
    walk = walks[0]
    assert walk["Node Type"] == "Index Scan" and walk["Scan Direction"] == "Forward", describe(plan)
    assert walk["Actual Loops"] == queues and walk["Actual Rows"] <= limit, describe(plan)
    for node in every:
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            assert node["Actual Rows"] <= limit, describe(plan)
            assert node["Plans"][0]["Node Type"] == "Nested Loop", describe(plan)
        if node["Node Type"] == "Bitmap Index Scan":
            assert node["Index Name"] == PRIMARY_KEY, describe(plan)
    assert "JIT" not in plan, "a cost this high switches JIT compilation on at every call"


def assert_found_by_primary_key(plan: Plan, count: int) -> None:
    """The statement reaches the jobs table only through its primary key, probed with the
    batch's ids: never a scan of the table, nor of the worker's past jobs."""
    every = list(nodes(plan["Plan"]))
    scans = [
        node
        for node in every
        if node.get("Relation Name") == JOBS and node["Node Type"] != "ModifyTable"
    ]
    assert scans, describe(plan)
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), describe(plan)
    probes = [node for node in every if node["Node Type"] in ("Index Scan", "Bitmap Index Scan")]
    # A success's release of workflow dependents (the dependency index, then each dependent
    # by its key) is planned but never run for a batch in which no job has dependents: the
    # filter on has_dependents leaves it no row. The hot path pays nothing for workflows.
    unrun = [probe for probe in probes if probe["Actual Loops"] == 0]
    for probe in unrun:
        assert probe["Index Name"] in (PRIMARY_KEY, DEPENDENCIES_INDEX), describe(plan)
    probes = [probe for probe in probes if probe["Actual Loops"] > 0]
    assert probes, describe(plan)
    for probe in probes:
        assert probe["Index Name"] == PRIMARY_KEY, describe(plan)
        # All the batch's ids at once, or one probe per (id, attempt) the worker sent.
        assert re.fullmatch(r"\(id = (ANY .*|\w+\.id)\)", probe["Index Cond"]), describe(plan)
        # A few row versions per id (waiting, claimed, and those of the statements explained
        # before, rolled back), however many jobs the worker ran before.
        assert probe["Actual Rows"] * probe["Actual Loops"] <= 6 * count, describe(plan)
    # The batch sent as arrays is unnested once, not once per job found (a nested loop with
    # the arrays inside: 25,000,000 comparisons for a batch of 5,000).
    for node in every:
        if node["Node Type"] == "Function Scan":
            assert node["Actual Loops"] == 1, describe(plan)
    assert "JIT" not in plan


def register_worker(database: Database) -> int:
    row = database.conn.execute(
        queries.register_worker.sql,
        {"name": "plans", "hostname": "test", "pid": 1, "queues": None, "concurrency": 1},
    ).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


@pytest.mark.parametrize("statistics", STATISTICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_claim_walks_the_fetch_index_in_order_and_stops_at_its_limit(
    jobs_table: Database, statistics: Any, generic: bool
) -> None:
    statistics(jobs_table)
    worker_id = register_worker(jobs_table)
    for limit in CLAIM_SIZES:
        query = queries.claim_query(limit, in_queues=False)
        plan = explain(jobs_table, query.sql, {"worker_id": worker_id}, generic=generic)
        assert_claim_walks_its_index_in_order(plan, limit)


@pytest.mark.parametrize("statistics", STATISTICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_claim_in_queues_walks_each_queue_in_order_and_stops_at_its_limit(
    jobs_table: Database, statistics: Any, generic: bool
) -> None:
    statistics(jobs_table)
    jobs_table.conn.execute(
        f"INSERT INTO {JOBS} (queue, task_name) SELECT 'rare', 'noop' FROM generate_series(1, 5)"
    )
    worker_id = register_worker(jobs_table)
    for queues in (["default"], ["rare", "default"], ["rare"], ["empty"]):
        for limit in CLAIM_SIZES:
            query = queries.claim_query(limit, in_queues=True)
            params = {"worker_id": worker_id, "queues": queues}
            plan = explain(jobs_table, query.sql, params, generic=generic)
            assert_claim_walks_each_queue_in_order(plan, limit, len(queues))


def run_jobs(database: Database, worker_id: int, batches: int) -> None:
    """Claim and finish ``batches`` batches of 100, as a worker does: each job it ran keeps an
    entry in the index of running jobs until VACUUM, which no test runs."""
    for _ in range(batches):
        rows = database.rows(
            queries.claim_query(100, in_queues=False).sql, {"worker_id": worker_id}
        )
        params = {
            "worker_id": worker_id,
            "ids": [row["id"] for row in rows],
            "attempts": [row["attempts"] for row in rows],
        }
        database.conn.execute(queries.finish_succeeded.sql, params)


@pytest.mark.parametrize("statistics", STATISTICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("size", [100, 2_000], ids=lambda size: f"batch{size}")
def test_finish_statements_find_their_jobs_by_primary_key(
    jobs_table: Database, statistics: Any, generic: bool, size: int
) -> None:
    """A batch of any size (the completer writes up to 5,000 outcomes at once)."""
    statistics(jobs_table)
    worker_id = register_worker(jobs_table)
    run_jobs(jobs_table, worker_id, batches=30)
    rows = jobs_table.rows(queries.claim_query(size, in_queues=False).sql, {"worker_id": worker_id})
    ids = [row["id"] for row in rows]
    assert len(ids) == size
    batch = {"worker_id": worker_id, "ids": ids, "attempts": [row["attempts"] for row in rows]}
    outcomes = {
        **batch,
        "statuses": ["failed", "todo"] * (size // 2),
        "errors": ["boom"] * size,
        "retry_ats": [None] * size,
        "refunds": [0, 1] * (size // 2),
    }
    with_results = {**batch, "results": ['{"n": 1}', None] * (size // 2)}
    for query, params in [
        (queries.finish_succeeded, batch),
        (queries.finish_succeeded_with_results, with_results),
        (queries.finish_jobs, outcomes),
        (queries.delete_jobs_by_id, batch),
    ]:
        plan = explain(jobs_table, query.sql, params, generic=generic)
        assert_found_by_primary_key(plan, len(ids))
        assert plan["Plan"]["Actual Rows"] == 0 and plan["Plan"]["Plans"], query.name


TAGS_INDEX = "ix_sqla_jobs_jobs_tags"


@pytest.mark.parametrize("statement", ["list_jobs_with_tags", "count_jobs_by_status_with_tags"])
def test_jobs_with_a_rare_tag_are_found_through_the_tags_index(
    jobs_table: Database, statement: str
) -> None:
    """200,000 jobs, half of them tagged 'common', 200 'rare': the tags' GIN index finds the
    rare ones, and no scan reads the table."""
    jobs_table.conn.execute(
        f"INSERT INTO {JOBS} (task_name, tags) SELECT 'noop', CASE "
        "WHEN g %% 1000 = 0 THEN ARRAY['rare'] WHEN g %% 2 = 0 THEN ARRAY['common'] END "
        "FROM generate_series(1, %s) g",
        (WAITING,),
    )
    jobs_table.conn.execute(f"ANALYZE {JOBS}")
    params = {
        "queue": None,
        "task_name": None,
        "lock": None,
        "workflow_id": None,
        "statuses": None,
    }
    params |= {"limit": 50, "offset": 0, "tags": ["rare"]}
    plan = explain(jobs_table, getattr(queries, statement).sql, params, generic=False)

    every = list(nodes(plan["Plan"]))
    if statement == "count_jobs_by_status_with_tags":
        assert [node for node in every if node.get("Index Name") == TAGS_INDEX], describe(plan)
    else:
        # A page of 50, newest first: PostgreSQL 18 may walk the primary key backwards and
        # stop at the 50th match (6 ms here) rather than sort the index's matches; either
        # reads the tags index or stops early, never the whole table.
        assert [
            node for node in every if node.get("Index Name") in (TAGS_INDEX, "pk_sqla_jobs_jobs")
        ], describe(plan)
    assert not [node for node in every if node["Node Type"] == "Seq Scan"], describe(plan)
