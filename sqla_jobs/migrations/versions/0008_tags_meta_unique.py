"""Tags and metadata on jobs, and unique jobs.

Revision ID: 0008_tags_meta_unique
Revises: 0007_controls
Create Date: 2026-11-30

Four nullable columns without defaults (adding them rewrites nothing, whatever the table's
size), and two partial indexes that leave out every job that does not use them, so that
claiming and finishing such a job (a new row version each) adds no index entry:

- ``tags`` (``text[]``), found by ``tags @> ARRAY[...]`` through a GIN index of the jobs that
  have tags;
- ``meta`` (``jsonb``), a JSON object the deferrer attaches;
- ``unique_key`` and ``unique_statuses``: a unique index of the keys, among the statuses each
  job chose, refuses a second job with the same key whatever the timing of its deferrers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_tags_meta_unique"
down_revision: str | Sequence[str] | None = "0007_controls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sqla_jobs_jobs"
TAGS_INDEX = "ix_sqla_jobs_jobs_tags"
UNIQUE_KEY_INDEX = "uq_sqla_jobs_jobs_unique_key"

COMMENTS = {
    "tags": "Short labels to find the job by (e.g. tenant:7); NULL: none (revision 0008).",
    "meta": "A JSON object the deferrer attaches, for the task and for people; NULL: none "
    "(revision 0008).",
    "unique_key": "A unique job's key (a hash of its task and arguments or given key, and its "
    "period); NULL: not unique (revision 0008).",
    "unique_statuses": "The statuses among which no other job may hold unique_key (revision 0008).",
}


def upgrade() -> None:
    # The status enum as it exists, without creating it again.
    status = postgresql.ENUM(name="sqla_jobs_job_status", create_type=False)
    op.add_column(
        TABLE,
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=True, comment=COMMENTS["tags"]),
    )
    op.add_column(
        TABLE, sa.Column("meta", postgresql.JSONB(), nullable=True, comment=COMMENTS["meta"])
    )
    op.add_column(
        TABLE, sa.Column("unique_key", sa.Text(), nullable=True, comment=COMMENTS["unique_key"])
    )
    op.add_column(
        TABLE,
        sa.Column(
            "unique_statuses",
            postgresql.ARRAY(status),
            nullable=True,
            comment=COMMENTS["unique_statuses"],
        ),
    )
    op.create_index(
        TAGS_INDEX,
        TABLE,
        ["tags"],
        postgresql_using="gin",
        postgresql_where=sa.text("tags IS NOT NULL"),
    )
    op.create_index(
        UNIQUE_KEY_INDEX,
        TABLE,
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL AND status = ANY (unique_statuses)"),
    )


def downgrade() -> None:
    op.drop_index(UNIQUE_KEY_INDEX, table_name=TABLE)
    op.drop_index(TAGS_INDEX, table_name=TABLE)
    for column in ("unique_statuses", "unique_key", "meta", "tags"):
        op.drop_column(TABLE, column)
