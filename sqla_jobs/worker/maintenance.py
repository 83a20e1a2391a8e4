"""The maintenance roles: the heartbeat (this worker is alive; abort requests it missed; jobs
of stalled workers) and the listener (LISTEN for new jobs and abort requests, reconnecting
whenever its connection is lost)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from .._aio import cancel_and_wait, wait_event
from ..errors import ConnectorError, JobsError
from ..statuses import CONTROLS_CHANNEL, NOTIFY_CHANNEL, JobStatus
from ._common import ABORT_CHANNEL, WorkerState, logger, retry_delay
from .executor import Executor, log_extra

# Once listening, the worker sends itself a notification through its pool and gives up on
# LISTEN (with a warning) if it has not heard it within this long: PgBouncer in transaction
# mode takes the LISTEN and forwards no notification.
_PROBE_TIMEOUT = 5.0
# How long the listener's probe gets to end at the stop.
_PROBE_STOP_TIMEOUT = 5.0


class Heartbeat:
    """Every heartbeat_interval, record that this worker is alive, then look after jobs
    (`look_after_jobs`); the first look is at once, at start."""

    def __init__(self, state: WorkerState, executor: Executor, news: Callable[[], None]) -> None:
        self._state = state
        self._executor = executor
        self._news = news
        # Set when the heartbeat should act before its next beat: shutdown, an abort request
        # that may concern this worker, or a LISTEN that came back (notifications were missed,
        # abort requests among them).
        self.wake = asyncio.Event()
        self.aborts_to_look_for = False
        self._next_beat: float | None = None
        # After a failed heartbeat, other workers may have missed theirs too (a database
        # outage): judge none of them stalled before they have had time to heartbeat again.
        self._recovery_not_before = 0.0

    async def run(self) -> None:
        """Beat until the worker shuts down. After a crash (the supervisor restarts it) the
        next beat keeps its time."""
        state = self._state
        loop = asyncio.get_running_loop()
        interval = state.options.heartbeat_interval
        if self._next_beat is None:
            await self.look_after_jobs()
            self._next_beat = loop.time() + interval
        while not state.shutting_down.is_set():
            await wait_event(self.wake, self._next_beat - loop.time())
            self.wake.clear()
            if state.shutting_down.is_set():
                return
            if self.aborts_to_look_for:
                self.aborts_to_look_for = False
                await self.look_for_aborts()
            if loop.time() < self._next_beat:
                continue
            self._next_beat = loop.time() + interval
            # A missed NOTIFY of a control's change is caught here, at the latest.
            state.controls_stale = True
            try:
                if not await state.bounded(state.database.heartbeat(state.worker_id)):
                    await self._register_again()
            except Exception as exc:
                logger.warning(
                    "Heartbeat failed: %s",
                    state.describe(exc),
                    exc_info=not isinstance(exc, (JobsError, TimeoutError)),
                )
                self._recovery_not_before = time.monotonic() + state.options.stalled_timeout
                continue
            await self.look_after_jobs()

    def look_for_aborts_soon(self) -> None:
        """An abort request may concern this worker, or LISTEN was lost a while and requests
        were missed: look for its jobs marked aborting now (one statement, however many
        requests came meanwhile)."""
        self.aborts_to_look_for = True
        self.wake.set()

    async def look_for_aborts(self) -> None:
        state = self._state
        try:
            for job_id in await state.bounded(state.database.aborting_job_ids(state.worker_id)):
                self._executor.request_abort(job_id)
        except Exception as exc:
            logger.warning(
                "Could not look for abort requests: %s",
                state.describe(exc),
                exc_info=not isinstance(exc, (JobsError, TimeoutError)),
            )

    async def look_after_jobs(self) -> None:
        """Abort this worker's jobs marked aborting (so that aborts reach a worker that does
        not hear NOTIFY, or missed one), then recover the jobs of stalled workers."""
        await self.look_for_aborts()
        state = self._state
        if time.monotonic() < self._recovery_not_before or state.shutting_down.is_set():
            return
        try:
            await self._recover_stalled_jobs()
        except (JobsError, TimeoutError) as exc:
            logger.warning("Could not look for stalled jobs: %s", state.describe(exc))
        except Exception:
            # Never let it end the heartbeat: a worker that stops heartbeating looks dead.
            logger.exception("Looking for stalled jobs failed")

    async def _recover_stalled_jobs(self) -> None:
        """Recover the running jobs of workers that stopped heartbeating (killed, lost) and
        remove those workers; every live worker does this, each stalled job goes to one."""
        state = self._state
        timeout = state.options.stalled_timeout
        recovered = await state.bounded(
            state.database.recover_stalled_jobs(
                worker_id=state.worker_id,
                worker_name=state.name,
                stalled_timeout=timeout,
                strategies={name: task.retry for name, task in state.app.tasks.items()},
            )
        )
        for item in recovered:
            job, stalled = item.job, item.stalled
            logger.warning(
                "Job %d (%s) recovered from a stalled worker: %s. %s",
                job.id,
                job.task_name,
                item.status.value,
                item.error,
                extra={
                    **log_extra(job),
                    **state.log_extra,
                    "status": item.status.value,
                    "stalled_worker": stalled.worker_name,
                    "stalled_worker_id": stalled.worker_id,
                },
            )
        if any(item.status is JobStatus.TODO for item in recovered):
            self._news()
        for row in await state.bounded(
            state.database.delete_stalled_workers(
                worker_id=state.worker_id, stalled_timeout=timeout
            )
        ):
            logger.warning(
                "Removed stalled worker %r (id %d, pid %d on %s): no heartbeat for %.0f s",
                row["name"],
                row["id"],
                row["pid"],
                row["hostname"],
                row["heartbeat_age"],
                extra={
                    **state.log_extra,
                    "stalled_worker": row["name"],
                    "stalled_worker_id": row["id"],
                },
            )

    async def _register_again(self) -> None:
        """The heartbeat found this worker's row gone: another worker judged it stalled (it
        had not heartbeated for stalled_timeout seconds) and recovered its running jobs."""
        state = self._state
        logger.error(
            "Worker %s (id %d) was declared stalled by another worker, which recovered any "
            "job it was running: such jobs may run twice. Registering again; if this repeats, "
            "raise stalled_timeout above the longest pause this worker can have.",
            state.name,
            state.worker_id,
            extra=state.log_extra,
        )
        await state.bounded(
            state.database.reregister_worker(
                state.worker_id,
                name=state.name,
                queues=state.queues,
                concurrency=state.options.concurrency,
            )
        )


class Listener:
    """Holds a LISTEN connection for new jobs and abort requests, reconnecting (with backoff)
    whenever it is lost; each time it is back, the worker claims and looks for abort
    requests at once, for what was missed meanwhile."""

    def __init__(
        self,
        state: WorkerState,
        executor: Executor,
        heartbeat: Heartbeat,
        news: Callable[[], None],
        settled: asyncio.Event,
        wake_fetcher: Callable[[], None],
        server_back: Callable[[], None] | None = None,
    ) -> None:
        self._state = state
        self._executor = executor
        self._heartbeat = heartbeat
        self._news = news
        self._server_back = server_back or news
        self.settled = settled
        self._wake_fetcher = wake_fetcher
        self._probe_heard = asyncio.Event()
        self._probe_payload = f"sqla_jobs.probe.{uuid.uuid4().hex}"
        self._probe: asyncio.Task[Any] | None = None
        self._unusable = False  # LISTEN hears no notification: poll only
        self._lost_at: float | None = None
        self._failures = 0

    async def run(self) -> None:
        state = self._state
        cap = state.options.retry_max_delay / 2
        while not state.shutting_down.is_set() and not self._unusable:
            try:
                await state.app.connector.listen(
                    [NOTIFY_CHANNEL, ABORT_CHANNEL, CONTROLS_CHANNEL],
                    self._on_notification,
                    on_listening=self._on_listening,
                )
            except Exception as exc:
                self._failures += 1
                delay = retry_delay(self._failures, cap)
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                    logger.warning(
                        "LISTEN connection lost (%s); polling every %.1f s until it is back",
                        exc,
                        state.options.polling_interval,
                        exc_info=not isinstance(exc, ConnectorError),
                    )
                else:
                    logger.debug("LISTEN still failing, retrying in %.1f s: %s", delay, exc)
                self.settled.set()
                self._news()
                await wait_event(state.shutting_down, delay)

    async def stop(self) -> None:
        """Cancel the probe, if one is under way (the listener itself is cancelled by the
        supervisor: its connection is idle)."""
        if self._probe is not None:
            await cancel_and_wait(self._probe, _PROBE_STOP_TIMEOUT)

    def _on_notification(self, channel: str, payload: str) -> None:
        queues = self._state.queues
        if channel == NOTIFY_CHANNEL:
            if payload == self._probe_payload:
                self._probe_heard.set()
            elif queues is None or payload in queues:
                self._news()
        elif channel == CONTROLS_CHANNEL:
            # A queue or task paused, resumed or limited: read the controls, claim again.
            self._state.controls_stale = True
            self._news()
        elif channel == ABORT_CHANNEL:
            try:
                job_id = int(payload)
            except ValueError:
                logger.warning("Ignoring an abort request for job %r: not a job id", payload)
                return
            # The channel is the database's, not the schema's: another app's jobs, in another
            # schema, have the same ids. A request naming a job this worker holds is checked
            # against its own table before the job is stopped.
            if job_id in self._executor.running or job_id in self._executor.ready:
                self._heartbeat.look_for_aborts_soon()

    def _on_listening(self) -> None:
        if self._lost_at is not None:
            logger.info(
                "LISTEN re-established after %.1f s",
                time.monotonic() - self._lost_at,
                extra=self._state.log_extra,
            )
            self._lost_at = None
            self._heartbeat.look_for_aborts_soon()
            self._server_back()  # claim now, whatever backoff a failed claim was in
        self._failures = 0
        self.settled.set()
        self._wake_fetcher()
        if not self._probe_heard.is_set() and (self._probe is None or self._probe.done()):
            listener = asyncio.current_task()
            self._probe = asyncio.create_task(
                self._probe_listen(listener), name="sqla_jobs.listen_probe"
            )

    async def _probe_listen(self, listener: asyncio.Task[Any] | None) -> None:
        """Send this worker a notification through its pool; if its LISTEN does not hear it,
        say why, stop listening and poll."""
        state = self._state
        try:
            await state.bounded(state.database.notify(NOTIFY_CHANNEL, self._probe_payload))
        except Exception as exc:
            # The connection is failing: the listener's own retries deal with it.
            logger.debug("Could not send the LISTEN probe: %s", exc)
            return
        if await wait_event(self._probe_heard, _PROBE_TIMEOUT) or state.shutting_down.is_set():
            return
        self._unusable = True
        logger.warning(
            "This worker's LISTEN hears no notification (a NOTIFY it sent through its own "
            "connections did not arrive within %.0f s): PgBouncer in transaction or statement "
            "pooling mode takes LISTEN but forwards no notification. Polling every %.1f s "
            "instead. Connect the worker to PostgreSQL directly (or through PgBouncer in "
            "session mode) to be woken at once, or pass listen_notify=False "
            "(--no-listen-notify) to skip LISTEN.",
            _PROBE_TIMEOUT,
            state.options.polling_interval,
            extra=state.log_extra,
        )
        if listener is not None:
            await cancel_and_wait(listener, _PROBE_STOP_TIMEOUT)
