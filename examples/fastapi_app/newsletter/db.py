"""The async engine, the session dependency and the models: one engine per process, shared
by the routes, the jobs' connector and the tasks."""

from __future__ import annotations

import datetime
import os
from collections.abc import AsyncIterator

from sqlalchemy import DateTime, String
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def database_url() -> str:
    """``DATABASE_URL`` on the async psycopg 3 driver, whatever driver it names."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError(
            "Set DATABASE_URL to your PostgreSQL database, "
            "e.g. export DATABASE_URL=postgresql://postgres@localhost/newsletter"
        )
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)


engine = create_async_engine(database_url(), pool_size=10)
Session = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request; whatever is not committed rolls back."""
    async with Session() as session:
        yield session


class Base(DeclarativeBase):
    pass


class Subscriber(Base):
    __tablename__ = "newsletter_subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    #: Set by the send_welcome job; welcomes counts every time it ran.
    welcomed_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    welcomes: Mapped[int] = mapped_column(default=0)
