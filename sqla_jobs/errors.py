"""The errors sqla_jobs raises: one base class, each message naming what happened and the fix."""

from __future__ import annotations

from typing import Any


class JobsError(Exception):
    """Base class of every error sqla_jobs raises on purpose."""


class ConnectorError(JobsError):
    """The database could not be reached or refused a statement.

    The server's diagnostics come with it, each None when the server sent none (a connection
    refused has no SQLSTATE; only a constraint violation names a constraint): ``sqlstate``
    (e.g. ``"23505"``, a unique violation), ``detail`` (the server's DETAIL line, e.g. which
    key clashed), ``schema_name``, ``table_name``, ``column_name`` and ``constraint_name``.
    The driver's own exception is the ``__cause__``. Decide on the codes and names, never on
    the text: the server writes its messages and ``detail`` in the language of its
    ``lc_messages`` setting.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        schema_name: str | None = None,
        table_name: str | None = None,
        column_name: str | None = None,
        constraint_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.schema_name = schema_name
        self.table_name = table_name
        self.column_name = column_name
        self.constraint_name = constraint_name


class ConnectionFailed(ConnectorError):
    """PostgreSQL could not be reached (a wrong DSN, a down server, bad credentials), or the
    connection was lost under a statement."""


class SchemaNotFound(ConnectorError):
    """The job tables do not exist in the database yet (or not in the connection's
    ``search_path``): ``sqla-jobs schema upgrade`` creates them."""


class StatementCancelled(ConnectorError):
    """PostgreSQL cancelled a statement (SQLSTATE ``57014``): it ran past a
    ``statement_timeout`` (the dashboard sets one on each of its statements), or someone
    cancelled it (``pg_cancel_backend``). The connection is fine; nothing the statement did
    remains."""


class ConnectorNotOpen(JobsError):
    """A connector was used before ``app.open()`` / ``app.open_async()``."""


class SyncConnectorCannotRunWorker(JobsError):
    """A defer-only connector was asked to run a worker."""


class WorkerFailed(JobsError):
    """A part of the worker (its heartbeat, its completer, its listener...) failed with an
    unexpected error: the worker stopped rather than run on half-dead. The cause is chained."""


class MetricsUnavailable(JobsError):
    """A worker asked to serve metrics cannot: ``prometheus_client`` is missing (install
    ``sqla_jobs[metrics]``), or the port is taken."""


class AlreadyEnqueued(JobsError):
    """A job with the same queueing lock is already waiting, or a unique job's key is held by
    another job (``unique_key``; ``job_id``: that job, when known)."""

    def __init__(
        self,
        message: str,
        *,
        queueing_lock: str | None = None,
        unique_key: str | None = None,
        job_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.queueing_lock = queueing_lock
        self.unique_key = unique_key
        self.job_id = job_id


class TaskNotFound(JobsError):
    """No task of that name is registered on the app."""


class InvalidJobArguments(JobsError, TypeError):
    """Job arguments that cannot be stored as JSON, or that would not read back as written,
    or that are too big; nothing is written."""


class InvalidJobOptions(JobsError, ValueError):
    """A job option (task or queue name, lock, queueing lock, priority, schedule) of the wrong
    type, too long, or with characters PostgreSQL cannot store; nothing is written."""


class InvalidJobResult(JobsError, TypeError):
    """A task returned a value that cannot be stored as its job's result: not JSON, or too
    big. The job fails with this error (its task's work is done, so it is not retried) and
    the worker goes on."""


class ResultUnavailable(JobsError):
    """A job has no result to give: it has not finished yet, it failed, was cancelled or
    aborted (``job`` holds it, with its error), its task does not store results
    (``store_result=False``), or there is no such job (``job`` is None)."""

    def __init__(self, message: str, *, job_id: int, job: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        #: The job as it was read (a `sqla_jobs.Job`), or None when there is none.
        self.job = job


class WaitTimeout(JobsError, TimeoutError):
    """``wait_for`` gave up: the job did not finish within the timeout. It still exists and
    may finish later; ``job`` is the job as last read."""

    def __init__(self, message: str, *, job_id: int, timeout: float, job: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.timeout = timeout
        self.job = job


class JobNotFound(JobsError):
    """No job has that id."""


class WorkflowNotFound(JobsError):
    """No workflow has that id (it never existed, or its jobs were pruned)."""


class JobTimeout(JobsError, TimeoutError):
    """A job ran past its task's ``timeout``: an async task was cancelled at the deadline, a
    sync task was asked to stop through ``should_abort()`` (its thread cannot be
    interrupted). The job fails with this error, or runs again if its task's retry strategy
    retries it (a `TimeoutError`, for ``retry_exceptions``)."""
