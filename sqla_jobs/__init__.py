"""sqla_jobs: a PostgreSQL job queue for applications that already live on SQLAlchemy."""

from .app import App
from .connectors import (
    AiopgConnector,
    BaseAsyncConnector,
    BaseConnector,
    Psycopg2Connector,
    PsycopgConnector,
    SQLAlchemyAsyncConnector,
    SQLAlchemyConnector,
    SQLAlchemyPsycopg2Connector,
    SyncPsycopgConnector,
)
from .errors import (
    AlreadyEnqueued,
    ConnectionFailed,
    ConnectorError,
    ConnectorNotOpen,
    InvalidJobArguments,
    JobNotFound,
    JobsError,
    SchemaNotFound,
    SyncConnectorCannotRunWorker,
    TaskNotFound,
)
from .jobs import Job
from .manager import JobEvent
from .retry import RetryStrategy
from .schema import JobStatus, metadata
from .tasks import JobDeferrer, Task
from .worker import JobContext, Worker, WorkerOptions

__all__ = [
    "AiopgConnector",
    "AlreadyEnqueued",
    "App",
    "BaseAsyncConnector",
    "BaseConnector",
    "ConnectionFailed",
    "ConnectorError",
    "ConnectorNotOpen",
    "InvalidJobArguments",
    "Job",
    "JobContext",
    "JobDeferrer",
    "JobEvent",
    "JobNotFound",
    "JobStatus",
    "JobsError",
    "Psycopg2Connector",
    "PsycopgConnector",
    "RetryStrategy",
    "SQLAlchemyAsyncConnector",
    "SQLAlchemyConnector",
    "SQLAlchemyPsycopg2Connector",
    "SchemaNotFound",
    "SyncConnectorCannotRunWorker",
    "SyncPsycopgConnector",
    "Task",
    "TaskNotFound",
    "Worker",
    "WorkerOptions",
    "metadata",
]
