"""Create the job tables and the triggers that keep the history and send NOTIFY.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26

The trigger functions are frozen text, not imported from the package: a migration must create
the same objects whatever version of sqla_jobs runs it. They are statement-level triggers with
transition tables, so a statement that claims or finishes a batch of jobs calls each trigger
once, not once per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sqla_jobs",)
depends_on: str | Sequence[str] | None = None

JOB_STATUS = postgresql.ENUM(
    "todo",
    "doing",
    "succeeded",
    "failed",
    "cancelled",
    "aborting",
    "aborted",
    name="sqla_jobs_job_status",
    # Created and dropped explicitly below: two tables use the type.
    create_type=False,
)

# One event per new job; one NOTIFY per queue that received jobs to do.
AFTER_INSERT_FUNCTION = """
CREATE FUNCTION sqla_jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sqla_jobs_job_events (job_id, status, at)
    SELECT new_jobs.id, new_jobs.status, now()
    FROM new_jobs;

    PERFORM pg_notify('sqla_jobs', queues.queue)
    FROM (SELECT DISTINCT new_jobs.queue FROM new_jobs WHERE new_jobs.status = 'todo') AS queues;

    RETURN NULL;
END;
$$
"""

AFTER_INSERT_TRIGGER = """
CREATE TRIGGER sqla_jobs_after_insert
    AFTER INSERT ON sqla_jobs_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION sqla_jobs_after_insert()
"""

# One event per status change, carrying the error when a running job failed, was retried or
# was aborted; a NOTIFY per queue that got jobs back to do; one on sqla_jobs_abort per job
# asked to abort, so the worker running it hears at once.
AFTER_UPDATE_FUNCTION = """
CREATE FUNCTION sqla_jobs_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sqla_jobs_job_events (job_id, status, at, error)
    SELECT
        new_jobs.id,
        new_jobs.status,
        now(),
        CASE
            WHEN old_jobs.status IN ('doing', 'aborting')
                AND new_jobs.status IN ('failed', 'todo', 'aborted')
            THEN new_jobs.last_error
        END
    FROM new_jobs
    JOIN old_jobs ON old_jobs.id = new_jobs.id
    WHERE new_jobs.status IS DISTINCT FROM old_jobs.status;

    -- Claims and finishes (the hot path) move jobs to doing or succeeded: skip the rest.
    IF NOT EXISTS (SELECT FROM new_jobs WHERE new_jobs.status IN ('todo', 'aborting')) THEN
        RETURN NULL;
    END IF;

    PERFORM pg_notify('sqla_jobs', queues.queue)
    FROM (
        SELECT DISTINCT new_jobs.queue
        FROM new_jobs
        JOIN old_jobs ON old_jobs.id = new_jobs.id
        WHERE new_jobs.status = 'todo' AND old_jobs.status IS DISTINCT FROM 'todo'
    ) AS queues;

    PERFORM pg_notify('sqla_jobs_abort', new_jobs.id::text)
    FROM new_jobs
    JOIN old_jobs ON old_jobs.id = new_jobs.id
    WHERE new_jobs.status = 'aborting' AND old_jobs.status IS DISTINCT FROM 'aborting';

    RETURN NULL;
END;
$$
"""

AFTER_UPDATE_TRIGGER = """
CREATE TRIGGER sqla_jobs_after_update
    AFTER UPDATE ON sqla_jobs_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION sqla_jobs_after_update()
"""

# Events have no foreign key (see schema.py): deleting jobs deletes their history here.
AFTER_DELETE_FUNCTION = """
CREATE FUNCTION sqla_jobs_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sqla_jobs_job_events
    WHERE sqla_jobs_job_events.job_id IN (SELECT old_jobs.id FROM old_jobs);

    RETURN NULL;
END;
$$
"""

AFTER_DELETE_TRIGGER = """
CREATE TRIGGER sqla_jobs_after_delete
    AFTER DELETE ON sqla_jobs_jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION sqla_jobs_after_delete()
