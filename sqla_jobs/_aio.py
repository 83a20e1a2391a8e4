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
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
_RECANCEL_INTERVAL = 0.25
# How long `within` keeps cancelling a statement past its deadline before leaving it.
_GIVE_UP = 1.0


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


async def wait_any(events: tuple[asyncio.Event, ...], seconds: float) -> bool:
    """Wait until one of ``events`` is set or ``seconds`` pass; whether one is set."""
    if any(event.is_set() for event in events):
        return True
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(event.is_set() for event in events)


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising `TimeoutError` after ``seconds`` (None: no bound).

    The awaitable runs in a task of its own, cancelled at the deadline with `cancel_and_wait`
    (the cancellation sent again until it lands): a driver that loses the cancellation in its
    own ``wait_for`` (aiopg does, waiting for a pooled connection or a result) cannot keep the
    caller waiting past the bound. Given up after _GIVE_UP seconds more, such a task is left
    to end by itself. Cancelling the caller cancels the statement too."""
    if seconds is None:
        return await awaitable
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=max(seconds, 0.0))
    except asyncio.CancelledError:
        inner.cancel()
        # Let the statement's own clean-up (returning its connection) run, briefly; a second
        # cancellation of the caller only repeats the first.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({inner}, timeout=_RECANCEL_INTERVAL)
        _forget(inner)
        raise
    if not done:
        if not await cancel_and_wait(inner, _GIVE_UP):
            _forget(inner)
        elif not inner.cancelled() and inner.exception() is None:
            # It ended with its result as the deadline passed: keep it.
            return inner.result()
        raise TimeoutError
    return inner.result()


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a task nobody waits for any more, whenever it ends (no
    "exception was never retrieved" warning)."""
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


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
