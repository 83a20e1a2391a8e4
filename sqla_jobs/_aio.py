"""asyncio waits that never lose a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns normally when its task is cancelled in the same
loop turn as the awaited thing completes: the cancellation is lost (CPython issue #86296, fixed
in 3.12 by building ``wait_for`` on ``asyncio.timeout``). A worker waiting for news with
``wait_for`` and cancelled at that moment ran on for ever. These helpers are built on
``asyncio.timeout`` and ``asyncio.wait``, which keep every cancellation; sqla_jobs uses no
``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
_RECANCEL_INTERVAL = 0.25


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass (None: no limit); whether it is set."""
    if event.is_set():
        return True
    if seconds is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising `TimeoutError` after ``seconds`` (None: no bound)."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def cancel_and_wait(task: asyncio.Task[Any], seconds: float) -> bool:
    """Cancel ``task`` and wait up to ``seconds`` for it to end; whether it ended.

    The cancellation is sent again every quarter second: one that a library lost (its
    ``wait_for``, see above) lands at the task's next ``await``. A quarter second leaves the
    task time to run its clean-up (close a connection) between two."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL_INTERVAL, remaining))
    return True
