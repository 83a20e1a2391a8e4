"""The job tables: SQLAlchemy Core tables on one `MetaData`, the single source of the schema.

Alembic migrations (``sqla_jobs/migrations``) create and evolve exactly these tables; a test
compares the migrated database with this module and must find no difference.

The triggers that keep the history (``sqla_jobs_job_events``) and send NOTIFY are not Core
objects: their DDL is frozen in the migrations.
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Enum,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

#: Channel the insert trigger notifies; the payload is the job's queue name.
NOTIFY_CHANNEL = "sqla_jobs"

#: Alembic's version table for our migrations, kept apart from a host application's own.
VERSION_TABLE = "sqla_jobs_alembic_version"


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    TODO = "todo"
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABORTING = "aborting"
    ABORTED = "aborted"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED}
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

job_status = Enum(
    JobStatus,
    name="sqla_jobs_job_status",
    values_callable=lambda statuses: [s.value for s in statuses],
    metadata=metadata,
)

workers = Table(
    "sqla_jobs_workers",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", ARRAY(Text), nullable=True, comment="NULL: every queue"),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    comment="Running worker processes and their heartbeats.",
)

jobs = Table(
    "sqla_jobs_jobs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("queue", Text, nullable=False, server_default=text("'default'")),
    Column("task_name", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("lock", Text, nullable=True),
    Column("queueing_lock", Text, nullable=True),
    Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", job_status, nullable=False, server_default=text("'todo'")),
    Column("scheduled_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # No foreign key on purpose: a row-level check per claimed job would cost more than the
    # rest of the claim. A worker_id whose worker row is gone means "that worker died".
    Column("worker_id", BigInteger, nullable=True),
    comment="One row per job; the worker claims rows in status 'todo'.",
)

# The claim query walks this index in (priority DESC, id) order, so it stays an index scan
# however many jobs wait.
Index(
    "ix_sqla_jobs_jobs_fetch",
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=jobs.c.status == JobStatus.TODO,
)
Index(
    "ix_sqla_jobs_jobs_fetch_queue",
    jobs.c.queue,
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=jobs.c.status == JobStatus.TODO,
)
# At most one running job per lock: a safety net under the claim query's own lock rule.
Index(
    "uq_sqla_jobs_jobs_lock_running",
    jobs.c.lock,
    unique=True,
    postgresql_where=jobs.c.status.in_([JobStatus.DOING, JobStatus.ABORTING])
    & jobs.c.lock.isnot(None),
)
# Lets the claim query find the oldest waiting job of a lock quickly.
Index(
    "ix_sqla_jobs_jobs_lock_todo",
    jobs.c.lock,
    jobs.c.id,
    postgresql_where=(jobs.c.status == JobStatus.TODO) & jobs.c.lock.isnot(None),
)
# At most one waiting job per queueing lock.
Index(
    "uq_sqla_jobs_jobs_queueing_lock_todo",
    jobs.c.queueing_lock,
    unique=True,
    postgresql_where=jobs.c.status == JobStatus.TODO,
)
# Running jobs by worker: finds the jobs of a worker that stopped or died.
Index(
    "ix_sqla_jobs_jobs_worker_id_running",
    jobs.c.worker_id,
    postgresql_where=jobs.c.status.in_([JobStatus.DOING, JobStatus.ABORTING]),
)

job_events = Table(
    "sqla_jobs_job_events",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    # No foreign key on purpose: events are an append-only log written by a statement-level
    # trigger; a per-row foreign-key check would cost more than the event itself.
    Column("job_id", BigInteger, nullable=False),
    Column("status", job_status, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("error", Text, nullable=True),
    comment="Every status change of every job, written by triggers on sqla_jobs_jobs.",
)
Index("ix_sqla_jobs_job_events_job_id", job_events.c.job_id, job_events.c.id)

periodic_defers = Table(
    "sqla_jobs_periodic_defers",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("task_name", Text, nullable=False),
    Column("periodic_id", Text, nullable=False, server_default=text("''")),
    Column("defer_timestamp", BigInteger, nullable=False),
    Column("job_id", BigInteger, nullable=True),
    UniqueConstraint(
        "task_name", "periodic_id", "defer_timestamp", name="uq_sqla_jobs_periodic_defers_tick"
    ),
    comment="One row per periodic tick deferred: the unique key makes each tick run once.",
)
