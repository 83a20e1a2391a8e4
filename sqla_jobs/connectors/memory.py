"""`InMemoryConnector`: the job tables in this process's memory, for an application's tests.

It answers each statement of `sqla_jobs.queries` by name with a small Python function over
dicts (`sqla_jobs.connectors.memory_queries`) that does what the SQL does in PostgreSQL; this
module adds what the database itself does around a statement: one statement at a time, whole or
not at all; the unique indexes (a clash raises the `ConnectorError` that the manager turns into
`AlreadyEnqueued`); the triggers' events on every status change and notifications to listeners
when jobs become runnable or are asked to abort. The queue's logic stays in `JobManager`, as for
every connector; the behaviour suite (tests/integration/test_behaviour.py) runs the same
assertions on PostgreSQL and on this connector.

A statement without an implementation raises `NotImplementedError` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import itertools
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConnectorError
from ..queries import Query
from ..statuses import NOTIFY_CHANNEL
from .base import (
    BaseAsyncConnector,
    BaseConnector,
    ListeningHandler,
    NotificationHandler,
    Params,
    Row,
    not_open,
)
from .memory_queries import (
    ABORTING,
    DOING,
    ENDED_IN_ERROR,
    FINISHED,
    IMPLEMENTATIONS,
    RUNNING,
    TARGET,
    TODO,
    refused,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: The channel of the update trigger's abort notifications (``sqla_jobs.worker.ABORT_CHANNEL``;
#: the worker sits above the connectors, so the name is repeated here and a test compares them).
ABORT_CHANNEL = "sqla_jobs_abort"

#: Partial unique indexes on sqla_jobs_jobs: (name, column, statuses the index covers).
UNIQUE_INDEXES = (
    ("uq_sqla_jobs_jobs_queueing_lock_todo", "queueing_lock", frozenset({TODO})),
    ("uq_sqla_jobs_jobs_lock_running", "lock", RUNNING),
)
TABLES = ("jobs", "job_events", "workers", "periodic_defers")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

Notification = tuple[str, str]


class InMemoryConnector(BaseAsyncConnector):
    """A connector without a database, for an application's unit tests: defers, runs a worker
    (``app.run_worker(wait=False)``) and manages jobs as PostgreSQL would, in memory.

    Read the tables in assertions: `jobs` (id → row, the columns of ``sqla_jobs_jobs``),
    `job_events` (the rows of ``sqla_jobs_job_events``: what job rows no longer show; a job's
    whole history is ``app.job_manager.get_job_history(job_id)``) and `workers`; `reset`
    empties them between tests. Writing to them directly changes the row and nothing else (no
    event, no notification).

    As with the PostgreSQL connectors, async use needs ``await app.open_async()`` first (a
    worker run through ``app.run_worker`` opens it); sync use works at once. There is no
    SQLAlchemy engine: migrations, healthchecks and SQL reports need PostgreSQL.
    """

    def __init__(self) -> None:
        super().__init__()
        self._mutex = threading.RLock()
        self._opened = False
        self._listeners: list[_Listener] = []
        #: sqla_jobs_jobs: job id → row, in id order.
        self.jobs: dict[int, Row] = {}
        #: sqla_jobs_job_events: the status changes job rows no longer show, oldest first.
        self.job_events: list[Row] = []
        #: sqla_jobs_workers: worker id → row.
        self.workers: dict[int, Row] = {}
        #: sqla_jobs_periodic_defers: row id → row.
        self.periodic_defers: dict[int, Row] = {}
        #: Identity sequences: the last id each table handed out.
        self._sequences: dict[str, int] = {}
        self.reset()

    def describe(self) -> str:
        return TARGET

    def reset(self) -> None:
        """Empty every table and restart the ids at 1, as in a new database. Listeners (a
        running worker) stay."""
        with self._mutex:
            self.jobs.clear()
            self.job_events.clear()
            self.workers.clear()
            self.periodic_defers.clear()
            self._sequences = dict.fromkeys(TABLES, 0)

    @property
    def listening(self) -> bool:
        """Whether something (a waiting worker) listens for notifications."""
        with self._mutex:
            return bool(self._listeners)

    # -- connector interface -------------------------------------------------------------------

    def _make_sync_connector(self) -> BaseConnector:
        return _SyncSide(self)

    async def open_async(self) -> None:
        self._opened = True

    async def close_async(self) -> None:
        # The tables stay: like a database, they outlive the connection pool.
        self._opened = False

    async def fetch_all_async(self, query: Query, params: Params | None = None) -> list[Row]:
        if not self._opened:
            raise not_open(self)
        # A statement is a round trip: other tasks get to run meanwhile, as with a database.
        await asyncio.sleep(0)
        return self.run(query, params)

    async def listen(
        self,
        channels: Iterable[str],
        on_notification: NotificationHandler,
        *,
        on_listening: ListeningHandler | None = None,
    ) -> None:
        listener = _Listener(asyncio.get_running_loop(), frozenset(channels), asyncio.Queue())
        with self._mutex:
            self._listeners.append(listener)
        if on_listening is not None:
            on_listening()
        try:
            while True:
                channel, payload = await listener.queue.get()
                result = on_notification(channel, payload)
                if result is not None:
                    await result
        finally:
            with self._mutex:
                self._listeners.remove(listener)

    # -- statements ----------------------------------------------------------------------------

    def run(self, query: Query, params: Params | None = None) -> list[Row]:
        """Run one statement of `sqla_jobs.queries` (sync or async callers alike)."""
        implementation = IMPLEMENTATIONS.get(query.name)
        if implementation is None:
            raise NotImplementedError(
                f"InMemoryConnector has no implementation of the query {query.name!r}. Add "
                "one to sqla_jobs/connectors/memory_queries.py (@_implements("
                f"{query.name!r})) doing what its SQL does, and cover it in "
                "tests/integration/test_behaviour.py."
            )
        params = params or {}
        missing = [name for name in _placeholders(query.sql) if name not in params]
        if missing:
            raise refused(query, f"query parameter missing: {', '.join(missing)}", "42P02")
        with self._mutex:
            statement = Statement(self, query)
            rows = implementation(statement, params)
            notifications = statement.commit()
        self._notify(notifications)
        return rows

    def _next_id(self, table: str) -> int:
        self._sequences[table] += 1
        return self._sequences[table]

    def _notify(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        with self._mutex:
            listeners = list(self._listeners)
        for listener in listeners:
            for channel, payload in notifications:
                if channel in listener.channels:
                    # From any thread (a sync task deferring): the listener's loop takes it.
                    with contextlib.suppress(RuntimeError):  # that loop is closed
                        listener.loop.call_soon_threadsafe(
                            listener.queue.put_nowait, (channel, payload)
                        )


class _SyncSide(BaseConnector):
    """The sync side of an `InMemoryConnector`: the same tables, ready without opening."""

    def __init__(self, owner: InMemoryConnector) -> None:
        self._owner = owner

    def describe(self) -> str:
        return TARGET

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        return self._owner.run(query, params)

    def sqlalchemy_engine(self) -> Engine:
        raise ConnectorError(
            "InMemoryConnector keeps jobs in this process's memory: there is no database, so "
            "no SQLAlchemy engine for schema migrations, healthchecks or SQL reports. Use it "
            "in unit tests; give those commands a PostgreSQL connector (PsycopgConnector, "
            "SQLAlchemyConnector, ...)."
        )


@dataclasses.dataclass(eq=False)
class _Listener:
    loop: asyncio.AbstractEventLoop
    channels: frozenset[str]
    queue: asyncio.Queue[Notification]


# -- one statement -----------------------------------------------------------------------------


class Statement:
    """The changes one statement makes to sqla_jobs_jobs, applied together by `commit` once the
    unique indexes accept them, with what the triggers do: events and notifications.

    ``now`` is one instant for the whole statement, as PostgreSQL's ``now()``.
    """

    def __init__(self, db: InMemoryConnector, query: Query) -> None:
        self.db = db
        self.query = query
        self.now = datetime.datetime.now(datetime.UTC)
        self.inserted: list[Row] = []
        self.updated: dict[int, Row] = {}
        self.deleted: list[int] = []
        #: Writes to the other tables, done once the jobs' changes are accepted.
        self.on_commit: list[Callable[[], None]] = []
        #: Notifications the statement sends itself (pg_notify), after the triggers'.
        self.sent: list[Notification] = []

    def next_id(self, table: str) -> int:
        """The next value of ``table``'s identity sequence (never handed out twice)."""
        return self.db._next_id(table)

    def insert_job(self, job_id: int, values: Row) -> Row:
        row = {
            "id": job_id,
            **values,
            "status": TODO,
            "attempts": 0,
            "created_at": self.now,
            "started_at": None,
            "finished_at": None,
            "last_error": None,
            "worker_id": None,
        }
        self.inserted.append(row)
        return row

    def update_job(self, row: Row, **values: Any) -> Row:
        """Stage new values for a row of the table; a row is updated once per statement."""
        new = {**row, **values}
        self.updated[row["id"]] = new
        return new

    def queueing_lock_taken(self, key: str | None) -> bool:
        """Whether a waiting job, in the table or inserted by this statement, holds ``key``."""
        if key is None:
            return False
        rows = itertools.chain(
            (self.updated.get(job_id, row) for job_id, row in self.db.jobs.items()),
            self.inserted,
        )
        return any(row["queueing_lock"] == key and row["status"] == TODO for row in rows)

    def delete_job(self, row: Row) -> None:
        self.deleted.append(row["id"])

    def commit(self) -> list[Notification]:
        self._check_unique_indexes()
        for write in self.on_commit:
            write()
        db = self.db
        notifications: dict[Notification, None] = {}  # one per channel and payload, in order
        for job_id in self.deleted:
            del db.jobs[job_id]
        if self.deleted:
            # The delete trigger: the history goes with the jobs.
            gone = set(self.deleted)
            db.job_events[:] = [event for event in db.job_events if event["job_id"] not in gone]
        for row in self.inserted:
            db.jobs[row["id"]] = row
            if row["status"] == TODO:
                notifications[(NOTIFY_CHANNEL, row["queue"])] = None
        for job_id, new in self.updated.items():
            old = db.jobs[job_id]
            db.jobs[job_id] = new
            if new["status"] != old["status"]:
                self._status_changed(old, new, notifications)
        for notification in self.sent:
            notifications[notification] = None
        return list(notifications)

    def _status_changed(self, old: Row, new: Row, notifications: dict[Notification, None]) -> None:
        """The status-change trigger (revision 0002): events for what the row will no longer
        show, then the retry or abort request itself."""
        job_id = new["id"]
        if new["status"] == TODO and old["status"] != TODO and old["started_at"] is not None:
            self._event(job_id, DOING, old["started_at"], None)
        if old["status"] in FINISHED and old["finished_at"] is not None:
            error = old["last_error"] if old["status"] in ENDED_IN_ERROR else None
            self._event(job_id, old["status"], old["finished_at"], error)
        if new["status"] == TODO:
            error = new["last_error"] if old["status"] in RUNNING else None
            self._event(job_id, TODO, self.now, error)
            notifications[(NOTIFY_CHANNEL, new["queue"])] = None
        elif new["status"] == ABORTING:
            self._event(job_id, ABORTING, self.now, None)
            notifications[(ABORT_CHANNEL, str(job_id))] = None

    def _event(self, job_id: int, status: str, at: datetime.datetime, error: str | None) -> None:
        self.db.job_events.append(
            {
                "id": self.db._next_id("job_events"),
                "job_id": job_id,
                "status": status,
                "at": at,
                "error": error,
            }
        )

    def _check_unique_indexes(self) -> None:
        """Refuse the statement at the first row that clashes, as PostgreSQL checks a unique
        index row by row; an identity value taken by a refused insert stays used, as there."""
        changed = [*self.inserted, *self.updated.values()]
        for index, column, statuses in UNIQUE_INDEXES:
            wanted = {
                row[column]
                for row in changed
                if row["status"] in statuses and row[column] is not None
            }
            if not wanted:
                continue  # the hot path: claims of unlocked jobs, successes
            untouched = set(self.deleted) | self.updated.keys()
            taken = Counter(
                row[column]
                for job_id, row in self.db.jobs.items()
                if row[column] in wanted and row["status"] in statuses and job_id not in untouched
            )
            for position, row in enumerate(changed):
                key = row[column]
                if key not in wanted or row["status"] not in statuses:
                    continue
                if taken[key]:
                    if position < len(self.inserted):
                        self.db._sequences["jobs"] = row["id"]  # later rows never got theirs
                    raise refused(
                        self.query,
                        f'duplicate key value violates unique constraint "{index}" '
                        f"DETAIL: Key ({column})=({key}) already exists.",
                        "23505",
                        constraint_name=index,
                    )
                taken[key] += 1


@functools.cache
def _placeholders(sql: str) -> tuple[str, ...]:
    """The ``%(name)s`` parameters a statement's SQL names."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(sql)))
