"""The worker's backoff: failed statements and lost connections are tried again after waits
that double from 0.1 s up to a cap (``retry_max_delay``), each drawn from its upper half."""

from __future__ import annotations

import asyncio
import time

import pytest

import sqla_jobs
from sqla_jobs._aio import wait_any
from sqla_jobs.worker._common import retry_delay


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)]
)
def test_waits_double_up_to_the_cap_with_jitter(failures: int, ceiling: float) -> None:
    delays = [retry_delay(failures, cap=1.0) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 100, "workers that failed together must not retry in lockstep"


def test_the_cap_is_an_option() -> None:
    assert sqla_jobs.WorkerOptions().retry_max_delay == 1.0
    assert max(retry_delay(30, cap=5.0) for _ in range(200)) > 2.5
    with pytest.raises(ValueError, match="retry_max_delay must be more than 0 seconds"):
        sqla_jobs.WorkerOptions(retry_max_delay=0)


async def test_wait_any_ends_when_one_of_its_events_is_set() -> None:
    stop, back = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, back.set)
    started = time.monotonic()
    assert await wait_any((stop, back), 10)
    assert time.monotonic() - started < 5


async def test_wait_any_gives_up_after_its_time() -> None:
    assert not await wait_any((asyncio.Event(), asyncio.Event()), 0.01)
