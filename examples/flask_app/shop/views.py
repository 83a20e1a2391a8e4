"""The shop's HTTP routes."""

from __future__ import annotations

import datetime
from typing import Any

from flask import Blueprint, abort, request

from .jobs import checkout, send_confirmation, web_queue
from .models import Order, db

bp = Blueprint("shop", __name__)


@bp.post("/orders")
def create_order() -> tuple[dict[str, Any], int]:
    """Write the order and its confirmation job in one transaction: both or neither."""
    item = (request.get_json(silent=True) or {}).get("item")
    if not isinstance(item, str) or not item.strip():
        return {"error": 'send JSON like {"item": "book"}'}, 400
    order = Order(item=item.strip())
    db.session.add(order)
    db.session.flush()  # assigns order.id, inside the transaction
    send_confirmation.configure(bind=db.session).defer(order_id=order.id)
    db.session.commit()  # the order and its job become visible together
    return order.as_dict(), 201


@bp.get("/orders/<int:order_id>")
def get_order(order_id: int) -> dict[str, Any]:
    return db.get_or_404(Order, order_id).as_dict()


@bp.post("/orders/<int:order_id>/remind")
def remind(order_id: int) -> tuple[dict[str, Any], int]:
    """No model write here: defer on its own, through the app's engine and pool."""
    db.get_or_404(Order, order_id)
    job_id = web_queue().configure_task("send_reminder").defer(order_id=order_id)
    return {"job_id": job_id}, 202


@bp.post("/orders/<int:order_id>/checkout")
def check_out(order_id: int) -> tuple[dict[str, Any], int]:
    """Defer the order's checkout workflow (charge, then ship and email, then a summary) in
    the request's transaction: if the request fails before its commit, no step exists."""
    # Locked until the commit: two checkouts of one order at once cannot both pass the check.
    order = db.session.get(Order, order_id, with_for_update=True)
    if order is None:
        abort(404)
    if order.checked_out_at is not None:
        return {"error": f"order {order_id} is already checked out"}, 409
    order.checked_out_at = datetime.datetime.now(datetime.UTC)
    run = web_queue().defer_workflow(
        checkout(order_id), name=f"checkout of order {order_id}", bind=db.session
    )
    db.session.commit()
    return {"workflow_id": run.workflow_id, "job_ids": list(run.job_ids)}, 202
