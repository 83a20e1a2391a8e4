"""Workflows: jobs that start once the jobs they depend on have succeeded.

Revision ID: 0010_workflows
Revises: 0009_results
Create Date: 2026-12-01

A new job status, ``blocked``: a job of a workflow that waits for the jobs it depends on (its
parents). The claim's partial indexes hold ``todo`` jobs only, so a blocked job costs the
claim nothing. ``ALTER TYPE ... ADD VALUE`` runs in the migration's transaction, not in an
``autocommit_block()``: PostgreSQL (12 and later; we support 15 to 18) allows it there, and only
refuses to *use* the new value before the commit, which this upgrade never does (the trigger
functions below are text until they run). An autocommit block would commit whatever preceded
it, which breaks an upgrade run in a caller's transaction (``migrations.upgrade(connection)``,
rolled back on error) or in a host application's own Alembic environment, and it would lose the
``search_path`` that a schema of one's own sets for the transaction.

Two tables: ``sqla_jobs_workflows`` (an id, an optional name, a time) and
``sqla_jobs_job_dependencies`` (job, parent, and what to do when the parent ends without
succeeding: ``cancel`` or ``run``). No foreign keys, as elsewhere (see ``schema.py``). Three
nullable columns without defaults on the jobs table (adding them rewrites nothing):
``workflow_id`` (with a partial index: jobs outside workflows are not indexed),
``parents_left`` (parents yet to end in a way the job needs; NULL: no parents) and
``has_dependents`` (NULL: no job depends on it).

The database does the dependency work when a parent ends, through row triggers (one for
updates, one for deletes, one function) whose WHEN condition PostgreSQL tests in C: a job
without dependents (``has_dependents`` NULL), which is every job outside a workflow, pays one
test of a NULL column per status change, as with ``awaited`` in 0009.

- A parent ends (succeeded, failed, cancelled, aborted): its blocked dependents count it down
  when it succeeded or their edge is ``run``, and those at 0 become ``todo`` (0002's trigger
  then notifies their queue and writes the history). Otherwise the blocked dependents on a
  ``cancel`` edge, and their blocked descendants through ``cancel`` edges, are cancelled in one
  recursive statement (a chain of 1,000 steps nests no 1,000 trigger calls: the jobs it
  cancels find nothing left blocked below them), their error beginning with
  ``statuses.CANCELLED_BY_PARENT``. ``failed`` is written only once retries are exhausted, so
  a retry never cancels anything. Two parents of one child ending in two transactions
  serialise on the child's row lock; the second update re-reads the row (EvalPlanQual), so the
  count stays right. Two batches finishing parents of each other's children may deadlock:
  PostgreSQL aborts one (40P01, a `ConnectorError`), whose worker's completer keeps the
  outcomes and writes them again, as after any failed flush
  (``test_workflows.py::test_a_deadlock_between_two_finishes_aborts_one_and_its_retry_counts_right``).
- A parent that failed, was cancelled or aborted goes back to ``todo`` (retried by hand): the
  descendants its end cancelled (cancelled, never started, their error beginning with
  ``CANCELLED_BY_PARENT``) go back to ``blocked``, each counting again the parents it waits for.
- The worker's finish of successes (``finish_succeeded``, the common end) does the counting
  itself, once per dependent per batch rather than once per parent (a job waiting for 10,000
  parents is updated some 100 times, not 10,000), and marks those parents ``has_dependents =
  false``: their success released their dependents, and the trigger, whose WHEN wants it
  true, does not count them again. The delete trigger fires while ``has_dependents`` is not
  NULL, so a deleted parent's dependency rows still go.
- A job is deleted: if it had not started, its dependents treat it as cancelled (they must
  not wait for ever); a running job is deleted only by its worker, which deletes a job that
  succeeded instead of recording it (``delete_jobs="successful"``): its dependents treat it as
  succeeded (without its result). Its dependency rows go, so pruning a workflow leaves none
  behind.

The trigger functions carry the migration's ``search_path`` (``SET search_path FROM
CURRENT``, as 0004 did for the others): they name our tables, which a schema of one's own
keeps out of the application's ``search_path``.

Downgrade works on a database that used workflows: blocked jobs are cancelled (not deleted:
their rows and history stay, their error says why), the new objects are dropped, and the
status type is rebuilt with 0009's values (PostgreSQL cannot drop an enum value). Rebuilding it
rewrites the jobs and events tables, and needs the indexes and triggers that compare statuses
dropped and created again: their 0009 definitions are frozen below.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_workflows"
down_revision: str | Sequence[str] | None = "0009_results"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sqla_jobs_jobs"
WORKFLOWS = "sqla_jobs_workflows"
DEPENDENCIES = "sqla_jobs_job_dependencies"

#: statuses.CANCELLED_BY_PARENT, frozen.
CANCELLED_BY_PARENT = "Cancelled because a job it depends on did not succeed"

COMMENTS = {
    "workflow_id": "The workflow the job belongs to (sqla_jobs_workflows); NULL: none "
    "(revision 0010).",
    "parents_left": "How many jobs it depends on have yet to end in a way it needs (succeed, "
    "or end at all on a run-anyway edge); at 0 it goes from blocked to todo; NULL: it depends "
    "on no job (revision 0010).",
    "has_dependents": "Some job depends on it: its end releases or cancels them (a trigger); "
    "false: its success released them already (the worker's finish); NULL: none does "
    "(revision 0010).",
}

# One function for the three moments, behind one trigger per event (each trigger's WHEN is a
# test per updated row; one for updates costs the claim and the finish half of two):
# - a job with dependents ends (an update), or a job is deleted (one that had not started
#   counts as cancelled; a running one, deleted by its worker, as succeeded): blocked
#   dependents are counted down, or cancelled with their blocked descendants. The cancelled
#   ones' own calls find nothing blocked below them (this statement cancelled it all), so
#   calls nest two deep whatever the depth of the workflow;
# - a job with dependents that had not succeeded is back in the queue (retried by hand): what
#   its end cancelled waits again, each job counting the parents it still waits for (those
#   revived with it among them).
FUNCTION = f"""
CREATE FUNCTION sqla_jobs_dependents() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    parent_status text := OLD.status::text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = 'todo' THEN
        WITH RECURSIVE revived (id) AS (
            SELECT dependency.job_id
            FROM sqla_jobs_job_dependencies AS dependency
            JOIN sqla_jobs_jobs AS child ON child.id = dependency.job_id
            WHERE dependency.parent_id = NEW.id
                AND child.status = 'cancelled'
                AND child.started_at IS NULL
                AND starts_with(child.last_error, '{CANCELLED_BY_PARENT}')
            UNION
            SELECT dependency.job_id
            FROM revived
            JOIN sqla_jobs_job_dependencies AS dependency ON dependency.parent_id = revived.id
            JOIN sqla_jobs_jobs AS child ON child.id = dependency.job_id
            WHERE child.status = 'cancelled'
                AND child.started_at IS NULL
                AND starts_with(child.last_error, '{CANCELLED_BY_PARENT}')
        )
        UPDATE sqla_jobs_jobs AS child
        SET status = 'blocked',
            finished_at = NULL,
            last_error = NULL,
            parents_left = (
                SELECT count(*)
                FROM sqla_jobs_job_dependencies AS dependency
                JOIN sqla_jobs_jobs AS parent ON parent.id = dependency.parent_id
                WHERE dependency.job_id = child.id
                    AND (
                        parent.id = NEW.id
                        OR parent.id IN (SELECT id FROM revived)
                        OR NOT (
                            parent.status = 'succeeded'
                            OR (
                                dependency.on_parent_failure = 'run'
                                AND parent.status IN ('failed', 'cancelled', 'aborted')
                            )
                        )
                    )
            )
        FROM revived
        WHERE child.id = revived.id;
        RETURN NULL;
    END IF;

    IF TG_OP = 'UPDATE' THEN
        parent_status := NEW.status::text;
    ELSIF parent_status IN ('doing', 'aborting') THEN
        -- Only a worker deletes a running job: one that succeeded, instead of recording it
        -- (Worker(delete_jobs="successful")).
        parent_status := 'succeeded';
    ELSIF parent_status IN ('todo', 'blocked') THEN
        parent_status := 'cancelled';
    ELSE
        parent_status := NULL;  -- it ended before: its dependents know
    END IF;

    IF OLD.has_dependents AND parent_status IS NOT NULL THEN
        UPDATE sqla_jobs_jobs AS child
        SET parents_left = child.parents_left - 1,
            status = CASE WHEN child.parents_left <= 1 THEN 'todo' ELSE child.status END
        FROM sqla_jobs_job_dependencies AS dependency
        WHERE dependency.parent_id = OLD.id
            AND child.id = dependency.job_id
            AND child.status = 'blocked'
            AND (parent_status = 'succeeded' OR dependency.on_parent_failure = 'run');

        IF parent_status <> 'succeeded' THEN
            WITH RECURSIVE doomed (id) AS (
                SELECT dependency.job_id
                FROM sqla_jobs_job_dependencies AS dependency
                JOIN sqla_jobs_jobs AS child ON child.id = dependency.job_id
                WHERE dependency.parent_id = OLD.id
                    AND dependency.on_parent_failure = 'cancel'
                    AND child.status = 'blocked'
                UNION
                SELECT dependency.job_id
                FROM doomed
                JOIN sqla_jobs_job_dependencies AS dependency ON dependency.parent_id = doomed.id
                JOIN sqla_jobs_jobs AS child ON child.id = dependency.job_id
                WHERE dependency.on_parent_failure = 'cancel' AND child.status = 'blocked'
            )
            UPDATE sqla_jobs_jobs AS child
            SET status = 'cancelled',
                finished_at = clock_timestamp(),
                last_error = format(
                    '{CANCELLED_BY_PARENT}: job %s %s', OLD.id,
                    CASE WHEN TG_OP = 'DELETE' THEN 'was deleted before it ended'
                    ELSE parent_status END
                )
            FROM doomed
            WHERE child.id = doomed.id AND child.status = 'blocked';
        END IF;
    END IF;

    IF TG_OP = 'DELETE' THEN
        DELETE FROM sqla_jobs_job_dependencies WHERE job_id = OLD.id OR parent_id = OLD.id;
    END IF;
    RETURN NULL;
