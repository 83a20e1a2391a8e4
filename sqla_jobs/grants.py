"""Least privilege: the ``GRANT`` statements that let an application role and a worker role use
the job tables, and nothing more.

Three roles share the tables. The **owner** runs the migrations (it creates the tables, so it
owns them). The **app** role is what a web application and a dashboard connect as: it defers,
reads, cancels, aborts, retries, deletes and prunes jobs, pauses, resumes and limits queues and
tasks, and reads workers and periodic ticks. The **worker** role claims and finishes jobs (a
limited claim spends its rate limit's tokens), keeps its own row in the workers table, writes
the limits its app declares, defers periodic ticks and the jobs its tasks defer. Neither can
create, alter, drop or truncate anything: those need ownership, which the grants never give.

The triggers on the jobs table run as the role whose statement fires them, so both roles may
write a job's history (``sqla_jobs_job_events``) as their own changes require.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Table → privileges of the app role.
APP_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    "sqla_jobs_jobs": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "sqla_jobs_job_events": ("SELECT", "INSERT", "DELETE"),
    "sqla_jobs_workers": ("SELECT",),
    "sqla_jobs_periodic_defers": ("SELECT",),
    "sqla_jobs_controls": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # Workflows: deferred, read, cancelled and pruned (their triggers delete dependencies).
    "sqla_jobs_workflows": ("SELECT", "INSERT", "DELETE"),
    "sqla_jobs_job_dependencies": ("SELECT", "INSERT", "DELETE"),
}

#: Table → privileges of the worker role. (UPDATE on the ticks table: pruning old ticks locks
#: them with ``FOR UPDATE SKIP LOCKED``, which needs it.)
WORKER_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    "sqla_jobs_jobs": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "sqla_jobs_job_events": ("SELECT", "INSERT", "DELETE"),
    "sqla_jobs_workers": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "sqla_jobs_periodic_defers": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "sqla_jobs_controls": ("SELECT", "INSERT", "UPDATE"),
    # A task may defer a workflow; a finish reads the dependencies (triggers), a deleted
    # job's go with it.
    "sqla_jobs_workflows": ("SELECT", "INSERT", "DELETE"),
    "sqla_jobs_job_dependencies": ("SELECT", "INSERT", "DELETE"),
}


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier, quoted: safe whatever it holds."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"A role or schema name must be a non-empty string, not {name!r}")
    return '"' + name.replace('"', '""') + '"'


#: Tables keyed by their own columns: no id sequence to grant.
_WITHOUT_IDENTITY = frozenset({"sqla_jobs_controls", "sqla_jobs_job_dependencies"})


def grant_statements(
    *, app_role: str | None = None, worker_role: str | None = None, schema: str = "public"
) -> list[str]:
    """The statements that give ``app_role`` and ``worker_role`` (either may be None) what they
    need on the job tables in ``schema``, for the owner of the tables to run: after
    ``sqla-jobs schema upgrade``, or in the host application's own migration
    (``op.execute(statement)`` for each)."""
    if app_role is None and worker_role is None:
        raise ValueError("Name an app role, a worker role, or both.")
    statements: list[str] = []
    for role, privileges in ((app_role, APP_PRIVILEGES), (worker_role, WORKER_PRIVILEGES)):
        if role is None:
            continue
        grantee = quote_identifier(role)
        statements.append(f"GRANT USAGE ON SCHEMA {quote_identifier(schema)} TO {grantee}")
        for table, table_privileges in privileges.items():
            name = f"{quote_identifier(schema)}.{quote_identifier(table)}"
            statements.append(f"GRANT {', '.join(table_privileges)} ON {name} TO {grantee}")
            if "INSERT" in table_privileges and table not in _WITHOUT_IDENTITY:
                # The identity column's sequence: a new row draws its id from it.
                sequence = f"{quote_identifier(schema)}.{quote_identifier(table + '_id_seq')}"
                statements.append(f"GRANT USAGE ON SEQUENCE {sequence} TO {grantee}")
    return statements
