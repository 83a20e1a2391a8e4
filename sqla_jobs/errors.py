"""The errors sqla_jobs raises: one base class, each message naming what happened and the fix."""

from __future__ import annotations


class JobsError(Exception):
    """Base class of every error sqla_jobs raises on purpose."""


class ConnectorError(JobsError):
    """The database could not be reached or refused a statement.

    ``constraint_name`` and ``sqlstate`` carry the server's diagnostics when there are any.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint_name = constraint_name


class ConnectionFailed(ConnectorError):
    """PostgreSQL could not be reached: a wrong DSN, a down server, bad credentials."""


class SchemaNotFound(ConnectorError):
    """The job tables do not exist in the database yet."""


class ConnectorNotOpen(JobsError):
    """A connector was used before ``app.open()`` / ``app.open_async()``."""


class SyncConnectorCannotRunWorker(JobsError):
    """A defer-only connector was asked to run a worker."""


class WorkerFailed(JobsError):
    """A part of the worker (its heartbeat, its completer, its listener...) failed with an
    unexpected error: the worker stopped rather than run on half-dead. The cause is chained."""


class AlreadyEnqueued(JobsError):
    """A job with the same queueing lock is already waiting."""

    def __init__(self, message: str, *, queueing_lock: str | None = None) -> None:
        super().__init__(message)
        self.queueing_lock = queueing_lock


class TaskNotFound(JobsError):
    """No task of that name is registered on the app."""


class InvalidJobArguments(JobsError, TypeError):
    """Job arguments that cannot be stored as JSON, or that would not read back as written,
    or that are too big; nothing is written."""


class InvalidJobOptions(JobsError, ValueError):
    """A job option (task or queue name, lock, queueing lock, priority, schedule) of the wrong
    type, too long, or with characters PostgreSQL cannot store; nothing is written."""


class JobNotFound(JobsError):
    """No job has that id."""
