"""Connectors: thin adapters between sqla_jobs and one database driver each.

Each connector's module imports its driver, so they load on first use: an app on psycopg 3
never imports aiopg or psycopg2 (and the CLI starts faster).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import BaseAsyncConnector, BaseConnector

if TYPE_CHECKING:
    from .aiopg import AiopgConnector
    from .psycopg import PsycopgConnector, SyncPsycopgConnector
    from .psycopg2 import Psycopg2Connector
    from .sqlalchemy import SQLAlchemyConnector, SQLAlchemyPsycopg2Connector
    from .sqlalchemy_async import SQLAlchemyAsyncConnector

# Public name -> the module that defines it.
CONNECTOR_MODULES = {
    "AiopgConnector": "aiopg",
    "PsycopgConnector": "psycopg",
    "SyncPsycopgConnector": "psycopg",
    "Psycopg2Connector": "psycopg2",
    "SQLAlchemyConnector": "sqlalchemy",
    "SQLAlchemyPsycopg2Connector": "sqlalchemy",
    "SQLAlchemyAsyncConnector": "sqlalchemy_async",
}

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


def __getattr__(name: str) -> Any:
    module = CONNECTOR_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
