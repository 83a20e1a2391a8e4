"""Keep in the events table only what a job's row cannot tell; no trigger on the hot path.

Revision ID: 0002_history_from_job_rows
Revises: 0001_initial
Create Date: 2026-11-26

A job's row already says when it was created (``created_at``, status todo), when its last run
started (``started_at``) and how and when it ended (``status``, ``finished_at``,
``last_error``). Revision 0001 also wrote each of those as an event row, so every job cost three
event rows, two of them inside the worker's claim and finish statements. From this revision
``sqla_jobs_job_events`` keeps only what the row forgets or never shows: a run that ended in a
retry (its start, and the retry with its error), a request to abort, and the run and end of a
finished job that is retried by hand. ``sqla_jobs.schema.job_history`` puts both together, and
the events written by 0001 fall into it without change (they equal what the row shows, and the
history drops duplicates).

The update trigger becomes a row trigger with a WHEN condition: PostgreSQL tests the condition
for each updated row in C and calls nothing for a claim (todo -> doing) or a finish (doing ->
succeeded/failed/aborted), which are most updates. The insert trigger only sends NOTIFY.

As in 0001, the trigger functions are frozen text.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_history_from_job_rows"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS_COMMENT = (
    "Status changes a job's row no longer shows (runs that ended in a retry, abort requests); "
    "sqla_jobs.schema.job_history adds what the row shows."
)
EVENTS_COMMENT_0001 = "Every status change of every job, written by triggers on sqla_jobs_jobs."

# One NOTIFY per queue that received jobs to do; creation is the row's created_at.
AFTER_INSERT_FUNCTION = """
CREATE OR REPLACE FUNCTION sqla_jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs', queues.queue)
    FROM (SELECT DISTINCT new_jobs.queue FROM new_jobs WHERE new_jobs.status = 'todo') AS queues;

    RETURN NULL;
END;
$$
"""

# Called only for the status changes named in the trigger's WHEN condition: a job back to do
# (retry, requeue, retry by hand), a job asked to abort, a finished job changed again. Times are
# clock_timestamp(), as the library's started_at and finished_at: read after the statement's
# snapshot, they order a job's steps as they happened, across transactions.
STATUS_CHANGE_FUNCTION = """
CREATE FUNCTION sqla_jobs_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- What the old row showed and the new one will not: the run's start, the job's end.
    IF OLD.started_at IS NOT NULL AND OLD.status <> 'todo' AND NEW.status = 'todo' THEN
        INSERT INTO sqla_jobs_job_events (job_id, status, at)
        VALUES (OLD.id, 'doing', OLD.started_at);
    END IF;
    IF OLD.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
        AND OLD.finished_at IS NOT NULL
    THEN
        INSERT INTO sqla_jobs_job_events (job_id, status, at, error)
        VALUES (
            OLD.id,
            OLD.status,
            OLD.finished_at,
            CASE WHEN OLD.status IN ('failed', 'aborted') THEN OLD.last_error END
        );
    END IF;

    IF NEW.status = 'todo' THEN
        -- A retry carries the error of the run that failed.
        INSERT INTO sqla_jobs_job_events (job_id, status, at, error)
        VALUES (
            NEW.id,
            'todo',
            clock_timestamp(),
            CASE WHEN OLD.status IN ('doing', 'aborting') THEN NEW.last_error END
        );
        PERFORM pg_notify('sqla_jobs', NEW.queue);
    ELSIF NEW.status = 'aborting' THEN
        INSERT INTO sqla_jobs_job_events (job_id, status, at)
        VALUES (NEW.id, 'aborting', clock_timestamp());
        PERFORM pg_notify('sqla_jobs_abort', NEW.id::text);
    END IF;

    RETURN NULL;
END;
$$
"""

STATUS_CHANGE_TRIGGER = """
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
"""

# Downgrade: 0001's functions.
AFTER_INSERT_FUNCTION_0001 = """
CREATE OR REPLACE FUNCTION sqla_jobs_after_insert() RETURNS trigger
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

AFTER_UPDATE_FUNCTION_0001 = """
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

AFTER_UPDATE_TRIGGER_0001 = """
CREATE TRIGGER sqla_jobs_after_update
    AFTER UPDATE ON sqla_jobs_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION sqla_jobs_after_update()
"""

# 0001 reads a history in event id order, and keeps every step as an event: rewrite the events
# as the whole history, what the rows show included, in time order.
REWRITE_EVENTS = """
WITH history AS (
    SELECT job_id, status, at, error FROM sqla_jobs_job_events
    UNION
    SELECT id, 'todo', created_at, NULL FROM sqla_jobs_jobs
    UNION
    SELECT id, 'doing', started_at, NULL
    FROM sqla_jobs_jobs
    WHERE started_at IS NOT NULL AND status <> 'todo'
    UNION
    SELECT id, status, finished_at, CASE WHEN status IN ('failed', 'aborted') THEN last_error END
    FROM sqla_jobs_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled', 'aborted') AND finished_at IS NOT NULL
), emptied AS (
    DELETE FROM sqla_jobs_job_events
)
INSERT INTO sqla_jobs_job_events (job_id, status, at, error)
SELECT job_id, status, at, error
FROM history
ORDER BY at, CASE status WHEN 'todo' THEN 0 WHEN 'doing' THEN 1 WHEN 'aborting' THEN 2 ELSE 3 END,
    job_id
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER sqla_jobs_after_update ON sqla_jobs_jobs")
    op.execute("DROP FUNCTION sqla_jobs_after_update()")
    op.execute(AFTER_INSERT_FUNCTION)
    op.execute(STATUS_CHANGE_FUNCTION)
    op.execute(STATUS_CHANGE_TRIGGER)
    op.create_table_comment(
        "sqla_jobs_job_events", EVENTS_COMMENT, existing_comment=EVENTS_COMMENT_0001
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER sqla_jobs_status_change ON sqla_jobs_jobs")
    op.execute("DROP FUNCTION sqla_jobs_status_change()")
    op.execute(REWRITE_EVENTS)
    op.execute(AFTER_INSERT_FUNCTION_0001)
    op.execute(AFTER_UPDATE_FUNCTION_0001)
    op.execute(AFTER_UPDATE_TRIGGER_0001)
    op.create_table_comment(
        "sqla_jobs_job_events", EVENTS_COMMENT_0001, existing_comment=EVENTS_COMMENT
    )
