"""A job carries the trace context of its defer, for OpenTelemetry.

Revision ID: 0005_trace_context
Revises: 0004_trigger_search_path
Create Date: 2026-11-30

``sqla_jobs_jobs.trace_context``: the W3C trace context (traceparent, tracestate, as JSON) of
the span that deferred the job, written only when the application has configured an
OpenTelemetry SDK; the worker's span for the job links to it. A nullable column without a
default: adding it rewrites nothing, whatever the table's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_trace_context"
down_revision: str | Sequence[str] | None = "0004_trigger_search_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = (
    "The W3C trace context of the defer (JSON: traceparent, tracestate), for the job's "
    "process span to link to; NULL without tracing (revision 0005)."
)


def upgrade() -> None:
    op.add_column(
        "sqla_jobs_jobs", sa.Column("trace_context", sa.Text(), nullable=True, comment=COMMENT)
    )


def downgrade() -> None:
    op.drop_column("sqla_jobs_jobs", "trace_context")
