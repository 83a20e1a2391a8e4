"""The newsletter's jobs, on a connector over the same async engine as the web app.

Start a worker with ``sqla-jobs --app newsletter.jobs:queue worker`` (from
examples/fastapi_app): it claims jobs, listens for new ones and records their outcomes
through this engine's pool.
"""

from __future__ import annotations

import datetime
import logging

import sqla_jobs

from .db import Session, Subscriber, engine

logger = logging.getLogger(__name__)

queue = sqla_jobs.App(connector=sqla_jobs.SQLAlchemyAsyncConnector(engine))


@queue.task(name="send_welcome", queue="emails")
async def send_welcome(subscriber_id: int) -> None:
    """Pretend to send the welcome email, then record it."""
    async with Session() as session, session.begin():
        subscriber = await session.get(Subscriber, subscriber_id, with_for_update=True)
        if subscriber is None:
            logger.warning("Subscriber %s is gone: no welcome", subscriber_id)
            return
        logger.info("Welcome sent to %s", subscriber.email)
        subscriber.welcomed_at = datetime.datetime.now(datetime.UTC)
        subscriber.welcomes += 1
