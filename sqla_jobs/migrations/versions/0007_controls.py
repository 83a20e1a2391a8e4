"""Execution controls: paused queues and tasks, concurrency and rate limits.

Revision ID: 0007_controls
Revises: 0006_finished_at_brin
Create Date: 2026-11-30

One row per controlled queue or task (``sqla_jobs_controls``). The claim reads it, and, for a
limited queue or task, locks its row first, so that claims of several workers take turns and
none exceeds a limit. Without a row, the claim is the one it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_controls"
down_revision: str | Sequence[str] | None = "0006_finished_at_brin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sqla_jobs_controls"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("scope", sa.Text(), nullable=False, comment="'queue' or 'task'"),
        sa.Column("name", sa.Text(), nullable=False, comment="the queue's or the task's name"),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "concurrency_limit",
            sa.Integer(),
            nullable=True,
            comment="at most this many jobs running at once, across all workers; NULL: no limit",
        ),
        sa.Column(
            "rate_limit",
            sa.Integer(),
            nullable=True,
            comment="at most this many jobs started per rate_period, across all workers",
        ),
        sa.Column("rate_period", sa.Float(), nullable=True, comment="seconds"),
        sa.Column(
            "tokens",
            sa.Float(),
            nullable=True,
            comment="the rate limit's bucket: starts left at refilled_at (the claim spends them)",
        ),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("scope IN ('queue', 'task')", name=op.f("ck_sqla_jobs_controls_scope")),
        sa.CheckConstraint(
            "concurrency_limit > 0", name=op.f("ck_sqla_jobs_controls_concurrency_limit")
        ),
        sa.CheckConstraint(
            "(rate_limit IS NULL AND rate_period IS NULL) OR (rate_limit > 0 AND rate_period > 0)",
            name=op.f("ck_sqla_jobs_controls_rate_limit"),
        ),
        sa.PrimaryKeyConstraint("scope", "name", name=op.f("pk_sqla_jobs_controls")),
        comment=(
            "Execution controls of queues and tasks, enforced by the claim across all workers: "
            "paused, concurrency and rate limits (revision 0007)."
        ),
    )


def downgrade() -> None:
    op.drop_table(TABLE)