END;
$$
"""

UPDATE_TRIGGER = """
CREATE TRIGGER sqla_jobs_dependents
    AFTER UPDATE OF status ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (
        NEW.has_dependents
        AND OLD.status IS DISTINCT FROM NEW.status
        AND (
            NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
            OR (NEW.status = 'todo' AND OLD.status IN ('failed', 'cancelled', 'aborted'))
        )
    )
    EXECUTE FUNCTION sqla_jobs_dependents()
"""

DELETE_TRIGGER = """
CREATE TRIGGER sqla_jobs_dependents_deleted
    AFTER DELETE ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (OLD.has_dependents IS NOT NULL OR OLD.parents_left IS NOT NULL)
    EXECUTE FUNCTION sqla_jobs_dependents()
"""


def upgrade() -> None:
    op.execute("ALTER TYPE sqla_jobs_job_status ADD VALUE IF NOT EXISTS 'blocked'")
    op.create_table(
        WORKFLOWS,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "name",
            sa.Text(),
            nullable=True,
            comment="A name to find it by, given at defer; NULL: none",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When it was deferred",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sqla_jobs_workflows")),
        comment="Jobs deferred together with dependencies between them (revision 0010); its "
        "jobs name it in sqla_jobs_jobs.workflow_id.",
    )
    op.create_table(
        DEPENDENCIES,
        sa.Column("job_id", sa.BigInteger(), nullable=False, comment="The job that waits"),
        sa.Column("parent_id", sa.BigInteger(), nullable=False, comment="The job it waits for"),
        sa.Column(
            "on_parent_failure",
            sa.Text(),
            nullable=False,
            comment="When the parent ends without succeeding: 'cancel' the job (and what "
            "depends on it), or 'run' it anyway",
        ),
        sa.CheckConstraint(
            "on_parent_failure IN ('cancel', 'run')",
            name=op.f("ck_sqla_jobs_job_dependencies_on_parent_failure"),
        ),
        sa.PrimaryKeyConstraint("job_id", "parent_id", name=op.f("pk_sqla_jobs_job_dependencies")),
        comment="Edges of workflows: job_id starts once parent_id has succeeded (revision 0010).",
    )
    op.create_index("ix_sqla_jobs_job_dependencies_parent_id", DEPENDENCIES, ["parent_id"])
    op.add_column(
        TABLE,
        sa.Column("workflow_id", sa.BigInteger(), nullable=True, comment=COMMENTS["workflow_id"]),
    )
    op.add_column(
        TABLE,
        sa.Column("parents_left", sa.Integer(), nullable=True, comment=COMMENTS["parents_left"]),
    )
    op.add_column(
        TABLE,
        sa.Column(
            "has_dependents", sa.Boolean(), nullable=True, comment=COMMENTS["has_dependents"]
        ),
    )
    op.create_index(
        "ix_sqla_jobs_jobs_workflow_id",
        TABLE,
        ["workflow_id"],
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.execute(FUNCTION)
    op.execute(UPDATE_TRIGGER)
    op.execute(DELETE_TRIGGER)


# -- downgrade: 0009's status type, and what compares statuses, as 0009 left them --------------

STATUSES_0009 = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")

INDEXES_0009 = {
    "ix_sqla_jobs_jobs_fetch": "(priority DESC, id) WHERE status = 'todo'",
    "ix_sqla_jobs_jobs_fetch_queue": "(queue, priority DESC, id) WHERE status = 'todo'",
    "uq_sqla_jobs_jobs_lock_running": (
        "(lock) WHERE status IN ('doing', 'aborting') AND lock IS NOT NULL"
    ),
    "ix_sqla_jobs_jobs_lock_todo": "(lock, id) WHERE status = 'todo' AND lock IS NOT NULL",
    "ix_sqla_jobs_jobs_worker_id_running": "(worker_id) WHERE status IN ('doing', 'aborting')",
    "uq_sqla_jobs_jobs_queueing_lock_todo": (
        "(queueing_lock) WHERE status = 'todo' AND queueing_lock IS NOT NULL"
    ),
    "uq_sqla_jobs_jobs_unique_key": (
        "(unique_key) WHERE unique_key IS NOT NULL AND status = ANY (unique_statuses)"
    ),
}

TRIGGERS_0009 = {
    "sqla_jobs_status_change": """
