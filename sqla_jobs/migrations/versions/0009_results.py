"""Job results, and a wake-up for those who wait for a job to finish.

Revision ID: 0009_results
Revises: 0008_tags_meta_unique
Create Date: 2026-12-01

Two nullable columns without defaults (adding them rewrites nothing, whatever the table's
size):

- ``result`` (``jsonb``): what the task returned, written by the worker's finish of a job
  that succeeded; NULL when it returned None or its task does not store results;
- ``awaited`` (``boolean``): set by ``wait_for`` on the job it waits for.

Two row triggers send ``NOTIFY sqla_jobs_finished, '<job id>'`` when a job someone waits for
finishes (or is deleted). Their WHEN condition is tested by PostgreSQL for each updated row,
in C, and calls nothing for a job nobody waits for (``awaited`` is NULL): a finish that
nobody waits for costs one test of a NULL column. Triggers, rather than a NOTIFY in each
finish statement, wake the waiter whatever ends the job: the worker's finish, a cancel, the
recovery of a stalled worker's jobs, a delete.

As in 0001, the trigger function is frozen text.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_results"
down_revision: str | Sequence[str] | None = "0008_tags_meta_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sqla_jobs_jobs"

COMMENTS = {
    "result": "What the task returned, as JSON, when the job succeeded; NULL: nothing "
    "returned (None), or not stored (store_result=False) (revision 0009).",
    "awaited": "Someone waits for the job to finish (wait_for): its end is notified on "
    "sqla_jobs_finished; NULL: nobody waits (revision 0009).",
}

# OLD: the row as it was, in an update as in a delete (the id does not change).
FUNCTION = """
CREATE FUNCTION sqla_jobs_awaited_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs_finished', OLD.id::text);
    RETURN NULL;
END;
$$
"""

UPDATE_TRIGGER = """
CREATE TRIGGER sqla_jobs_awaited_job_finished
    AFTER UPDATE OF status ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (
        NEW.awaited
        AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
        AND OLD.status IS DISTINCT FROM NEW.status
    )
    EXECUTE FUNCTION sqla_jobs_awaited_job_finished()
"""

DELETE_TRIGGER = """
CREATE TRIGGER sqla_jobs_awaited_job_deleted
    AFTER DELETE ON sqla_jobs_jobs
    FOR EACH ROW
    WHEN (OLD.awaited)
    EXECUTE FUNCTION sqla_jobs_awaited_job_finished()
"""


def upgrade() -> None:
    op.add_column(
        TABLE, sa.Column("result", postgresql.JSONB(), nullable=True, comment=COMMENTS["result"])
    )
    op.add_column(
        TABLE, sa.Column("awaited", sa.Boolean(), nullable=True, comment=COMMENTS["awaited"])
    )
    op.execute(FUNCTION)
    op.execute(UPDATE_TRIGGER)
    op.execute(DELETE_TRIGGER)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER sqla_jobs_awaited_job_deleted ON {TABLE}")
    op.execute(f"DROP TRIGGER sqla_jobs_awaited_job_finished ON {TABLE}")
    op.execute("DROP FUNCTION sqla_jobs_awaited_job_finished()")
    for column in ("awaited", "result"):
        op.drop_column(TABLE, column)
