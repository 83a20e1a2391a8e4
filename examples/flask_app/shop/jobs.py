"""The shop's jobs and the sqla_jobs app that the worker runs.

Start a worker with ``sqla-jobs --app shop.jobs:queue worker`` (from examples/flask_app).
The worker's connector is psycopg 3 (a worker needs an async connector); the web process
defers through its own Flask-SQLAlchemy engine instead (see ``shop.create_app``).
"""

from __future__ import annotations

import datetime
import functools
import logging

from flask import Flask, current_app

import sqla_jobs

from .models import Order, db
from .settings import libpq_url

logger = logging.getLogger(__name__)

queue = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=libpq_url()))


@functools.cache
def flask_app() -> Flask:
    """The Flask app, in the worker process: the tasks use the same models and session."""
    from . import create_app  # the web app imports this module: import it late

    return create_app()


@queue.task(name="send_confirmation", queue="emails")
def send_confirmation(order_id: int) -> None:
    """Pretend to email the customer, then record that it was done."""
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        if order is None:  # cannot happen: the job commits with its order
            raise LookupError(f"order {order_id} does not exist")
        logger.info("Confirmation for order %s (%s) sent", order.id, order.item)
        order.confirmed_at = datetime.datetime.now(datetime.UTC)
        db.session.commit()


@queue.task(name="send_reminder", queue="emails")
def send_reminder(order_id: int) -> None:
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        if order is None:
            logger.warning("Order %s is gone: no reminder", order_id)
            return
        order.reminders += 1
        db.session.commit()


def web_queue() -> sqla_jobs.App:
    """The queue as the web process sees it: the same tasks, deferred through the Flask
    app's own engine (an `SQLAlchemyPsycopg2Connector` set up by ``create_app``)."""
    app: sqla_jobs.App = current_app.extensions["sqla_jobs"]
    return app
