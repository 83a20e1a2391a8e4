"""The HTTP API: ``uvicorn newsletter.main:api`` (from examples/fastapi_app)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import sqla_jobs
from sqla_jobs.dashboard import Request, create_asgi_app

from .db import Subscriber, engine, get_session
from .jobs import queue, send_welcome


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # Opening the queue checks the database; deferring with bind= would not need it, the
    # route that defers on its own does.
    async with queue.open_async():
        yield
    await engine.dispose()


def only_from_this_machine(request: Request) -> tuple[bool, bool]:
    """Who may see the dashboard, and act on jobs: put your own login check here (the ASGI
    scope is ``request.native``; ``starlette.requests.Request(request.native)`` reads it)."""
    client = request.native.get("client") or ("", 0)
    local = client[0] in ("127.0.0.1", "::1")
    return local, local


api = FastAPI(title="newsletter", lifespan=lifespan)
# The jobs dashboard at /jobs, through the queue's connector (the same engine).
api.mount("/jobs", create_asgi_app(queue, authorize=only_from_this_machine))
SessionDep = Annotated[AsyncSession, Depends(get_session)]


class SubscribeIn(BaseModel):
    email: str


class SubscriberOut(BaseModel):
    id: int
    email: str
    welcomed_at: datetime.datetime | None
    welcomes: int


@api.post("/subscribers", status_code=201)
async def subscribe(body: SubscribeIn, session: SessionDep) -> SubscriberOut:
    """The subscriber and the job that welcomes them commit together, or not at all."""
    subscriber = Subscriber(email=body.email, welcomes=0)
    session.add(subscriber)
    try:
        await session.flush()  # assigns subscriber.id; a duplicate email fails here
    except IntegrityError:
        raise HTTPException(409, f"{body.email} is already subscribed") from None
    await send_welcome.configure(bind=session).defer_async(subscriber_id=subscriber.id)
    await session.commit()
    return SubscriberOut.model_validate(subscriber, from_attributes=True)


@api.get("/subscribers/{subscriber_id}")
async def get_subscriber(subscriber_id: int, session: SessionDep) -> SubscriberOut:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise HTTPException(404, f"no subscriber {subscriber_id}")
    return SubscriberOut.model_validate(subscriber, from_attributes=True)


@api.post("/subscribers/{subscriber_id}/welcome", status_code=202)
async def welcome_again(subscriber_id: int, session: SessionDep) -> dict[str, int]:
    """Nothing else to write: defer through the queue's connector (the same engine), at most
    one waiting welcome per subscriber."""
    if await session.get(Subscriber, subscriber_id) is None:
        raise HTTPException(404, f"no subscriber {subscriber_id}")
    deferrer = send_welcome.configure(queueing_lock=f"welcome-{subscriber_id}")
    try:
        job_id = await deferrer.defer_async(subscriber_id=subscriber_id)
    except sqla_jobs.AlreadyEnqueued:
        raise HTTPException(409, "a welcome is already waiting to be sent") from None
    return {"job_id": job_id}