CREATE TRIGGER sqla_jobs_status_change
    AFTER UPDATE OF status ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        AND (
            NEW.status IN ('todo', 'aborting')
            OR OLD.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
        )
    )
    EXECUTE FUNCTION sqla_jobs_status_change()
""",
    "sqla_jobs_awaited_job_finished": """
CREATE TRIGGER sqla_jobs_awaited_job_finished
    AFTER UPDATE OF status ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (
        NEW.awaited
        AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
        AND OLD.status IS DISTINCT FROM NEW.status
    )
    EXECUTE FUNCTION sqla_jobs_awaited_job_finished()
""",
}

# Compared as text: in the transaction that added it (an upgrade and a downgrade in one),
# PostgreSQL refuses 'blocked' as a value of the type.
CANCEL_BLOCKED = f"""
UPDATE sqla_jobs_jobs
SET status = 'cancelled',
    finished_at = clock_timestamp(),
    last_error = '{CANCELLED_BY_PARENT}: cancelled by the downgrade of revision 0010_workflows'
WHERE status::text = 'blocked'
"""


def downgrade() -> None:
    op.execute("DROP TRIGGER sqla_jobs_dependents_deleted ON sqla_jobs_jobs")
    op.execute("DROP TRIGGER sqla_jobs_dependents ON sqla_jobs_jobs")
    op.execute("DROP FUNCTION sqla_jobs_dependents()")
    op.execute(CANCEL_BLOCKED)
    op.drop_index("ix_sqla_jobs_jobs_workflow_id", table_name=TABLE)
    for column in ("has_dependents", "parents_left", "workflow_id"):
        op.drop_column(TABLE, column)
    op.drop_index("ix_sqla_jobs_job_dependencies_parent_id", table_name=DEPENDENCIES)
    op.drop_table(DEPENDENCIES)
    op.drop_table(WORKFLOWS)

    # The type again without 'blocked': what compares statuses goes while the columns change.
    for trigger in TRIGGERS_0009:
        op.execute(f"DROP TRIGGER {trigger} ON sqla_jobs_jobs")
    for index in INDEXES_0009:
        op.execute(f"DROP INDEX {index}")
    op.execute("ALTER TYPE sqla_jobs_job_status RENAME TO sqla_jobs_job_status_0010")
    labels = ", ".join(f"'{status}'" for status in STATUSES_0009)
    op.execute(f"CREATE TYPE sqla_jobs_job_status AS ENUM ({labels})")
    op.execute("ALTER TABLE sqla_jobs_jobs ALTER COLUMN status DROP DEFAULT")
    op.execute(
        "ALTER TABLE sqla_jobs_jobs "
        "ALTER COLUMN status TYPE sqla_jobs_job_status USING status::text::sqla_jobs_job_status, "
        "ALTER COLUMN unique_statuses TYPE sqla_jobs_job_status[] "
        "USING array_remove(unique_statuses::text[], 'blocked')::sqla_jobs_job_status[], "
        "ALTER COLUMN status SET DEFAULT 'todo'"
    )
    op.execute(
        "ALTER TABLE sqla_jobs_job_events "
        "ALTER COLUMN status TYPE sqla_jobs_job_status USING status::text::sqla_jobs_job_status"
    )
    op.execute("DROP TYPE sqla_jobs_job_status_0010")
    for index, definition in INDEXES_0009.items():
        unique = "UNIQUE " if index.startswith("uq_") else ""
        op.execute(f"CREATE {unique}INDEX {index} ON sqla_jobs_jobs {definition}")
    for trigger_ddl in TRIGGERS_0009.values():
        op.execute(trigger_ddl)
