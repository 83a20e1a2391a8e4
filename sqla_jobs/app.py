"""`App`: the object users create; it holds the connector and the registered tasks."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, overload

from .connectors.base import BaseConnector, cannot_run_worker
from .jobs import DEFAULT_QUEUE
from .manager import JobManager
from .retry import RetryStrategy
from .tasks import JobDeferrer, JobOptions, Task


class App:
    """A job queue application: a connector plus the tasks it knows.

    ``import_paths`` are modules the worker imports at start so that their ``@app.task``
    declarations register.
    """

    def __init__(self, *, connector: BaseConnector, import_paths: Iterable[str] = ()) -> None:
        self.connector = connector
        self.import_paths = tuple(import_paths)
        self.tasks: dict[str, Task] = {}
        self.job_manager = JobManager(connector)

    def __repr__(self) -> str:
        return f"<App connector={type(self.connector).__name__} tasks={len(self.tasks)}>"

    # -- tasks ---------------------------------------------------------------------------------

    @overload
    def task(
        self,
        func: Callable[..., Any],
        /,
    ) -> Task: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        lock: str | None = None,
        queueing_lock: str | None = None,
        pass_context: bool = False,
        retry: int | RetryStrategy | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        lock: str | None = None,
        queueing_lock: str | None = None,
        pass_context: bool = False,
        retry: int | RetryStrategy | None = None,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a sync or async function as a task: ``@app.task`` or ``@app.task(...)``.

        ``retry``: a job that raises runs again, up to ``retry`` more times at once, or as a
        `RetryStrategy` says (waits, which errors); by default it fails at once.
        """

        def register(function: Callable[..., Any]) -> Task:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            task = Task(
                function,
                app=self,
                name=task_name,
                queue=queue,
                priority=priority,
                lock=lock,
                queueing_lock=queueing_lock,
                pass_context=pass_context,
                retry=retry,
            )
            self._add_task(task)
            return task

        return register(func) if func is not None else register

    def _add_task(self, task: Task) -> None:
        existing = self.tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            raise ValueError(
                f"Two functions are registered under the task name {task.name!r}: "
                f"{existing.func!r} and {task.func!r}. Give one of them @app.task(name=...)."
            )
        self.tasks[task.name] = task

    def configure_task(self, name: str, **options: Any) -> JobDeferrer:
        """Defer by task name, whether or not this process registered it (e.g. from a
        web app that does not import the worker's code)."""
        task = self.tasks.get(name)
        if task is not None:
            return task.configure(**options)
        return Task(lambda: None, app=self, name=name, **_task_options(options)).configure(
            schedule_at=options.get("schedule_at"),
            schedule_in=options.get("schedule_in"),
            bind=options.get("bind"),
        )

    def import_tasks(self) -> None:
        for path in self.import_paths:
            importlib.import_module(path)

    # -- connectors ----------------------------------------------------------------------------

    def with_connector(self, connector: BaseConnector) -> App:
        """A new app with the same tasks, bound to ``connector``; this app is unchanged."""
        other = App(connector=connector, import_paths=self.import_paths)
        for task in self.tasks.values():
            other.tasks[task.name] = task.bound_to(other)
        return other

    def open(self) -> App:
        """Open the connector's pool: ``app.open()`` or ``with app.open(): ...``."""
        self.connector.open()
        return self

    def close(self) -> None:
        self.connector.close()

    def __enter__(self) -> App:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open_async(self) -> _AsyncOpen:
        """``await app.open_async()`` or ``async with app.open_async(): ...``."""
        return _AsyncOpen(self)

    async def close_async(self) -> None:
        await self.connector.close_async()

    # -- worker --------------------------------------------------------------------------------

    async def run_worker_async(self, **options: Any) -> None:
        """Run a worker until stopped (or, with ``wait=False``, until the queue is drained).
        Options: see `sqla_jobs.worker.WorkerOptions`."""
        from .worker import Worker, WorkerOptions  # the worker layer sits above the app

        if not self.connector.can_run_worker:
            raise cannot_run_worker(self.connector)
        worker = Worker(self, WorkerOptions(**options))
        await worker.run()

    def run_worker(self, **options: Any) -> None:
        """Blocking form of `run_worker_async`, for scripts."""
        asyncio.run(self._open_and_run(options))

    async def _open_and_run(self, options: dict[str, Any]) -> None:
        if not self.connector.can_run_worker:
            raise cannot_run_worker(self.connector)
        async with self.open_async():
            await self.run_worker_async(**options)


def _task_options(options: dict[str, Any]) -> dict[str, Any]:
    defaults = JobOptions()
    return {
        "queue": options.get("queue") or defaults.queue,
        "priority": options.get("priority") or defaults.priority,
        "lock": options.get("lock"),
        "queueing_lock": options.get("queueing_lock"),
    }


class _AsyncOpen:
    """Lets ``open_async()`` be awaited or used with ``async with``."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __await__(self) -> Generator[Any, None, App]:
        return self._open().__await__()

    async def _open(self) -> App:
        await self.app.connector.open_async()
        return self.app

    async def __aenter__(self) -> App:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.app.close_async()
