"""``python -m newsletter.init_db``: create the newsletter's tables (the job tables come from
``sqla-jobs schema upgrade``)."""

from __future__ import annotations

import asyncio

from .db import Base, engine


async def main() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    print("Created the newsletter's tables.")


if __name__ == "__main__":
    asyncio.run(main())
