"""The job tables: SQLAlchemy Core tables on one `MetaData`, the single source of the schema.

Alembic migrations (``sqla_jobs/migrations``) create and evolve exactly these tables; a test
compares the migrated database with this module and must find no difference.

The triggers that send NOTIFY and write ``sqla_jobs_job_events`` (what a job's row no longer
shows of its history) are not Core objects: their DDL is frozen in the migrations.
`job_history` is the whole history of every job, rows and events together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    UniqueConstraint,
    case,
    cast,
    false,
    func,
    literal,
    null,
    select,
    text,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from .statuses import (
    CANCELLED_BY_PARENT,
    CANCELLED_BY_TASK,
    FINISHED_STATUSES,
    NOTIFY_CHANNEL,
    QUEUEING_LOCK_INDEX,
    RUNNING_STATUSES,
    TAGS_INDEX,
    UNIQUE_KEY_INDEX,
    JobStatus,
)

__all__ = [
    "FINISHED_STATUSES",
    "NOTIFY_CHANNEL",
    "VERSION_TABLE",
    "JobStatus",
    "controls",
    "history_step",
    "job_dependencies",
    "job_events",
    "job_history",
    "job_status",
    "jobs",
    "metadata",
    "periodic_defers",
    "workers",
    "workflows",
]

#: Alembic's version table for our migrations, kept apart from a host application's own.
VERSION_TABLE = "sqla_jobs_alembic_version"

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
    Column(
        "trace_context",
        Text,
        nullable=True,
        comment="The W3C trace context of the defer (JSON: traceparent, tracestate), for the "
        "job's process span to link to; NULL without tracing (revision 0005).",
    ),
    Column(
        "tags",
        ARRAY(Text),
        nullable=True,
        comment="Short labels to find the job by (e.g. tenant:7); NULL: none (revision 0008).",
    ),
    Column(
        "meta",
        JSONB,
        nullable=True,
        comment="A JSON object the deferrer attaches, for the task and for people; NULL: none "
        "(revision 0008).",
    ),
    Column(
        "unique_key",
        Text,
        nullable=True,
        comment="A unique job's key (a hash of its task and arguments or given key, and its "
        "period); NULL: not unique (revision 0008).",
    ),
    Column(
        "unique_statuses",
        ARRAY(job_status),
        nullable=True,
        comment="The statuses among which no other job may hold unique_key (revision 0008).",
    ),
    Column(
        "result",
        JSONB,
        nullable=True,
        comment="What the task returned, as JSON, when the job succeeded; NULL: nothing "
        "returned (None), or not stored (store_result=False) (revision 0009).",
    ),
    Column(
        "awaited",
        Boolean,
        nullable=True,
        comment="Someone waits for the job to finish (wait_for): its end is notified on "
        "sqla_jobs_finished; NULL: nobody waits (revision 0009).",
    ),
    # No foreign key on purpose, as worker_id: a workflow row is only a name and a time.
    Column(
        "workflow_id",
        BigInteger,
        nullable=True,
        comment="The workflow the job belongs to (sqla_jobs_workflows); NULL: none "
        "(revision 0010).",
    ),
    Column(
        "parents_left",
        Integer,
        nullable=True,
        comment="How many jobs it depends on have yet to end in a way it needs (succeed, or "
        "end at all on a run-anyway edge); at 0 it goes from blocked to todo; NULL: it "
        "depends on no job (revision 0010).",
    ),
    Column(
        "has_dependents",
        Boolean,
        nullable=True,
        comment="Some job depends on it: its end releases or cancels them (a trigger); false: "
        "its success released them already (the worker's finish); NULL: none does "
        "(revision 0010).",
    ),
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
    postgresql_where=jobs.c.status.in_(RUNNING_STATUSES) & jobs.c.lock.isnot(None),
)
# Lets the claim query find the oldest waiting job of a lock quickly.
Index(
    "ix_sqla_jobs_jobs_lock_todo",
    jobs.c.lock,
    jobs.c.id,
    postgresql_where=(jobs.c.status == JobStatus.TODO) & jobs.c.lock.isnot(None),
)
# At most one waiting job per queueing lock; jobs without one are not indexed (revision 0003).
Index(
    QUEUEING_LOCK_INDEX,
    jobs.c.queueing_lock,
    unique=True,
    postgresql_where=(jobs.c.status == JobStatus.TODO) & jobs.c.queueing_lock.isnot(None),
)
# Jobs by finish time, for the dashboard's last hour: BRIN, a summary per block range (finished
# rows are written in finish order), so that a finish adds no index entry (revision 0006).
Index(
    "ix_sqla_jobs_jobs_finished_at",
    jobs.c.finished_at,
    postgresql_using="brin",
    postgresql_with={"autosummarize": "on"},
)
# Jobs by tag (``tags @> ARRAY[...]``): jobs without tags are not indexed, so that claiming and
# finishing them (new row versions) adds no entry (GIN would index a NULL; revision 0008).
Index(
    TAGS_INDEX,
    jobs.c.tags,
    postgresql_using="gin",
    postgresql_where=jobs.c.tags.isnot(None),
)
# At most one job per unique key among the statuses that job chose: the database refuses a
# second whatever the timing of the deferrers. Jobs without a key are not indexed.
Index(
    UNIQUE_KEY_INDEX,
    jobs.c.unique_key,
    unique=True,
    postgresql_where=jobs.c.unique_key.isnot(None)
    & (jobs.c.status == func.any(jobs.c.unique_statuses)),
)
# Running jobs by worker: finds the jobs of a worker that stopped or died.
Index(
    "ix_sqla_jobs_jobs_worker_id_running",
    jobs.c.worker_id,
    postgresql_where=jobs.c.status.in_(RUNNING_STATUSES),
)

# The jobs of a workflow, for get_workflow and cancel_workflow; jobs outside workflows are not
# indexed (revision 0010).
Index(
    "ix_sqla_jobs_jobs_workflow_id",
    jobs.c.workflow_id,
    postgresql_where=jobs.c.workflow_id.isnot(None),
)

workflows = Table(
    "sqla_jobs_workflows",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=True, comment="A name to find it by, given at defer; NULL: none"),
    Column(
        "created_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("now()"),
        comment="When it was deferred",
    ),
    comment="Jobs deferred together with dependencies between them (revision 0010); its jobs "
    "name it in sqla_jobs_jobs.workflow_id.",
)

job_dependencies = Table(
    "sqla_jobs_job_dependencies",
    metadata,
    # No foreign keys on purpose: a key to the jobs table would add a row check to every
    # finish and delete of a parent, and a delete that cascades would race the triggers that
    # release dependents; the delete trigger of revision 0010 removes a job's rows instead.
    Column("job_id", BigInteger, primary_key=True, comment="The job that waits"),
    Column("parent_id", BigInteger, primary_key=True, comment="The job it waits for"),
    Column(
        "on_parent_failure",
        Text,
        nullable=False,
        comment="When the parent ends without succeeding: 'cancel' the job (and what depends "
        "on it), or 'run' it anyway",
    ),
    CheckConstraint("on_parent_failure IN ('cancel', 'run')", name="on_parent_failure"),
    comment="Edges of workflows: job_id starts once parent_id has succeeded (revision 0010).",
)
# The dependents of a job that ends: what the triggers of revision 0010 look up.
Index("ix_sqla_jobs_job_dependencies_parent_id", job_dependencies.c.parent_id)

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
    comment=(
        "Status changes a job's row no longer shows (runs that ended in a retry, abort "
        "requests); sqla_jobs.schema.job_history adds what the row shows."
    ),
)
Index("ix_sqla_jobs_job_events_job_id", job_events.c.job_id, job_events.c.id)

_FINISHED = [status.value for status in JobStatus if status.is_finished]


def _shown_by_rows() -> list[Select[Any]]:
    """The steps a job's row shows: created, the last run's start, the end."""
    return [
        select(
            jobs.c.id.label("job_id"),
            # A job of a workflow that waits for others is created blocked (revision 0010).
            case(
                (
                    jobs.c.parents_left.isnot(None),
                    cast(literal(JobStatus.BLOCKED.value), job_status),
                ),
                else_=cast(literal(JobStatus.TODO.value), job_status),
            ).label("status"),
            jobs.c.created_at.label("at"),
            null().label("error"),
        ),
        select(
            jobs.c.id, cast(literal(JobStatus.DOING.value), job_status), jobs.c.started_at, null()
        ).where(jobs.c.started_at.isnot(None), jobs.c.status != JobStatus.TODO),
        select(
            jobs.c.id,
            jobs.c.status,
            jobs.c.finished_at,
            case(
                (jobs.c.status.in_([JobStatus.FAILED, JobStatus.ABORTED]), jobs.c.last_error),
                (
                    (jobs.c.status == JobStatus.CANCELLED)
                    & (
                        func.starts_with(jobs.c.last_error, CANCELLED_BY_TASK)
                        | func.starts_with(jobs.c.last_error, CANCELLED_BY_PARENT)
                    ),
                    jobs.c.last_error,
                ),
                else_=null(),
            ),
        ).where(jobs.c.status.in_(_FINISHED), jobs.c.finished_at.isnot(None)),
    ]


#: Every status change of every job (job_id, status, at, error): what the job rows show (its
#: creation, the last run's start, its end) and the events the rows no longer show. UNION, not
#: UNION ALL: events written before revision 0002 repeat what the rows show. Select from it like
#: a table: ``select(job_history).where(job_history.c.job_id == 42)``; order by ``at`` (and
#: `history_step` for changes within one transaction).
job_history = union(
    select(job_events.c.job_id, job_events.c.status, job_events.c.at, job_events.c.error),
    *_shown_by_rows(),
).subquery("sqla_jobs_job_history")

#: Orders changes of the same instant (one transaction) in the order a job lives them.
history_step = case(
    (job_history.c.status == JobStatus.BLOCKED, -1),
    (job_history.c.status == JobStatus.TODO, 0),
    (job_history.c.status == JobStatus.DOING, 1),
    (job_history.c.status == JobStatus.ABORTING, 2),
    else_=3,
)

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

controls = Table(
    "sqla_jobs_controls",
    metadata,
    Column("scope", Text, primary_key=True, comment="'queue' or 'task'"),
    Column("name", Text, primary_key=True, comment="the queue's or the task's name"),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column(
        "concurrency_limit",
        Integer,
        nullable=True,
        comment="at most this many jobs running at once, across all workers; NULL: no limit",
    ),
    Column(
        "rate_limit",
        Integer,
        nullable=True,
        comment="at most this many jobs started per rate_period, across all workers",
    ),
    Column("rate_period", Float, nullable=True, comment="seconds"),
    Column(
        "tokens",
        Float,
        nullable=True,
        comment="the rate limit's bucket: starts left at refilled_at (the claim spends them)",
    ),
    Column("refilled_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("scope IN ('queue', 'task')", name="scope"),
    CheckConstraint("concurrency_limit > 0", name="concurrency_limit"),
    CheckConstraint(
        "(rate_limit IS NULL AND rate_period IS NULL) OR (rate_limit > 0 AND rate_period > 0)",
        name="rate_limit",
    ),
    comment=(
        "Execution controls of queues and tasks, enforced by the claim across all workers: "
        "paused, concurrency and rate limits (revision 0007)."
    ),
)
