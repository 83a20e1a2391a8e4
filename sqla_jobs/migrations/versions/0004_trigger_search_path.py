"""Our trigger functions find the job tables where they were created, whoever fires them.

Revision ID: 0004_trigger_search_path
Revises: 0003_queueing_lock_index
Create Date: 2026-11-30

A trigger function's body names the tables without a schema; PostgreSQL resolved those names
with the ``search_path`` of the connection that fired the trigger. Tables in a schema of their
own (``App(schema=...)``: the statements name the schema, the application's ``search_path``
need not) made every insert fail there. Each function now carries the ``search_path`` the
migration ran with, which is where it created the tables (the app's schema first, when one
is named). It also keeps a connection's ``search_path`` from pointing the triggers at
look-alike tables of another schema.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_trigger_search_path"
down_revision: str | Sequence[str] | None = "0003_queueing_lock_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = ("sqla_jobs_after_insert", "sqla_jobs_status_change", "sqla_jobs_after_delete")


def upgrade() -> None:
    for name in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {name}() SET search_path FROM CURRENT")


def downgrade() -> None:
    for name in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {name}() RESET search_path")
