"""An app whose connector can defer but not run a worker (psycopg2, sync)."""

from __future__ import annotations

import os

from sqla_jobs import App, Psycopg2Connector

app = App(connector=Psycopg2Connector(os.environ.get("DATABASE_URL", "")))


@app.task(name="noop")
def noop() -> None:
    """Never runs: a worker cannot start on this app."""