"""

TRIGGERS = ("sqla_jobs_after_insert", "sqla_jobs_after_update", "sqla_jobs_after_delete")


def upgrade() -> None:
    op.execute(postgresql.CreateEnumType(JOB_STATUS))

    op.create_table(
        "sqla_jobs_workers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "queues", postgresql.ARRAY(sa.Text()), nullable=True, comment="NULL: every queue"
        ),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_heartbeat",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sqla_jobs_workers"),
        comment="Running worker processes and their heartbeats.",
    )

    op.create_table(
        "sqla_jobs_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("queue", sa.Text(), server_default=sa.text("'default'"), nullable=False),
        sa.Column("task_name", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lock", sa.Text(), nullable=True),
        sa.Column("queueing_lock", sa.Text(), nullable=True),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", JOB_STATUS, server_default=sa.text("'todo'"), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sqla_jobs_jobs"),
        comment="One row per job; the worker claims rows in status 'todo'.",
    )
    op.create_index(
        "ix_sqla_jobs_jobs_fetch",
        "sqla_jobs_jobs",
        [sa.text("priority DESC"), "id"],
        postgresql_where=sa.text("status = 'todo'"),
    )
    op.create_index(
        "ix_sqla_jobs_jobs_fetch_queue",
        "sqla_jobs_jobs",
        ["queue", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text("status = 'todo'"),
    )
    op.create_index(
        "uq_sqla_jobs_jobs_lock_running",
        "sqla_jobs_jobs",
        ["lock"],
        unique=True,
        postgresql_where=sa.text("status IN ('doing', 'aborting') AND lock IS NOT NULL"),
    )
    op.create_index(
        "ix_sqla_jobs_jobs_lock_todo",
        "sqla_jobs_jobs",
        ["lock", "id"],
        postgresql_where=sa.text("status = 'todo' AND lock IS NOT NULL"),
    )
    op.create_index(
        "uq_sqla_jobs_jobs_queueing_lock_todo",
        "sqla_jobs_jobs",
        ["queueing_lock"],
        unique=True,
        postgresql_where=sa.text("status = 'todo'"),
    )
    op.create_index(
        "ix_sqla_jobs_jobs_worker_id_running",
        "sqla_jobs_jobs",
        ["worker_id"],
        postgresql_where=sa.text("status IN ('doing', 'aborting')"),
    )

    op.create_table(
        "sqla_jobs_job_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("status", JOB_STATUS, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sqla_jobs_job_events"),
        comment="Every status change of every job, written by triggers on sqla_jobs_jobs.",
    )
    op.create_index("ix_sqla_jobs_job_events_job_id", "sqla_jobs_job_events", ["job_id", "id"])

    op.create_table(
        "sqla_jobs_periodic_defers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_name", sa.Text(), nullable=False),
        sa.Column("periodic_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("defer_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sqla_jobs_periodic_defers"),
        sa.UniqueConstraint(
            "task_name",
            "periodic_id",
            "defer_timestamp",
            name="uq_sqla_jobs_periodic_defers_tick",
        ),
        comment="One row per periodic tick deferred: the unique key makes each tick run once.",
    )

    op.execute(AFTER_INSERT_FUNCTION)
    op.execute(AFTER_INSERT_TRIGGER)
    op.execute(AFTER_UPDATE_FUNCTION)
    op.execute(AFTER_UPDATE_TRIGGER)
    op.execute(AFTER_DELETE_FUNCTION)
    op.execute(AFTER_DELETE_TRIGGER)


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON sqla_jobs_jobs")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("sqla_jobs_periodic_defers")
    op.drop_table("sqla_jobs_job_events")
    op.drop_table("sqla_jobs_jobs")
    op.drop_table("sqla_jobs_workers")
    op.execute(postgresql.DropEnumType(JOB_STATUS))
