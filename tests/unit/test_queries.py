"""Every statement is rendered once to driver-ready SQL: only named ``%(name)s`` placeholders,
the parameters the job manager sends, and a claim that skips locked rows in priority order."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys

import pytest

from sqla_jobs import queries
from sqla_jobs.jobs import JobSpec
from sqla_jobs.operations import _Batch, _many_jobs_params, _one_job_params
from sqla_jobs.statuses import JobStatus

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
CLAIMS = [
    queries.claim_jobs,
    queries.claim_jobs_in_queues,
    queries.claim_query(8, in_queues=False),
    queries.claim_query(100, in_queues=True),
]


def placeholders(query: queries.Query) -> set[str]:
    return set(PLACEHOLDER.findall(query.sql))


def one_line(sql: str) -> str:
    return " ".join(sql.split())


def test_the_module_lists_its_queries() -> None:
    assert len(queries.ALL) >= 14
    names = [query.name for query in queries.ALL]
    assert len(names) == len(set(names)), "two queries share a name"
    for query in queries.ALL:
        assert getattr(queries, query.name) is query, f"{query.name} is not queries.{query.name}"


@pytest.mark.parametrize("query", queries.ALL, ids=lambda query: query.name)
def test_query_has_only_named_placeholders(query: queries.Query) -> None:
    leftover = PLACEHOLDER.sub("", query.sql).replace("%%", "")
    assert "%" not in leftover, "a positional %s or a lone % would break pyformat drivers"
    assert not re.search(r"(?<![:\w]):[A-Za-z_]\w*", leftover), "a :name bind was left"
    assert "?" not in leftover


@pytest.mark.parametrize("query", queries.ALL, ids=lambda query: query.name)
def test_query_has_no_post_compile_marker(query: queries.Query) -> None:
    assert "POSTCOMPILE" not in query.sql.upper()
    assert "__[" not in query.sql


@pytest.mark.parametrize("query", queries.ALL, ids=lambda query: query.name)
def test_query_text_is_its_string(query: queries.Query) -> None:
    assert isinstance(query.sql, str) and query.sql.strip()
    assert str(query) == query.sql


@pytest.mark.parametrize("query", CLAIMS, ids=lambda query: query.name)
def test_claim_skips_rows_other_workers_hold(query: queries.Query) -> None:
    assert "FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED" in one_line(query.sql)


LIMIT = r"(%\(limit\)s|\d+)"
SCAN_LIMIT = rf"LIMIT \(SELECT CAST\({LIMIT} AS BIGINT\) AS claim_size\) "
LOCKED = "FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED"


@pytest.mark.parametrize("query", CLAIMS, ids=lambda query: query.name)
def test_claim_takes_the_highest_priority_then_the_oldest_job(query: queries.Query) -> None:
    sql = one_line(query.sql)
    if query.name == "claim_jobs":
        order = re.search(
            r"ORDER BY sqla_jobs_jobs\.priority DESC, sqla_jobs_jobs\.id "
            rf"{SCAN_LIMIT}{LOCKED}\) AS ready LIMIT {LIMIT}\)",
            sql,
        )
    else:  # each queue's walk in that order, then the best of all walks
        order = re.search(
            r"ORDER BY sqla_jobs_jobs\.queue, sqla_jobs_jobs\.priority DESC, sqla_jobs_jobs\.id "
            rf"{SCAN_LIMIT}{LOCKED}\) AS walk LIMIT {LIMIT}\) AS best ON true "
            rf"ORDER BY best\.priority DESC, best\.id LIMIT {LIMIT}\)",
            sql,
        )
    assert order is not None, sql
    assert len(set(order.groups())) == 1, "every limit of the claim is the same"


@pytest.mark.parametrize("query", CLAIMS, ids=lambda query: query.name)
def test_claim_only_takes_due_todo_jobs_whose_lock_is_free(query: queries.Query) -> None:
    sql = one_line(query.sql)
    assert "sqla_jobs_jobs.status = 'todo'" in sql
    assert "sqla_jobs_jobs.scheduled_at <= now()" in sql
    assert "running.status IN ('doing', 'aborting')" in sql
    assert "earlier.id < sqla_jobs_jobs.id" in sql


def test_claim_parameters() -> None:
    assert placeholders(queries.claim_jobs) == {"worker_id", "limit"}
    assert placeholders(queries.claim_jobs_in_queues) == {"worker_id", "limit", "queues"}


def test_claim_with_its_limit_written_in_keeps_the_claims_name_and_other_parameters() -> None:
    query = queries.claim_query(16, in_queues=True)
    assert query.name == "claim_jobs_in_queues" and query.prepared
    assert "LIMIT (SELECT CAST(16 AS BIGINT) AS claim_size) FOR UPDATE" in one_line(query.sql)
    assert str(queries.LIMIT_MARKER) not in query.sql
    assert placeholders(query) == {"worker_id", "queues"}
    assert queries.claim_query(16, in_queues=True) is query  # rendered once
    assert queries.claim_query(4, in_queues=False).name == "claim_jobs"


@pytest.mark.parametrize(
    ("wanted", "size"),
    [(0, 0), (1, 1), (3, 3), (16, 16), (17, 16), (63, 32), (99, 64), (100, 100), (250, 100)],
)
def test_claims_are_exact_when_small_then_powers_of_two_up_to_the_fetch_batch(
    wanted: int, size: int
) -> None:
    assert queries.claim_size(wanted, 100) == size


SPEC = JobSpec(
    task_name="t",
    args={"n": 1},
    queue="q",
    priority=1,
    lock="l",
    queueing_lock="ql",
    scheduled_at=datetime.datetime.now(datetime.UTC),
)


def test_defer_query_takes_exactly_the_parameters_the_manager_sends() -> None:
    assert placeholders(queries.defer_job) == set(_one_job_params(SPEC))
    assert placeholders(queries.defer_job_unless_unique_taken) == set(_one_job_params(SPEC))


def test_batch_defer_query_takes_exactly_the_parameters_the_manager_sends() -> None:
    params = _many_jobs_params([SPEC, SPEC], _Batch(["{}", "{}"]))
    assert placeholders(queries.defer_jobs) == set(params)
    assert placeholders(queries.defer_jobs_unless_unique_taken) == set(params)


def test_batch_defer_text_does_not_depend_on_the_batch_size() -> None:
    """Columns travel as arrays: one statement text for any number of jobs."""
    sql = one_line(queries.defer_jobs.sql)
    assert "unnest(" in sql
    assert "WITH ORDINALITY" in sql
    assert "ORDER BY batch_rows.ord" in sql, "ids come back in the order the jobs were given"


def test_finish_queries_take_arrays_of_ids_attempts_and_the_worker_that_ran_them() -> None:
    assert placeholders(queries.finish_succeeded) == {"worker_id", "ids", "attempts"}
    assert placeholders(queries.delete_jobs_by_id) == {"worker_id", "ids", "attempts"}
    assert placeholders(queries.finish_jobs) == {
        "worker_id",
        "ids",
        "attempts",
        "statuses",
        "errors",
        "retry_ats",
        "refunds",
    }


@pytest.mark.parametrize(
    "query", [queries.finish_succeeded, queries.finish_jobs], ids=lambda query: query.name
)
def test_finish_only_touches_jobs_still_running_under_this_worker(query: queries.Query) -> None:
    sql = one_line(query.sql)
    # Written as "neither waiting nor finished", so that no partial index matches it
    # (tests/integration/test_query_plans.py): every status but the running ones.
    excluded = re.search(r"sqla_jobs_jobs\.status NOT IN \(([^)]*)\)", sql)
    assert excluded is not None, sql
    left = set(JobStatus) - {JobStatus(name.strip(" '")) for name in excluded[1].split(",")}
    assert left == {JobStatus.DOING, JobStatus.ABORTING}
    assert "sqla_jobs_jobs.worker_id = %(worker_id)s" in sql
    # ... and only in the attempt that ended: not a later run of the same job.
    assert re.search(r"sqla_jobs_jobs\.attempts = \w+\.attempt\b", sql), sql


# -- the rendered module agrees with the Core statements ---------------------------------------


def test_rendered_statements_are_the_core_statements_rendered_now() -> None:
    """``_rendered_queries.py`` is a cache of ``sqla_jobs.statements``: rewrite it with
    ``python -m sqla_jobs.statements && ruff format sqla_jobs/_rendered_queries.py``."""
    from sqla_jobs import statements
    from sqla_jobs.statements import claim
    from sqla_jobs.statements._build import compile_in_schema

    fix = "run `python -m sqla_jobs.statements` to write sqla_jobs/_rendered_queries.py again"
    assert [(q.name, q.sql, q.prepared) for q in queries.ALL] == [
        (q.name, q.sql, q.prepared) for q in statements.ALL
    ], fix
    assert queries.COPY_COLUMNS == statements.COPY_COLUMNS, fix
    assert queries.COPY_COLUMNS_WITH_TAGS == statements.COPY_COLUMNS_WITH_TAGS, fix
    assert claim.jobs.name == queries.JOBS_TABLE, fix
    for limit in (1, 7, 16, 64, 300):
        for in_queues in (False, True):
            rendered = queries.claim_query(limit, in_queues=in_queues)
            core = compile_in_schema(claim.claim_statement(in_queues, limit), None)
            assert rendered.sql == core, fix


def test_a_worker_and_the_command_line_run_without_importing_sqlalchemy() -> None:
    """SQLAlchemy is some 15 MiB of a worker's memory; the worker sends pre-rendered SQL."""
    code = (
        "import sys, sqla_jobs, sqla_jobs.worker, sqla_jobs.cli, sqla_jobs.connectors.psycopg;"
        "app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector());"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_the_tables_metadata_is_still_exported_and_loads_sqlalchemy_on_first_use() -> None:
    code = (
        "import sys, sqla_jobs;"
        "assert 'sqlalchemy' not in sys.modules;"
        "from sqla_jobs import metadata;"
        "from sqla_jobs.schema import metadata as tables;"
        "assert metadata is tables is sqla_jobs.metadata;"
        "print(sorted(metadata.tables))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "sqla_jobs_jobs" in out
