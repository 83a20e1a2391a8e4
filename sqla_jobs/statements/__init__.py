"""Every statement sqla_jobs sends, built from the Core tables: the source of ``queries``.

Each statement is rendered to plain SQL text with ``%(name)s`` placeholders, which psycopg 3,
psycopg2, aiopg and SQLAlchemy psycopg 3 or psycopg2 engines (sync or async) all accept as
they are: one definition serves every connector, and no statement is compiled on the hot
path. The rendered text ships as ``sqla_jobs/_rendered_queries.py``, so that the runtime
(``queries``, the worker) needs no SQLAlchemy; after changing a statement here, write it
again with ``python -m sqla_jobs.statements`` (a unit test fails until the two agree).

One module per topic: `defer`, `claim`, `finish`, `workers`, `stalled`, `jobs` (reading and
managing them), `periodic`, `workflows`; `_build` holds the compiler and the shared pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .._query import Query
from ..schema import jobs as jobs_table
from . import (
    claim,
    controls,
    dashboard,
    defer,
    finish,
    jobs,
    periodic,
    stalled,
    workers,
    workflows,
)
from ._build import quoted_name, render_in_schema
from .defer import COPY_COLUMNS, COPY_COLUMNS_WITH_TAGS

__all__ = [
    "ALL",
    "COPY_COLUMNS",
    "COPY_COLUMNS_WITH_TAGS",
    "RENDERED_PATH",
    "InSchema",
    "in_schema",
    "rendered_module",
]

#: Every statement, in the order of the rendered module.
ALL: tuple[Query, ...] = (
    defer.defer_job,
    defer.defer_jobs,
    defer.reserve_job_ids,
    defer.waiting_queueing_locks,
    defer.defer_job_unless_unique_taken,
    defer.defer_jobs_unless_unique_taken,
    defer.unique_jobs,
    claim.claim_jobs,
    claim.claim_jobs_in_queues,
    finish.finish_succeeded,
    finish.finish_succeeded_with_results,
    finish.delete_jobs_by_id,
    finish.finish_jobs,
    workers.register_worker,
    workers.heartbeat,
    workers.notify,
    workers.unregister_worker,
    workers.requeue_worker_jobs,
    workers.list_workers,
    jobs.get_job,
    jobs.await_job,
    jobs.count_jobs_by_status,
    jobs.check_schema,
    jobs.list_jobs,
    jobs.list_jobs_with_tags,
    jobs.count_jobs_by_status_with_tags,
    jobs.job_history,
    jobs.cancel_jobs,
    jobs.abort_jobs,
    jobs.retry_jobs,
    jobs.delete_jobs,
    jobs.existing_job_ids,
    jobs.prune_jobs,
    periodic.defer_periodic_jobs,
    periodic.prune_periodic_defers,
    stalled.adopt_stalled_jobs,
    stalled.finish_recovered_jobs,
    stalled.delete_stalled_workers,
    workers.aborting_jobs_of_worker,
    workers.reregister_worker,
    *dashboard.ALL,
    controls.set_paused,
    controls.set_limits,
    controls.list_controls,
    controls.running_per_queue_and_task,
    controls.claim_controlled,
    controls.claim_controlled_in_queues,
    workflows.defer_workflow,
    workflows.get_workflow,
    workflows.workflow_jobs,
    workflows.workflow_dependencies,
    workflows.parent_results,
    workflows.cancel_workflow,
)

RENDERED_PATH = Path(__file__).parent.with_name("_rendered_queries.py")


class InSchema(NamedTuple):
    """Every statement, rendered for tables in one schema (`in_schema`)."""

    all: tuple[Query, ...]
    claim_template: str
    claim_in_queues_template: str
    jobs_table: str


def in_schema(schema: str) -> InSchema:
    """Every statement of `ALL`, the claim templates and the jobs table's name, for tables in
    PostgreSQL schema ``schema`` (quoted wherever it appears): rendered from the same Core
    statements as the module `rendered_module` writes, when an app names its schema."""
    return InSchema(
        all=tuple(render_in_schema(query.name, schema) for query in ALL),
        claim_template=claim.claim_template(in_queues=False, schema=schema),
        claim_in_queues_template=claim.claim_template(in_queues=True, schema=schema),
        # COPY takes no parameters: its text keeps a % as it is.
        jobs_table=quoted_name(jobs_table.name, schema).replace("%%", "%"),
    )


def _split_string(sql: str) -> list[str]:
    """``sql`` as string literals, one per line of SQL, that Python joins back."""
    literals = [repr(line) for line in sql.splitlines(keepends=True)]
    literals[-1] += ","
    return literals


def rendered_module() -> str:
    """The text of ``_rendered_queries.py``: every statement of `ALL` as a `Query`, the claim
    templates, and the names the runtime needs."""
    lines = [
        '"""Written by ``python -m sqla_jobs.statements`` from the Core statements there: do not',
        'edit (a unit test compares this file with a fresh rendering)."""',
        "",
        "from ._query import Query",
        "",
        f"JOBS_TABLE = {quoted_name(jobs_table.name, None)!r}",
        f"COPY_COLUMNS = {COPY_COLUMNS!r}",
        f"COPY_COLUMNS_WITH_TAGS = {COPY_COLUMNS_WITH_TAGS!r}",
        f"CLAIM_TEMPLATE = {claim.claim_template(in_queues=False)!r}",
        f"CLAIM_IN_QUEUES_TEMPLATE = {claim.claim_template(in_queues=True)!r}",
    ]
    for query in ALL:
        lines += [
            "",
            f"{query.name} = Query(",
            f"    {query.name!r},",
            *(f"    {line}" for line in _split_string(query.sql)),
            f"    prepared={query.prepared!r},",
        ]
        if query.preamble:
            lines += ["    preamble=("]
            for ahead in query.preamble:
                lines += [f"        {line}" for line in _split_string(ahead)]
            lines += ["    ),"]
        lines += [")"]
    lines += ["", f"ALL = ({', '.join(query.name for query in ALL)},)", ""]
    return "\n".join(lines)
