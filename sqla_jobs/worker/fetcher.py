"""The fetcher: keeps the executor's slots full, claiming jobs in batches with one ``FOR
UPDATE SKIP LOCKED`` statement each, up to two claims in flight; woken by news of the queue
(NOTIFY, an outcome that frees a lock) and by freed slots, polling otherwise."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .._aio import cancel_and_wait, wait_any, wait_event
from ..controls import applies_to
from ..errors import ConnectorError
from ..queries import claim_size
from ._common import WorkerState, logger
from .completer import Completer
from .executor import Executor

_MAX_PENDING_OUTCOMES = 20_000
_MAX_CLAIMS_IN_FLIGHT = 2
# Auto prefetch holds what the worker starts in this many seconds at its recent start rate,
# measured at each claim and averaged over some _RATE_TIME_CONSTANT seconds. The window is
# shorter than the time constant: a burst of at most `concurrency` starts (long jobs started
# together ending together) cannot lift the prefetch above its floor.
_PREFETCH_WINDOW = 0.03
_RATE_TIME_CONSTANT = 0.05
# How long a starting worker waits for its LISTEN before claiming without it (polling).
LISTEN_START_TIMEOUT = 5.0


class Fetcher:
    def __init__(
        self,
        state: WorkerState,
        executor: Executor,
        completer: Completer,
        listen_settled: asyncio.Event,
    ) -> None:
        self._state = state
        self._options = state.options
        self._executor = executor
        self._completer = completer
        # Set once the LISTEN connection listens, or could not: the first claim waits for it
        # (bounded), so that no job deferred after the claim goes unheard.
        self._listen_settled = listen_settled
        # Set whenever the fetcher may have something to do: a slot freed, a claim returned,
        # news from the queue, a stop request.
        self.changed = asyncio.Event()
        self._exhausted = False  # the last claim found fewer jobs than asked
        self._news_count = 0
        self._server_back = asyncio.Event()  # cuts a failed claim's backoff short
        self._claims: set[asyncio.Task[Any]] = set()
        self._claim_failures = 0  # in a row
        self._reserved = 0  # slots promised to claims in flight
        self._start_rate = 0.0  # jobs/s, see _auto_prefetch
        self._rate_measured_at = 0.0
        self._jobs_started_at_measure = 0
        self._jobs_ended_at_claim = 0
        self._waited_for_listen = False

    def news(self) -> None:
        """Something may have made jobs runnable: claim again."""
        self._news_count += 1
        self._exhausted = False
        self.changed.set()

    def server_back(self) -> None:
        """The server answers again (the worker's LISTEN is back): a claim waiting out its
        backoff after a failure tries at once, rather than up to ``retry_max_delay`` later
        (a job deferred as the server returned waited for it: its NOTIFY came first)."""
        self._server_back.set()
        self.news()

    async def run(self) -> None:
        """Keep the slots full until the worker stops (or, with ``wait=False``, until the
        queue is drained): claim as many jobs as slots are free, plus the prefetch, with up to
        two claims in flight, so that PostgreSQL prepares the next batch while Python runs
        this one. Runs again from the top after a crash (the supervisor restarts it)."""
        state, options, executor = self._state, self._options, self._executor
        prefetch = options.prefetch
        auto = prefetch is None
        # Auto starts as with prefetch=concurrency, then adapts at each claim.
        capacity = options.concurrency + (options.concurrency if prefetch is None else prefetch)
        if not self._waited_for_listen:
            await self._wait_for_listen()
            self._waited_for_listen = True
            self._rate_measured_at = time.monotonic()
        while not state.stopping:
            self.changed.clear()
            limit = self._claim_limit(capacity)
            if limit and auto:
                # One clock read per claim, not per job.
                capacity = options.concurrency + self._auto_prefetch()
                limit = self._claim_limit(capacity)
            if limit:
                self._start_claim(limit)
                continue
            idle = self._exhausted and not self._claims
            if idle and not options.wait and not executor.held:
                # Draining: done once every outcome is written and none of them made a job
                # runnable again (the next job of a lock, a retry).
                await self._completer.wait_idle()
                if self._exhausted and executor.jobs_ended == self._jobs_ended_at_claim:
                    return
                # Jobs ended since the last claim began: they may have deferred new ones.
                self._exhausted = False
                continue
            timeout = options.polling_interval if idle else None
            if not await wait_event(self.changed, timeout):
                self._exhausted = False  # poll: scheduled jobs, missed notifications

    async def finish_claims(self) -> None:
        """Claims still in flight at the stop hold jobs this worker will not run: each is
        bounded by database_timeout; its jobs, once it returns, go back to the queue."""
        if not self._claims:
            return
        timeout = 1.0 if self._state.hurry else self._options.database_timeout + 1.0
        _, stuck = await asyncio.wait(self._claims, timeout=timeout)
        for claim in stuck:
            # Its jobs, if it committed, stay 'doing' under this worker, whose row is removed
            # at the stop: the next stalled-job sweep of a live worker recovers them.
            logger.warning(
                "A claim did not return within %.0f s of the stop; cancelling it", timeout
            )
            await cancel_and_wait(claim, 1.0)

    async def _wait_for_listen(self) -> None:
        """Claim only once LISTEN is in place (or has failed, or taken too long): a job
        deferred between a first claim and a late LISTEN would wait for the next poll, and an
        abort request for one of its jobs for the next heartbeat."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTEN_START_TIMEOUT
        while not self._listen_settled.is_set() and not self._state.stopping:
            self.changed.clear()
            if not await wait_event(self.changed, deadline - loop.time()):
                logger.warning(
                    "LISTEN is not in place after %.0f s; claiming jobs without it (polling "
                    "every %.1f s until it is)",
                    LISTEN_START_TIMEOUT,
                    self._options.polling_interval,
                )
                return

    def _claim_limit(self, capacity: int) -> int:
        """How many jobs to claim now to hold ``capacity`` (running, ready and being claimed);
        0 for no claim now. A claim waits until it can bring half a batch, unless the worker
        would soon run dry: no claim in flight, and no more jobs ready than slots."""
        options = self._options
        held = self._executor.held + self._reserved
        limit = claim_size(capacity - held, options.fetch_batch)
        if (
            self._exhausted
            or limit <= 0
            or len(self._claims) >= _MAX_CLAIMS_IN_FLIGHT
            or self._completer.backlog >= _MAX_PENDING_OUTCOMES
        ):
            return 0
        if limit < max(1, min(options.fetch_batch, capacity) // 2) and (
            self._claims or len(self._executor.ready) > options.concurrency
        ):
            return 0
        return limit

    def _auto_prefetch(self) -> int:
        """The prefetch for ``prefetch=None``: the jobs this worker starts within
        _PREFETCH_WINDOW at its recent start rate, between concurrency and two claims' worth
        (twice fetch_batch): at a high rate, two claims of fetch_batch are in flight while the
        slots run what the last ones brought, and outcomes gather in big finishes.

        The start rate is a decaying average over some _RATE_TIME_CONSTANT seconds, updated
        here, once per claim: short jobs make it high; long jobs, or an idle queue, bring the
        prefetch down to its floor within a fraction of a second. Above the floor, a job
        claimed ahead waits about _PREFETCH_WINDOW for its slot; the exception is long jobs
        right behind many short ones, claimed before the rate fell (prefetch=0 for such
        queues)."""
        now = time.monotonic()
        elapsed = now - self._rate_measured_at
        jobs_started = self._executor.jobs_started
        started = jobs_started - self._jobs_started_at_measure
        self._rate_measured_at = now
        self._jobs_started_at_measure = jobs_started
        if elapsed >= _RATE_TIME_CONSTANT:
            self._start_rate = started / elapsed
        else:
            # Exponential decay over the interval, plus the jobs started during it.
            self._start_rate += (started - self._start_rate * elapsed) / _RATE_TIME_CONSTANT
        ahead = int(self._start_rate * _PREFETCH_WINDOW)
        concurrency = self._options.concurrency
        return max(concurrency, min(ahead, _MAX_CLAIMS_IN_FLIGHT * self._options.fetch_batch))

    def _start_claim(self, limit: int) -> None:
        self._jobs_ended_at_claim = self._executor.jobs_ended
        self._reserved += limit
        self._claims.add(asyncio.create_task(self._claim(limit), name="sqla_jobs.claim"))

    async def _read_controls(self) -> None:
        """Whether a control applies to this worker now (`sqla_jobs.controls`)."""
        state = self._state
        state.controls_stale = False
        try:
            found = await state.bounded(state.database.list_controls())
        except Exception:
            state.controls_stale = True  # read again at the next claim
            raise
        controlled = any(applies_to(control, state.queues) for control in found)
        state.limited = frozenset(
            (control.scope, control.name)
            for control in found
            if control.limits.concurrency_limit is not None
        )
        if controlled != state.controlled:
            logger.info(
                "%s",
                "Execution controls apply to this worker's queues: claiming under them"
                if controlled
                else "No execution control applies to this worker's queues any more",
                extra=state.log_extra,
            )
        state.controlled = controlled

    async def _claim(self, limit: int) -> None:
        state = self._state
        news_before = self._news_count
        try:
            if state.controls_stale:
                await self._read_controls()
            controlled = state.controlled
            jobs = await state.bounded(
                state.database.claim(
                    worker_id=state.worker_id,
                    queues=state.queues,
                    limit=limit,
                    controlled=controlled,
                )
            )
            if not jobs and not controlled:
                # The plain claim claims nothing once a control applies: is it one?
                await self._read_controls()
                if state.controlled:
                    self.news()
        except Exception as exc:
            self._claim_failures += 1
            delay = state.retry_delay(self._claim_failures)
            if isinstance(exc, (ConnectorError, TimeoutError)):
                logger.error(
                    "Could not claim jobs, retrying in %.1f s: %s", delay, state.describe(exc)
                )
            else:
                logger.exception("Could not claim jobs, retrying in %.1f s", delay)
            self._server_back.clear()
            await wait_any((state.stop_requested, self._server_back), delay)
            jobs = []
        else:
            self._claim_failures = 0
        finally:
            self._reserved -= limit
            this_claim = asyncio.current_task()
            if this_claim is not None:
                self._claims.discard(this_claim)
            self.changed.set()
        # Fewer jobs than asked: the queue is empty for now, unless news came while this claim
        # ran (its snapshot may predate the outcome that made a job runnable).
        if len(jobs) < limit and self._news_count == news_before:
            self._exhausted = True
        if state.stopping:
            if jobs:
                self._executor.give_back_unstarted(job.id for job in jobs)
            return
        self._executor.add_claimed(jobs)
