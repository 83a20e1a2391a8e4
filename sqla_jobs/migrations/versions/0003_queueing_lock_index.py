"""Index only the waiting jobs that have a queueing lock.

(Revision ids stay within 32 characters: Alembic's version table column is a varchar(32).)

Revision ID: 0003_queueing_lock_index
Revises: 0002_history_from_job_rows
Create Date: 2026-11-26

The unique index that allows one waiting job per queueing lock also held an entry for every
waiting job without one (NULL, which a unique index never compares). Most jobs have no
queueing lock: each of their inserts paid for an index entry that could never clash (12% of a
10,000-job batch defer). Same name, same rule; rebuilt in the migration's transaction, which
holds writes to the jobs table while the (small) index is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_queueing_lock_index"
down_revision: str | Sequence[str] | None = "0002_history_from_job_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_sqla_jobs_jobs_queueing_lock_todo"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="sqla_jobs_jobs")
    op.create_index(
        INDEX,
        "sqla_jobs_jobs",
        ["queueing_lock"],
        unique=True,
        postgresql_where=sa.text("status = 'todo' AND queueing_lock IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="sqla_jobs_jobs")
    op.create_index(
        INDEX,
        "sqla_jobs_jobs",
        ["queueing_lock"],
        unique=True,
        postgresql_where=sa.text("status = 'todo'"),
    )
