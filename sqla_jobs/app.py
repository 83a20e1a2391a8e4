"""`App`: the object users create; it holds the connector and the registered tasks."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import queries
from .blueprints import Blueprint, TaskRegistry
from .connectors.base import BaseConnector, cannot_run_worker
from .controls import QUEUE, TASK, Limits, RateLike, check_name
from .jobs import DEFAULT_MAX_ARGS_BYTES, JobSpec, check_options
from .manager import JobManager
from .tasks import JobDeferrer, JobOptions, Task
from .tracing import Tracing
from .workflows import Item, OnParentFailure, Plan, Workflow, WorkflowRun

if TYPE_CHECKING:
    from .connectors.bind import Bind


class App(TaskRegistry):
    """A job queue application: a connector plus the tasks it knows.

    ``import_paths`` are modules the worker imports at start so that their ``@app.task``
    declarations register. Tasks are declared with ``@app.task`` (and scheduled with
    ``@app.periodic``), or on a `Blueprint` added with `add_tasks_from`.

    ``max_args_bytes``: the largest a job's arguments may be, as JSON (1 MiB by default); a
    bigger defer raises `InvalidJobArguments` and writes nothing.

    ``schema``: the PostgreSQL schema that holds the job tables (e.g. ``"jobs"``), named in
    every statement, so the connection's ``search_path`` need not include it; create the
    tables there with ``sqla_jobs.migrations.upgrade(url, schema="jobs")`` or
    ``sqla-jobs --schema jobs schema upgrade``. None (the default): the tables are found by
    the ``search_path`` (usually in ``public``).

    ``tracer_provider``: the OpenTelemetry SDK provider of the defer and process spans
    (`sqla_jobs.tracing`); None: the global one, once the application sets one. Without an
    SDK nothing is traced.
    """

    def __init__(
        self,
        *,
        connector: BaseConnector,
        import_paths: Iterable[str] = (),
        max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES,
        schema: str | None = None,
        tracer_provider: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(max_args_bytes, bool) or not isinstance(max_args_bytes, int):
            raise TypeError(f"max_args_bytes must be an int, not {max_args_bytes!r}")
        if max_args_bytes < 2:
            raise ValueError(
                f"max_args_bytes must be at least 2 (for '{{}}'), not {max_args_bytes}"
            )
        self.connector = connector
        self.import_paths = tuple(import_paths)
        #: Every statement, for the tables where ``schema`` says they are.
        self.statements = queries.for_schema(schema)
        self.job_manager = JobManager(
            connector,
            max_args_bytes=max_args_bytes,
            statements=self.statements,
            tracing=Tracing(tracer_provider),
            stores_result=self._stores_result,
        )
        # Queue limits declared in code (`configure_queue`); tasks carry their own.
        self._queue_limits: dict[str, Limits] = {}

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema of the job tables; None: found by the ``search_path``."""
        return self.statements.schema

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f" schema={self.schema!r}"
        return f"<App connector={type(self.connector).__name__}{schema} tasks={len(self.tasks)}>"

    # -- tasks ---------------------------------------------------------------------------------
    # ``@app.task`` and ``@app.periodic`` come from TaskRegistry (shared with Blueprint).

    def _app_of_tasks(self) -> App:
        return self

    def _stores_result(self, task_name: str) -> bool | None:
        """Whether the task stores its jobs' results; None for a task this app does not
        know."""
        task = self.tasks.get(task_name)
        return None if task is None else task.store_result

    def add_tasks_from(self, blueprint: Blueprint, *, namespace: str) -> None:
        """Register the tasks (and periodic schedules) of ``blueprint`` as
        ``<namespace>:<task name>``.

        The blueprint's task objects are bound to this app: ``task.defer(...)`` works from
        now on. A blueprint added to a second app (or under a second namespace) gives it
        copies, bound to it, and keeps its objects bound to the first. Nothing is registered
        if a name is already taken by another function.
        """
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(
                f"namespace must be a non-empty string, not {namespace!r}: its tasks are "
                "registered as '<namespace>:<task name>'."
            )
        if not isinstance(blueprint, Blueprint):
            raise TypeError(f"add_tasks_from takes a sqla_jobs.Blueprint, not {blueprint!r}")
        if any(app is self and ns == namespace for app, ns in blueprint.added_to):
            return
        # Check every name first: a clash, or a name no job can carry, leaves the app and the
        # blueprint unchanged.
        for name, task in blueprint.tasks.items():
            self.check_task_name(f"{namespace}:{name}", task.func)
            check_options(JobSpec(task_name=f"{namespace}:{name}", args={}))
        for name, periodic_id in blueprint.periodic_tasks:
            self.check_schedule((f"{namespace}:{name}", periodic_id))
        for name in blueprint.tasks:
            self.add_blueprint_task(blueprint, name, namespace)
        for key in blueprint.periodic_tasks:
            self.add_blueprint_periodic(blueprint, key, namespace)
        blueprint.added_to.append((self, namespace))

    def add_blueprint_task(self, blueprint: Blueprint, name: str, namespace: str) -> None:
        """Register task ``name`` of ``blueprint`` (added under ``namespace``) on this app:
        `add_tasks_from` does it for each task, and the blueprint for a task declared later."""
        task = blueprint.tasks[name]
        full_name = f"{namespace}:{name}"
        if task.is_bound:
            task = task.bound_to(self, name=full_name)
        else:
            task._bind(self, full_name)
        self._add_task(full_name, task)

    def add_blueprint_periodic(
        self, blueprint: Blueprint, key: tuple[str, str], namespace: str
    ) -> None:
        """Register the periodic schedule ``key`` of ``blueprint`` (added under ``namespace``)
        on this app, for its task already registered there."""
        periodic = blueprint.periodic_tasks[key]
        task = self.tasks[f"{namespace}:{key[0]}"]
        self._add_periodic(periodic if periodic.task is task else periodic.with_task(task))

    def configure_task(self, name: str, **options: Any) -> JobDeferrer:
        """Defer by task name, whether or not this process registered it (e.g. from a
        web app that does not import the worker's code)."""
        if "timeout" in options:
            raise TypeError(
                f"timeout is not an option of one job: give it where task {name!r} is "
                "declared, @app.task(timeout=...). The worker applies the timeout of the task "
                "it runs, to every job of the task."
            )
        task = self.tasks.get(name)
        if task is not None:
            return task.configure(**options)
        return Task(lambda: None, app=self, name=name, **_task_options(options)).configure(
            schedule_at=options.get("schedule_at"),
            schedule_in=options.get("schedule_in"),
            bind=options.get("bind"),
            tags=options.get("tags"),
            meta=options.get("meta"),
            unique=options.get("unique"),
            on_conflict=options.get("on_conflict", "raise"),
        )

    # -- workflows -----------------------------------------------------------------------------

    def workflow(
        self, *, name: str | None = None, on_parent_failure: OnParentFailure = "cancel"
    ) -> Workflow:
        """A workflow to build (`Workflow.add`) and defer in one transaction: each job starts
        once the jobs it depends on succeeded. ``on_parent_failure``: what a job does when
        one of them ends without succeeding, ``"cancel"`` (it and what depends on it are
        cancelled) or ``"run"`` (it runs anyway); `Workflow.add` can say it per edge."""
        return Workflow(
            self._defer_plan,
            self._defer_plan_async,
            name=name,
            on_parent_failure=on_parent_failure,
        )

    def defer_workflow(
        self,
        item: Item,
        *,
        name: str | None = None,
        on_parent_failure: OnParentFailure = "cancel",
        bind: Bind | None = None,
    ) -> WorkflowRun:
        """Defer ``item`` (a step, or a `chain`, `group` or `chord` of them) as a workflow,
        in one transaction (the caller's with ``bind``)."""
        workflow = self.workflow(name=name, on_parent_failure=on_parent_failure)
        workflow.add(item)
        return workflow.defer(bind=bind)

    async def defer_workflow_async(
        self,
        item: Item,
        *,
        name: str | None = None,
        on_parent_failure: OnParentFailure = "cancel",
        bind: Bind | None = None,
    ) -> WorkflowRun:
        """Async form of `defer_workflow` (``bind``: an AsyncSession or AsyncConnection)."""
        workflow = self.workflow(name=name, on_parent_failure=on_parent_failure)
        workflow.add(item)
        return await workflow.defer_async(bind=bind)

    def _manager_for(self, bind: Bind | None) -> JobManager:
        if bind is None:
            return self.job_manager
        # Imported here: it loads SQLAlchemy's ORM, which a worker never needs.
        from .connectors.bind import BindConnector

        return self.job_manager.using(BindConnector(bind, savepoint=False))

    def _defer_plan(self, plan: Plan, name: str | None, bind: Bind | None) -> WorkflowRun:
        return self._manager_for(bind).defer_workflow(plan, name)

    async def _defer_plan_async(
        self, plan: Plan, name: str | None, bind: Bind | None
    ) -> WorkflowRun:
        return await self._manager_for(bind).defer_workflow_async(plan, name)

    def import_tasks(self) -> None:
        for path in self.import_paths:
            importlib.import_module(path)

    # -- connectors ----------------------------------------------------------------------------

    def configure_queue(
        self,
        queue: str,
        *,
        concurrency_limit: int | None = None,
        rate_limit: RateLike | None = None,
    ) -> None:
        """Declare ``queue``'s limits in code: at most ``concurrency_limit`` of its jobs
        running at once and ``rate_limit`` started per period (``"100/s"``, ``"10/m"``),
        across all workers. Each worker writes them to the database when it starts (so
        the last worker started wins over `JobManager.set_queue_limits`); None: no limit."""
        name = check_name(QUEUE, queue)
        self._queue_limits[name] = Limits.of(concurrency_limit, rate_limit)

    @property
    def declared_limits(self) -> dict[tuple[str, str], Limits]:
        """The limits declared in code, by (scope, name): `configure_queue`'s, and the
        tasks' (``@app.task(concurrency_limit=..., rate_limit=...)``). Each worker writes
        them to the database when it starts."""
        declared = {(QUEUE, name): limits for name, limits in self._queue_limits.items()}
        for name, task in self.tasks.items():
            if task.limits != Limits():
                declared[(TASK, name)] = task.limits
        return declared

    def with_connector(self, connector: BaseConnector) -> App:
        """A new app with the same tasks and settings, bound to ``connector``; this app is
        unchanged."""
        other = App(
            connector=connector,
            import_paths=self.import_paths,
            max_args_bytes=self.job_manager.max_args_bytes,
            schema=self.schema,
            tracer_provider=self.job_manager.tracing.tracer_provider,
        )
        for name, task in self.tasks.items():
            other.tasks[name] = task.bound_to(other)
        for key, periodic in self.periodic_tasks.items():
            other.periodic_tasks[key] = periodic.with_task(other.tasks[key[0]])
        other._queue_limits.update(self._queue_limits)
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
    # Only a missing (or None) option takes the default: '' and False are bad values, refused
    # by Task like any other.
    defaults = JobOptions()
    queue, priority = options.get("queue"), options.get("priority")
    return {
        "queue": defaults.queue if queue is None else queue,
        "priority": defaults.priority if priority is None else priority,
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
