"""A small Flask shop: orders, and jobs that confirm them.

``create_app()`` builds the web app; ``flask --app shop init-db`` creates the shop's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

import sqla_jobs

from . import jobs
from .models import db
from .settings import sqlalchemy_url
from .views import bp


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url()
    app.config.update(config or {})
    db.init_app(app)
    with app.app_context():
        # One engine for everything: the models' sessions, and the jobs deferred outside a
        # model transaction (a connector on the same engine and pool, never a second pool).
        connector = sqla_jobs.SQLAlchemyPsycopg2Connector(db.engine)
        app.extensions["sqla_jobs"] = jobs.queue.with_connector(connector)
    app.register_blueprint(bp)

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables (the job tables: `sqla-jobs schema upgrade`)."""
        db.create_all()
        print("Created the shop's tables.")

    return app
