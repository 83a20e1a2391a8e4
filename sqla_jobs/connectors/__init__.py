"""Connectors: thin adapters between sqla_jobs and one database driver each."""

from .aiopg import AiopgConnector
from .base import BaseAsyncConnector, BaseConnector
from .psycopg import PsycopgConnector, SyncPsycopgConnector
from .psycopg2 import Psycopg2Connector
from .sqlalchemy import SQLAlchemyConnector, SQLAlchemyPsycopg2Connector
from .sqlalchemy_async import SQLAlchemyAsyncConnector

__all__ = [
    "AiopgConnector",
    "BaseAsyncConnector",
    "BaseConnector",
    "Psycopg2Connector",
    "PsycopgConnector",
    "SQLAlchemyAsyncConnector",
    "SQLAlchemyConnector",
    "SQLAlchemyPsycopg2Connector",
    "SyncPsycopgConnector",
]
