"""sqla_jobs: a PostgreSQL job queue for applications that already live on SQLAlchemy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .app import App
from .blueprints import Blueprint
from .connectors import BaseAsyncConnector, BaseConnector
from .errors import (
    AlreadyEnqueued,
    ConnectionFailed,
    ConnectorError,
    ConnectorNotOpen,
    InvalidJobArguments,
    InvalidJobOptions,
    InvalidJobResult,
    JobNotFound,
    JobsError,
    JobTimeout,
    MetricsUnavailable,
    ResultUnavailable,
    SchemaNotFound,
    StatementCancelled,
    SyncConnectorCannotRunWorker,
    TaskNotFound,
    WaitTimeout,
    WorkerFailed,
    WorkflowNotFound,
)
from .jobs import Job, Unique
from .manager import JobEvent
from .retry import RetryStrategy
from .statuses import JobStatus
from .task_controls import CancelJob, Snooze
from .tasks import JobDeferrer, Task
from .worker import JobContext, Worker, WorkerOptions
from .workflows import Step, Workflow, WorkflowInfo, WorkflowRun, chain, chord, group

#: The version, written here only: pyproject.toml reads it (setuptools' dynamic version) and
#: ``sqla-jobs --version`` reads the installed distribution's metadata, built from it.
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .connectors.aiopg import AiopgConnector
    from .connectors.psycopg import PsycopgConnector, SyncPsycopgConnector
    from .connectors.psycopg2 import Psycopg2Connector
    from .connectors.sqlalchemy import SQLAlchemyConnector, SQLAlchemyPsycopg2Connector
    from .connectors.sqlalchemy_async import SQLAlchemyAsyncConnector
    from .schema import metadata

__all__ = [
    "AiopgConnector",
    "AlreadyEnqueued",
    "App",
    "BaseAsyncConnector",
    "BaseConnector",
    "Blueprint",
    "CancelJob",
    "ConnectionFailed",
    "ConnectorError",
    "ConnectorNotOpen",
    "InvalidJobArguments",
    "InvalidJobOptions",
    "InvalidJobResult",
    "Job",
    "JobContext",
    "JobDeferrer",
    "JobEvent",
    "JobNotFound",
    "JobStatus",
    "JobTimeout",
    "JobsError",
    "MetricsUnavailable",
    "Psycopg2Connector",
    "PsycopgConnector",
    "ResultUnavailable",
    "RetryStrategy",
    "SQLAlchemyAsyncConnector",
    "SQLAlchemyConnector",
    "SQLAlchemyPsycopg2Connector",
    "SchemaNotFound",
    "Snooze",
    "StatementCancelled",
    "Step",
    "SyncConnectorCannotRunWorker",
    "SyncPsycopgConnector",
    "Task",
    "TaskNotFound",
    "Unique",
    "WaitTimeout",
    "Worker",
    "WorkerFailed",
    "WorkerOptions",
    "Workflow",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowRun",
    "chain",
    "chord",
    "group",
    "metadata",
]

# Names that no longer exist, with what to use instead. Asking for one raises ImportError, not
# AttributeError: ``from sqla_jobs import X`` replaces an AttributeError with its own "cannot
# import name", and the message saying what to do would be lost.
_REMOVED = {
    "InMemoryConnector": (
        "Test your app on PostgreSQL with the sqla_jobs.testing pytest plugin instead: a "
        "migrated database per test, run_deferred_jobs(app), assert_deferred(task, ...) "
        "(see docs/testing.md)."
    ),
}


def __getattr__(name: str) -> Any:
    # The tables load SQLAlchemy, which a worker that sends pre-rendered SQL never needs.
    if name == "metadata":
        from .schema import metadata

        globals()[name] = metadata
        return metadata
    # Connectors load with their driver on first use (see sqla_jobs.connectors).
    if name in _REMOVED:
        raise ImportError(f"{name} was removed from sqla_jobs. {_REMOVED[name]}", name=__name__)
    connectors = importlib.import_module(".connectors", __name__)
    if name in connectors.CONNECTOR_MODULES:
        value = getattr(connectors, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
