"""`SQLAlchemyPsycopg2Connector`: defers through the application's own SQLAlchemy `Engine`."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine

from ..errors import ConnectorError
from ..queries import Query
from .base import BaseConnector, Params, Row, translate_error


class SQLAlchemyPsycopg2Connector(BaseConnector):
    """Sync connector that borrows connections from the app's SQLAlchemy ``Engine`` and its
    pool (never a pool of its own): defers jobs.

    Pass ``engine=`` (the app's engine, ``postgresql+psycopg2://...``), or ``dsn=`` (a
    libpq URL) plus any ``sqlalchemy.create_engine`` keyword arguments to build one.
    """

    def __init__(
        self, engine: Engine | None = None, *, dsn: str | None = None, **engine_kwargs: Any
    ) -> None:
        if (engine is None) == (dsn is None):
            raise TypeError("SQLAlchemyPsycopg2Connector takes either engine= or dsn=, not both")
        self._owns_engine = engine is None
        if engine is None:
            assert dsn is not None
            engine = sqlalchemy.create_engine(_driver_url(dsn), **engine_kwargs)
        self.engine = engine
        self._target = engine.url.render_as_string(hide_password=True)

    def describe(self) -> str:
        return self._target

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def _translate(self, exc: sqlalchemy.exc.DBAPIError, query: Query) -> ConnectorError:
        orig: Any = exc.orig
        sqlstate = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
        diag = getattr(orig, "diag", None)
        return translate_error(
            orig if orig is not None else exc,
            target=self._target,
            sqlstate=sqlstate,
            constraint_name=getattr(diag, "constraint_name", None),
            query=query,
            connecting=isinstance(exc, sqlalchemy.exc.OperationalError) and not sqlstate,
        )

    def fetch_all(self, query: Query, params: Params | None = None) -> list[Row]:
        try:
            with self.engine.begin() as conn:
                result = conn.exec_driver_sql(query.sql, dict(params or {}))
                if not result.returns_rows:
                    return []
                return [dict(row) for row in result.mappings()]
        except sqlalchemy.exc.DBAPIError as exc:
            raise self._translate(exc, query) from None

    def execute(self, query: Query, params: Params | None = None) -> None:
        self.fetch_all(query, params)

    def fetch_one(self, query: Query, params: Params | None = None) -> Row | None:
        rows = self.fetch_all(query, params)
        return rows[0] if rows else None

    def sqlalchemy_engine(self) -> Engine:
        return self.engine


def _driver_url(dsn: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg2://" + dsn[len(prefix) :]
    return dsn
