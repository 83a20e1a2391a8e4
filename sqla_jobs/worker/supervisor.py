"""The worker: its roles (fetcher, executor, completer, heartbeat, listener, periodic
deferrer) under one supervisor, which starts them, restarts a role that crashed (with
backoff, a few times), stops the worker when one keeps crashing, and stops them all, each
step bounded, when the worker stops."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .._aio import cancel_and_wait, within
from ..connectors.base import cannot_run_worker
from ..controls import Limits
from ..errors import ConnectionFailed, JobsError, MetricsUnavailable, WorkerFailed
from ..metrics import JobCounts, require_prometheus
from ._common import WorkerState, logger
from .completer import Completer
from .database import WorkerDatabase
from .executor import Executor
from .fetcher import Fetcher
from .maintenance import Heartbeat, Listener
from .options import WorkerApp, WorkerOptions
from .periodic import PeriodicDeferrer

# Bounds on stopping, so that neither a hung statement nor a server that is down can keep a
# stopping worker alive: side roles (heartbeat, periodic deferrer, listener) get this long to
# end after their current statement; the last writes (outcomes, jobs handed back, the workers
# row) get this long between them; a cancelled worker gets this long in all.
_SIDE_ROLES_STOP_TIMEOUT = 5.0
_FINAL_WRITES_TIMEOUT = 5.0
_CANCELLED_STOP_TIMEOUT = 15.0
# A role that crashes (an exception it does not handle: a bug, a driver's surprise) is
# restarted after a backoff, unless it crashed this many times within the window: the worker
# then stops, and run() raises WorkerFailed (the CLI exits with a non-zero status).
_ROLE_MAX_CRASHES = 5
_ROLE_CRASH_WINDOW = 60.0


@dataclasses.dataclass(eq=False)
class _Role:
    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    #: How it stops: "cancel" (its connection is idle), or "between statements" once the
    #: worker shuts down (cancelled only if that takes too long).
    cancel_at_stop: bool = False
    crashes: deque[float] = dataclasses.field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Worker:
    """Runs jobs for an app. Use `App.run_worker` / `App.run_worker_async` (or the CLI)."""

    def __init__(self, app: WorkerApp, options: WorkerOptions | None = None) -> None:
        self.app = app
        self.options = options or WorkerOptions()
        self.name = self.options.name or f"{socket.gethostname()}-{id(self):x}"
        self.database = WorkerDatabase(app.connector, app.statements, self._takes_context)
        # No queue named means every queue.
        queues = list(self.options.queues) if self.options.queues else None
        self._state = WorkerState(app, self.database, self.options, self.name, queues)
        listen_settled = asyncio.Event()
        # A job waiting behind a lock becomes runnable once its predecessor's outcome is
        # written, and a retry once it is back in the queue: the completer brings news.
        self._completer = Completer(self._state, on_release=self._news)
        #: What this worker ran, counted for its metrics (``metrics_port``); else None.
        self.job_counts = JobCounts() if self.options.metrics_port is not None else None
        if self.job_counts is not None:
            require_prometheus()  # a missing extra fails here, before anything starts
        self._metrics_server: Any = None
        self._executor = Executor(
            self._state, self._completer, on_change=self._wake_fetcher, counts=self.job_counts
        )
        self._fetcher = Fetcher(self._state, self._executor, self._completer, listen_settled)
        self._heartbeat = Heartbeat(self._state, self._executor, news=self._news)
        self._listener = Listener(
            self._state,
            self._executor,
            self._heartbeat,
            news=self._news,
            settled=listen_settled,
            wake_fetcher=self._wake_fetcher,
            server_back=self._fetcher.server_back,
        )
        self._roles: list[_Role] = []
        # A role that kept crashing: the worker stops, and run() raises WorkerFailed.
        self._failure: tuple[str, BaseException] | None = None

    def _takes_context(self, task_name: str) -> bool:
        task = self.app.tasks.get(task_name)
        return task is not None and task.pass_context

    @property
    def worker_id(self) -> int:
        return self._state.worker_id

    @property
    def jobs_run(self) -> int:
        return self._executor.jobs_run

    # -- public --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming jobs; running jobs get ``shutdown_timeout`` seconds to finish."""
        state = self._state
        if state.stopping:
            logger.warning("Second stop request: cancelling the running jobs now")
            self._executor.cancel_running()
            return
        logger.info("Stop requested: claiming no more jobs", extra={"worker": self.name})
        state.stopping = True
        state.stop_requested.set()
        # Jobs claimed ahead never started: they go back to the queue.
        self._executor.give_back_ready()
        self._wake_fetcher()

    async def run(self) -> None:
        """Run until stopped (SIGINT/SIGTERM or `stop`), or drained with ``wait=False``.

        Cancelling the task that runs this (an application's lifespan, a ``TaskGroup``) stops
        the worker at once, cleanly: running jobs are cancelled and go back to the queue,
        outcomes are written, connections are returned, each step bounded; then the
        `CancelledError` propagates."""
        if not self.app.connector.can_run_worker:
            raise cannot_run_worker(self.app.connector)
        # Jobs start from the context of the code that runs the worker, each in a copy.
        self._executor.context = contextvars.copy_context()
        # Signals are handled from the start: a SIGTERM during start-up is a clean stop too.
        with self._signal_handlers():
            # The worker runs in a task of its own, stopped by flags, never by cancellation:
            # drivers await with asyncio.wait_for, which on Python 3.11 can lose a cancellation
            # (see sqla_jobs._aio), and a lost one must not leave the worker running.
            body = asyncio.create_task(self._run_body(), name=f"sqla_jobs.worker {self.name}")
            try:
                await asyncio.shield(body)
            except asyncio.CancelledError:
                if body.done():
                    raise
                await self._stop_cancelled(body)
                raise
        if self._failure is not None:
            name, error = self._failure
            raise WorkerFailed(
                f"Worker {self.name} stopped: its {name} failed with {error!r} (traceback in "
                "the log above). Its running jobs went back to the queue."
            ) from error

    # -- start and stop ------------------------------------------------------------------------

    async def _run_body(self) -> None:
        self.app.import_tasks()
        # Before the first statement: a port in use fails the start, with nothing registered.
        self._start_metrics()
        try:
            await self._run_serving()
        finally:
            await self._stop_metrics()

    async def _run_serving(self) -> None:
        state = self._state
        timeout = self.options.database_timeout
        try:
            await within(timeout, self.database.check_schema())
            state.worker_id = await within(
                timeout,
                self.database.register_worker(
                    name=self.name, queues=state.queues, concurrency=self.options.concurrency
                ),
            )
            await within(timeout, self._write_declared_limits())
        except TimeoutError:
            raise ConnectionFailed(
                f"PostgreSQL did not answer the worker's first statements within {timeout:g} "
                f"s ({self.app.connector.describe()}): check that the server is up and "
                "reachable, or raise database_timeout (--database-timeout)."
            ) from None
        logger.info(
            "Worker %s started (id %d, queues %s, concurrency %d)",
            self.name,
            state.worker_id,
            ", ".join(state.queues) if state.queues else "all",
            self.options.concurrency,
            extra=state.log_extra,
        )
        self._start_roles()
        try:
            await self._supervised(_Role("fetcher", self._fetcher.run))
            await self._fetcher.finish_claims()
            timeout_ = 1.0 if state.hurry else self.options.shutdown_timeout
            await self._executor.wait_for_running(timeout_)
        finally:
            if self._executor.running:  # only when the body itself failed
                self._executor.cancel_running()
                await asyncio.wait(list(self._executor.running.values()), timeout=1)
            await self._stop_roles()
            self._executor.give_back_ready()  # when the body itself failed
            await self._final_writes()
            logger.info(
                "Worker %s stopped after %d jobs",
                self.name,
                self._executor.jobs_run,
                extra=state.log_extra,
            )

    async def _write_declared_limits(self) -> None:
        """The limits the app declares in code (`App.configure_queue`), where the database
        holds others: written, and announced to the other workers."""
        declared = self.app.declared_limits
        if not declared:
            return
        stored = {(c.scope, c.name): c.limits for c in await self.database.list_controls()}
        for (scope, name), limits in declared.items():
            if stored.get((scope, name), Limits()) != limits:
                await self.database.set_limits(scope, name, limits)
                logger.info(
                    "Limits of %s %r set as the app declares them: %s",
                    scope,
                    name,
                    limits,
                    extra=self._state.log_extra,
                )

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics are served (host, port), once the worker has started; None
        without ``metrics_port``."""
        if self._metrics_server is None:
            return None
        host, port = self._metrics_server.server_address[:2]
        return str(host), int(port)

    def _start_metrics(self) -> None:
        if self.job_counts is None:
            return
        from ..metrics import serve, worker_registry

        options = self.options
        assert options.metrics_port is not None
        try:
            self._metrics_server = serve(
                worker_registry(self.job_counts, self.app.job_manager),
                port=options.metrics_port,
                host=options.metrics_host,
            )
        except OSError as exc:
            raise MetricsUnavailable(
                f"Cannot serve metrics on {options.metrics_host}:{options.metrics_port}: "
                f"{exc.strerror or exc}. Choose another metrics port (--metrics-port), or stop "
                "what uses it."
            ) from exc
        host, port = self.metrics_address or ("", 0)
        logger.info("Metrics at http://%s:%d/metrics", host, port, extra=self._state.log_extra)

    async def _stop_metrics(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            # shutdown() waits for the serving thread's loop (up to half a second).
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    def _start_roles(self) -> None:
        options = self.options
        # The completer and the heartbeat stop between statements when asked; the listener
        # (its own connection, idle) is cancelled.
        self._roles = [
            _Role("completer", self._completer.run),
            _Role("heartbeat", self._heartbeat.run),
        ]
        if options.periodic and options.wait and self.app.periodic_tasks:
            deferrer = PeriodicDeferrer(
                self.database,
                self.app.periodic_tasks.values(),
                database_timeout=options.database_timeout,
            )
            self._roles.append(
                _Role("periodic deferrer", lambda: deferrer.run(self._state.shutting_down))
            )
        if options.listen_notify and options.wait:
            self._roles.append(_Role("listener", self._listener.run, cancel_at_stop=True))
        else:
            self._listener.settled.set()
        for role in self._roles:
            role.task = asyncio.create_task(self._supervised(role), name=f"sqla_jobs.{role.name}")

    async def _supervised(self, role: _Role) -> None:
        """Run ``role``; after a crash, log it with its traceback and run it again after a
        backoff, or, after _ROLE_MAX_CRASHES within _ROLE_CRASH_WINDOW, stop the worker."""
        state = self._state
        while True:
            try:
                await role.run()
                return
            except Exception as exc:
                now = time.monotonic()
                role.crashes.append(now)
                while role.crashes and role.crashes[0] < now - _ROLE_CRASH_WINDOW:
                    role.crashes.popleft()
                crashes = len(role.crashes)
                if crashes >= _ROLE_MAX_CRASHES or state.shutting_down.is_set():
                    logger.critical(
                        "The worker's %s failed (%d times within %.0f s); stopping the worker",
                        role.name,
                        crashes,
                        _ROLE_CRASH_WINDOW,
                        exc_info=exc,
                        extra=state.log_extra,
                    )
                    if self._failure is None:
                        self._failure = (role.name, exc)
                    if not state.stopping:
                        self.stop()
                    return
                delay = state.retry_delay(crashes)
                logger.error(
                    "The worker's %s failed; restarting it in %.1f s (%d of %d crashes "
                    "allowed within %.0f s)",
                    role.name,
                    delay,
                    crashes,
                    _ROLE_MAX_CRASHES - 1,
                    _ROLE_CRASH_WINDOW,
                    exc_info=exc,
                    extra=state.log_extra,
                )
                await asyncio.sleep(delay)

    async def _stop_roles(self) -> None:
        """End the side roles, each bounded: a statement or a driver that hangs must not hang
        the stop. The listener is cancelled; the others stop between two statements, and are
        cancelled if they take too long."""
        self._state.shutting_down.set()
        self._heartbeat.wake.set()
        self._completer.close()
        tasks = [role.task for role in self._roles if role.task is not None]
        for role in self._roles:
            if role.cancel_at_stop and role.task is not None:
                await cancel_and_wait(role.task, _SIDE_ROLES_STOP_TIMEOUT)
        await self._listener.stop()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=_SIDE_ROLES_STOP_TIMEOUT)
        for task in stuck:
            logger.warning(
                "%s did not stop within %.0f s; cancelling it",
                task.get_name(),
                _SIDE_ROLES_STOP_TIMEOUT,
            )
            await cancel_and_wait(task, 1.0)

    async def _stop_cancelled(self, body: asyncio.Task[None]) -> None:
        """The task running `run` was cancelled: stop now, without waiting for running jobs,
        and wait (bounded; further cancellations change nothing) for the stop to finish."""
        logger.info(
            "Worker cancelled: stopping now, running jobs go back to the queue",
            extra=self._state.log_extra,
        )
        self._state.hurry = True
        if not self._state.stopping:
            self.stop()
        self._executor.cancel_running()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCELLED_STOP_TIMEOUT
        cancelled_body = False
        while not body.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                if cancelled_body:
                    logger.error(
                        "Worker %s did not stop within %.0f s of its cancellation; leaving it",
                        self.name,
                        _CANCELLED_STOP_TIMEOUT + 1,
                    )
                    return
                logger.error(
                    "Worker %s did not stop within %.0f s of its cancellation; cancelling it",
                    self.name,
                    _CANCELLED_STOP_TIMEOUT,
                )
                cancelled_body = True
                deadline = loop.time() + 1.0
                with contextlib.suppress(asyncio.CancelledError):
                    await cancel_and_wait(body, 1.0)
                continue
            # A second cancellation only repeats the first: the stop is under way, bounded.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({body}, timeout=remaining)
        if not body.cancelled() and (error := body.exception()) is not None:
            logger.error("Worker %s failed while stopping", self.name, exc_info=error)

    async def _final_writes(self) -> None:
        """Record the outcomes still pending, hand back the jobs this worker will not run,
        and remove its row: each bounded (a server that is down cannot hold up the stop), and
        what could not be written is logged (the stalled-job sweep of a live worker recovers
        those jobs after stalled_timeout)."""
        state, executor = self._state, self._executor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FINAL_WRITES_TIMEOUT

        def remaining() -> float:
            return max(deadline - loop.time(), 1.0)

        try:
            await within(remaining(), self._completer.flush())
        except TimeoutError:
            logger.error(
                "Could not record the outcomes of jobs %s before stopping: they stay 'doing' "
                "until another worker recovers them as stalled",
                self._completer.pending_job_ids,
                extra=state.log_extra,
            )
        interrupted = executor.interrupted + list(executor.running)
        if interrupted:
            # A sync task that ignored should_abort() still runs in its thread: its job must
            # not run elsewhere meanwhile. It goes back to the queue runnable only after
            # stalled_timeout (a CLI worker's process exits at once, ending the thread).
            lingering = await executor.threads_still_running()
            if lingering:
                logger.error(
                    "Jobs %s still run in their threads (their sync tasks did not return "
                    "when asked through should_abort()): they go back to the queue, to run "
                    "again in %.0f s (stalled_timeout), not before",
                    lingering,
                    self.options.stalled_timeout,
                    extra=state.log_extra,
                )
            try:
                await within(
                    remaining(),
                    self.database.requeue(
                        state.worker_id,
                        interrupted,
                        unstarted=executor.unstarted,
                        held=lingering,
                        held_for=self.options.stalled_timeout,
                    ),
                )
            except (JobsError, TimeoutError) as exc:
                logger.error(
                    "Could not put the interrupted jobs %s back in the queue (%s): they stay "
                    "'doing' until another worker recovers them as stalled",
                    interrupted,
                    state.describe(exc),
                    extra=state.log_extra,
                )
            else:
                logger.warning("Jobs %s were interrupted and go back to the queue", interrupted)
        try:
            await within(remaining(), self.database.unregister_worker(state.worker_id))
        except (JobsError, TimeoutError) as exc:
            logger.warning(
                "Could not remove this worker's row (%s); other workers remove it once it is "
                "stalled",
                state.describe(exc),
                extra=state.log_extra,
            )

    # -- wiring between roles ------------------------------------------------------------------

    def _news(self) -> None:
        """Something may have made jobs runnable: claim again."""
        self._fetcher.news()

    def _wake_fetcher(self) -> None:
        self._fetcher.changed.set()

    @contextlib.contextmanager
    def _signal_handlers(self) -> Any:
        if not self.options.install_signal_handlers or (
            threading.current_thread() is not threading.main_thread()
        ):
            yield
            return
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
