"""A small Flask shop: orders, and jobs that confirm them.

``create_app()`` builds the web app; ``flask --app shop init-db`` creates the shop's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

import sqla_jobs
from sqla_jobs.dashboard import Request, create_blueprint

from . import jobs
from .models import db
from .settings import sqlalchemy_url
from .views import bp


def only_from_this_machine(request: Request) -> tuple[bool, bool]:
    """Who may see the dashboard, and act on jobs: put your own login check here (Flask's
    request is ``request.native``)."""
    local = request.native.remote_addr in ("127.0.0.1", "::1")
    return local, local


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
    # The jobs dashboard at /jobs, through the same engine.
    dashboard = create_blueprint(app.extensions["sqla_jobs"], authorize=only_from_this_machine)
    app.register_blueprint(dashboard, url_prefix="/jobs")

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables (the job tables: `sqla-jobs schema upgrade`)."""
        db.create_all()
        print("Created the shop's tables.")

    return app
