"""Declaring tasks: the ``@x.task`` and ``@x.periodic`` decorators that `App` and `Blueprint`
share, and `Blueprint`, which holds tasks declared in a module that has no app to import.

A library or a large code base declares its tasks on a blueprint; the application adds them
with ``app.add_tasks_from(blueprint, namespace="billing")``, which names each
``billing:<task name>`` and binds the task objects to the app, so that ``task.defer(...)``
works from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, overload

from .controls import RateLike
from .jobs import DEFAULT_QUEUE
from .periodic import PeriodicTask
from .retry import RetryStrategy
from .tasks import Task, TaskHost


class TaskRegistry:
    """Tasks and periodic schedules declared on an app or a blueprint.

    ``tasks`` maps each task name to its `Task`; ``periodic_tasks`` maps (task name, periodic
    id) to its `PeriodicTask`.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.periodic_tasks: dict[tuple[str, str], PeriodicTask] = {}

    def _app_of_tasks(self) -> TaskHost | None:
        """The app the tasks declared here defer through (None: not known yet)."""
        raise NotImplementedError

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
        timeout: float | None = None,
        concurrency_limit: int | None = None,
        rate_limit: RateLike | None = None,
        store_result: bool = True,
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
        timeout: float | None = None,
        concurrency_limit: int | None = None,
        rate_limit: RateLike | None = None,
        store_result: bool = True,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a sync or async function as a task: ``@app.task`` or ``@app.task(...)``.

        ``retry``: a job that raises runs again, up to ``retry`` more times at once, or as a
        `RetryStrategy` says (waits, which errors); by default it fails at once.

        ``timeout``: seconds a job may run; past them an async task is cancelled, a sync task
        sees ``should_abort()`` turn true, and the job fails with `JobTimeout` (or runs
        again, as ``retry`` says). None (the default): no limit.

        ``concurrency_limit``, ``rate_limit``: at most so many of the task's jobs running at
        once, started per period (``"100/s"``, ``"10/m"``), across all workers (see
        `sqla_jobs.controls`); each worker writes them to the database when it starts.

        ``store_result``: what a job returns (JSON, up to 1 MiB) is stored with it when it
        succeeds, for ``job_manager.get_result`` and ``wait_for``; False stores nothing
        (a return value is then not even encoded).
        """

        def register(function: Callable[..., Any]) -> Task:
            # Only None means "no name": '' (or 0) is a bad name, refused by Task.
            task_name = f"{function.__module__}.{function.__qualname__}" if name is None else name
            task = Task(
                function,
                app=self._app_of_tasks(),
                name=task_name,
                queue=queue,
                priority=priority,
                lock=lock,
                queueing_lock=queueing_lock,
                pass_context=pass_context,
                retry=retry,
                timeout=timeout,
                concurrency_limit=concurrency_limit,
                rate_limit=rate_limit,
                store_result=store_result,
            )
            self._add_task(task_name, task)
            return task

        return register(func) if func is not None else register

    def periodic(
        self,
        *,
        cron: str,
        periodic_id: str = "",
        kwargs: Mapping[str, Any] | None = None,
    ) -> Callable[[Task], Task]:
        """Defer a task on a cron schedule; goes above ``@app.task``::

            @app.periodic(cron="*/5 * * * *")
            @app.task
            def refresh(timestamp: int) -> None: ...

        Each tick defers one job, however many workers run, with ``kwargs`` plus
        ``timestamp``: the tick's time in unix seconds. ``cron`` has five fields, or six with
        seconds last (``"* * * * * */10"``), in UTC. ``periodic_id`` tells apart several
        schedules of one task. A bad expression, or a task that cannot take these arguments,
        raises here rather than at the first tick.
        """

        def register(task: Task) -> Task:
            if not isinstance(task, Task):
                raise TypeError(
                    f"@periodic(cron={cron!r}) decorates a task, not {task!r}: put it above "
                    "@app.task (or @blueprint.task) so that the function is a task first."
                )
            if not any(known is task for known in self.tasks.values()):
                raise ValueError(
                    f"Task {task.name!r} is not declared on {self!r}: use the periodic "
                    "decorator of the app or blueprint whose @task declared it."
                )
            self._add_periodic(PeriodicTask(task, cron, periodic_id, kwargs or {}))
            return task

        return register

    def check_task_name(self, key: str, func: Callable[..., Any]) -> None:
        existing = self.tasks.get(key)
        if existing is not None and existing.func is not func:
            raise ValueError(
                f"Two functions are registered under the task name {key!r}: "
                f"{existing.func!r} and {func!r}. Give one of them @app.task(name=...)."
            )

    def check_schedule(self, key: tuple[str, str]) -> None:
        if key in self.periodic_tasks:
            raise ValueError(
                f"Task {key[0]!r} already has a periodic schedule with periodic_id={key[1]!r}: "
                "give each schedule of one task its own periodic_id=..."
            )

    def _periodic_key(self, periodic: PeriodicTask) -> tuple[str, str]:
        return periodic.key

    def _add_task(self, key: str, task: Task) -> None:
        self.check_task_name(key, task.func)
        self.tasks[key] = task

    def _add_periodic(self, periodic: PeriodicTask) -> None:
        key = self._periodic_key(periodic)
        self.check_schedule(key)
        self.periodic_tasks[key] = periodic


class BlueprintHost(Protocol):
    """What a blueprint asks of the registries that added it (`sqla_jobs.App`): to check a
    new name first, then to take the task or schedule declared on the blueprint after it was
    added."""

    def check_task_name(self, key: str, func: Callable[..., Any]) -> None: ...

    def check_schedule(self, key: tuple[str, str]) -> None: ...

    def add_blueprint_task(self, blueprint: Blueprint, name: str, namespace: str) -> None: ...

    def add_blueprint_periodic(
        self, blueprint: Blueprint, key: tuple[str, str], namespace: str
    ) -> None: ...


class Blueprint(TaskRegistry):
    """Tasks declared without an app, for an app to add later under a namespace.

    ``@blueprint.task`` and ``@blueprint.periodic`` take the same arguments as the app's.
    ``app.add_tasks_from(blueprint, namespace="ns")`` registers each task as ``ns:<name>`` and
    binds it to the app; deferring one of its tasks before that raises `TaskNotFound`. Tasks
    declared on the blueprint later still reach the apps that added it.
    """

    def __init__(self) -> None:
        super().__init__()
        #: (app, namespace) of each ``add_tasks_from`` of this blueprint.
        self.added_to: list[tuple[BlueprintHost, str]] = []

    def __repr__(self) -> str:
        return f"<Blueprint tasks={len(self.tasks)}>"

    def _app_of_tasks(self) -> TaskHost | None:
        return None

    def _periodic_key(self, periodic: PeriodicTask) -> tuple[str, str]:
        # By the name the task was declared under: adding the blueprint renames the task.
        base_name = next(key for key, known in self.tasks.items() if known is periodic.task)
        return (base_name, periodic.periodic_id)

    # A task or schedule declared after the blueprint was added reaches those apps too.

    def _add_task(self, key: str, task: Task) -> None:
        for app, namespace in self.added_to:
            app.check_task_name(f"{namespace}:{key}", task.func)
        super()._add_task(key, task)
        for app, namespace in self.added_to:
            app.add_blueprint_task(self, key, namespace)

    def _add_periodic(self, periodic: PeriodicTask) -> None:
        base_name, periodic_id = key = self._periodic_key(periodic)
        for app, namespace in self.added_to:
            app.check_schedule((f"{namespace}:{base_name}", periodic_id))
        super()._add_periodic(periodic)
        for app, namespace in self.added_to:
            app.add_blueprint_periodic(self, key, namespace)
