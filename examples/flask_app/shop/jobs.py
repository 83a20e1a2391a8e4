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
from sqla_jobs.workflows import Chain

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


# -- the checkout workflow: charge, then ship and email the receipt in parallel, then a summary


@queue.task(name="charge_order", queue="payments")
def charge_order(order_id: int) -> dict[str, str]:
    """Pretend to charge the card; the charge's id is the step's result, which the steps
    after it read (``context.parent_results``)."""
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        if order is None:
            raise LookupError(f"order {order_id} does not exist")
        order.charge_id = order.charge_id or f"ch_{order_id:06d}"  # charged once, even if rerun
        db.session.commit()
        return {"charge_id": order.charge_id}


@queue.task(name="ship_order", queue="shipping", pass_context=True)
def ship_order(context: sqla_jobs.JobContext, order_id: int) -> dict[str, str]:
    """Runs only once the charge succeeded; reads the charge's id from its result."""
    (charge,) = context.parent_results.values()
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        assert order is not None  # the order outlives its workflow
        order.tracking_number = f"TRK-{charge['charge_id'][3:]}"
        db.session.commit()
        return {"tracking_number": order.tracking_number}


@queue.task(name="email_receipt", queue="emails")
def email_receipt(order_id: int) -> dict[str, str]:
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        assert order is not None
        order.receipt_sent_at = datetime.datetime.now(datetime.UTC)
        db.session.commit()
        return {"sent_at": order.receipt_sent_at.isoformat()}


@queue.task(name="summarize_order", queue="default", pass_context=True)
def summarize_order(context: sqla_jobs.JobContext, order_id: int) -> str:
    """Runs once the shipping and the receipt both succeeded, and reads both results."""
    shipped, emailed = context.parent_results.values()  # in the order the steps were added
    with flask_app().app_context():
        order = db.session.get(Order, order_id)
        assert order is not None
        order.summary = (
            f"order {order_id}: shipped as {shipped['tracking_number']}, "
            f"receipt sent at {emailed['sent_at']}"
        )
        db.session.commit()
        return order.summary


def checkout(order_id: int) -> Chain:
    """The order's checkout, as one workflow: nothing is shipped or emailed unless the
    charge succeeded, and the summary waits for both."""
    return sqla_jobs.chain(
        charge_order.step(order_id=order_id),
        sqla_jobs.group(ship_order.step(order_id=order_id), email_receipt.step(order_id=order_id)),
        summarize_order.step(order_id=order_id),
    )


def web_queue() -> sqla_jobs.App:
    """The queue as the web process sees it: the same tasks, deferred through the Flask
    app's own engine (an `SQLAlchemyPsycopg2Connector` set up by ``create_app``)."""
    app: sqla_jobs.App = current_app.extensions["sqla_jobs"]
    return app
