"""Tasks: the functions a worker runs, and the way jobs for them are deferred."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .controls import Limits, RateLike
from .errors import TaskNotFound
from .jobs import (
    DEFAULT_QUEUE,
    JobSpec,
    OnConflict,
    Unique,
    check_on_conflict,
    check_options,
    check_tags,
    dump_meta,
    unique_option,
)
from .manager import JobManager
from .retry import RetryStrategy, retry_strategy
from .task_controls import check_timeout
from .workflows import Step, step_of

if TYPE_CHECKING:
    from .connectors.bind import Bind

logger = logging.getLogger("sqla_jobs.tasks")


class TaskHost(Protocol):
    """What a task needs of the app that holds it (`sqla_jobs.App` is one): the job manager
    its jobs are deferred through."""

    @property
    def job_manager(self) -> JobManager: ...


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """What a deferred job carries besides its arguments."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    lock: str | None = None
    queueing_lock: str | None = None
    scheduled_at: datetime.datetime | None = None
    #: Labels stored with each job, to find it by (``list_jobs(tags=...)``).
    tags: tuple[str, ...] | None = None
    #: A JSON object stored with each job, for its task (``JobContext.meta``) and for people.
    meta: Mapping[str, Any] | None = None
    #: Makes each job unique (`Unique`): a second one is refused while the first exists.
    unique: Unique | None = None
    #: A unique job whose key is taken: ``"raise"`` `AlreadyEnqueued`, or
    #: ``"return_existing"``: the defer returns the id of the job holding the key.
    on_conflict: OnConflict = "raise"


def _schedule(
    schedule_at: datetime.datetime | None, schedule_in: Mapping[str, float] | None
) -> datetime.datetime | None:
    if schedule_at is not None and schedule_in is not None:
        raise ValueError("Pass schedule_at or schedule_in, not both.")
    if schedule_in is not None:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(**schedule_in)
    if schedule_at is not None and schedule_at.tzinfo is None:
        raise ValueError(
            f"schedule_at={schedule_at!r} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5))."
        )
    return schedule_at


class JobDeferrer:
    """A task with its job options fixed: ``task.configure(...)`` returns one.

    With ``bind`` (a SQLAlchemy ``Session``, ``Connection``, ``AsyncSession`` or
    ``AsyncConnection``) the job is written in that transaction: it exists for workers once
    the caller commits, and not at all if the caller rolls back.
    """

    def __init__(
        self, app: TaskHost, task_name: str, options: JobOptions, bind: Bind | None = None
    ) -> None:
        self.app = app
        self.task_name = task_name
        self.options = options
        self.bind = bind
        self._manager = app.job_manager
        self._extras = (
            options.tags is not None or options.meta is not None or options.unique is not None
        )
        if bind is not None:
            # Imported here: it loads SQLAlchemy's ORM and asyncio layers, which a worker on
            # a driver connector never needs.
            from .connectors.bind import BindConnector

            savepoint = options.queueing_lock is not None or options.unique is not None
            self._manager = app.job_manager.using(BindConnector(bind, savepoint=savepoint))

    def _spec(self, kwargs: Mapping[str, Any]) -> JobSpec:
        o = self.options
        # Positional, and the tags, meta and unique options only when given: a batch builds
        # one spec per job, and each keyword costs.
        spec = JobSpec(
            self.task_name, kwargs, o.queue, o.priority, o.lock, o.queueing_lock, o.scheduled_at
        )
        if self._extras:
            spec.tags, spec.meta, spec.unique = o.tags, o.meta, o.unique
            spec.on_conflict = o.on_conflict
        return spec

    def defer(self, /, **kwargs: Any) -> int:
        """Write one job (its own transaction) and return its id (with
        ``on_conflict="return_existing"``, maybe the id of the unique job already there)."""
        return self._manager.defer(self._spec(kwargs))

    async def defer_async(self, /, **kwargs: Any) -> int:
        return await self._manager.defer_async(self._spec(kwargs))

    def step(self, /, **kwargs: Any) -> Step:
        """A job of a workflow with these options (`sqla_jobs.App.workflow`), not deferred on
        its own; `InvalidJobOptions` for a queueing lock, a unique key or ``bind`` (pass it to
        the workflow's defer), which a workflow's steps cannot have."""
        return step_of(self._spec(kwargs), bound=self.bind is not None)

    def batch_defer(self, *kwargs: Mapping[str, Any]) -> list[int]:
        """Write many jobs in one statement; all or none are written."""
        return self._manager.defer_many([self._spec(k) for k in kwargs])

    async def batch_defer_async(self, *kwargs: Mapping[str, Any]) -> list[int]:
        return await self._manager.defer_many_async([self._spec(k) for k in kwargs])


class Task:
    """A function registered on an app with ``@app.task``; call ``defer`` to queue a job.

    A task declared on a `Blueprint` has no app until ``app.add_tasks_from(blueprint, ...)``
    binds it (and gives it its namespaced name); deferring before that raises `TaskNotFound`.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        app: TaskHost | None,
        name: str,
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
    ) -> None:
        # A name or option that no job could carry fails here, where the task is declared,
        # rather than at its first defer (or in a worker that cannot find the task).
        check_options(
            JobSpec(
                task_name=name,
                args={},
                queue=queue,
                priority=priority,
                lock=lock,
                queueing_lock=queueing_lock,
            )
        )
        self.func = func
        self._app = app
        self.name = name
        self.pass_context = pass_context
        #: When a job that raised runs again (None: never); see `RetryStrategy`.
        self.retry = retry_strategy(retry)
        #: Seconds a job of this task may run before it is stopped and fails with
        #: `JobTimeout` (or is retried, as ``retry`` says); None: no limit.
        self.timeout = check_timeout(name, timeout)
        #: Limits of the task's jobs across all workers, written to the database by each
        #: worker at start (`sqla_jobs.controls`); `Limits()`: none declared.
        self.limits = Limits.of(concurrency_limit, rate_limit)
        if not isinstance(store_result, bool):
            raise TypeError(
                f"store_result of task {name!r} must be True or False, not {store_result!r}"
            )
        #: Whether a job's return value is stored as its result (`JobManager.get_result`).
        self.store_result = store_result
        self.is_async = inspect.iscoroutinefunction(func)
        self.options = JobOptions(
            queue=queue, priority=priority, lock=lock, queueing_lock=queueing_lock
        )

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.options.queue!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, without a job."""
        return self.func(*args, **kwargs)

    @property
    def app(self) -> TaskHost:
        """The app whose database this task's jobs go to."""
        if self._app is None:
            raise TaskNotFound(
                f"Task {self.name!r} is declared on a blueprint that no app has added yet, so "
                "its jobs have no database to go to. Call app.add_tasks_from(blueprint, "
                "namespace=...) (e.g. where the app is created) before deferring it."
            )
        return self._app

    @property
    def is_bound(self) -> bool:
        """Whether an app holds this task (False for a blueprint task not added yet)."""
        return self._app is not None

    def _bind(self, app: TaskHost, name: str) -> None:
        """Attach a blueprint's task to the app that adds it, under its namespaced name."""
        o = self.options
        check_options(JobSpec(task_name=name, args={}, queue=o.queue, priority=o.priority))
        self._app = app
        self.name = name

    def bound_to(self, app: TaskHost, *, name: str | None = None) -> Task:
        """The same task registered on another app (see `App.with_connector`), under the same
        name or ``name``."""
        o = self.options
        return Task(
            self.func,
            app=app,
            name=self.name if name is None else name,
            queue=o.queue,
            priority=o.priority,
            lock=o.lock,
            queueing_lock=o.queueing_lock,
            pass_context=self.pass_context,
            retry=self.retry,
            timeout=self.timeout,
            concurrency_limit=self.limits.concurrency_limit,
            rate_limit=self.limits.rate_limit,
            store_result=self.store_result,
        )

    def retry_delay(self, attempts: int, exception: BaseException) -> float | None:
        """Seconds before a job that raised ``exception`` on its ``attempts``-th run runs
        again, or None: it fails. A strategy that raises fails the job rather than losing it."""
        if self.retry is None:
            return None
        try:
            return self.retry.delay(attempts, exception)
        except Exception:
            logger.exception("Retry strategy of task %r raised; the job fails", self.name)
            return None

    def configure(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        lock: str | None = None,
        queueing_lock: str | None = None,
        schedule_at: datetime.datetime | None = None,
        schedule_in: Mapping[str, float] | None = None,
        bind: Bind | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        unique: bool | Unique | None = None,
        on_conflict: OnConflict = "raise",
    ) -> JobDeferrer:
        """Override the task's job options for the jobs deferred through the result.

        ``bind``: defer in the caller's own SQLAlchemy transaction (see `JobDeferrer`).
        ``tags``: short labels to find the jobs by (``list_jobs(tags=[...])``); ``meta``: a
        JSON object stored with each job, which its task reads as ``context.meta``.
        ``unique``: True (one job per task and arguments while it waits or runs) or a
        `Unique`; a second job is refused with `AlreadyEnqueued`, or, with
        ``on_conflict="return_existing"``, the defer returns the existing job's id.
        Bad tags, meta or unique options raise `InvalidJobOptions` here.
        """
        o = self.options
        if tags is not None:
            check_tags(tags, self.name)
        dump_meta(self.name, meta)  # refuses what cannot be stored, saying why
        options = JobOptions(
            queue=o.queue if queue is None else queue,
            priority=o.priority if priority is None else priority,
            lock=o.lock if lock is None else lock,
            queueing_lock=o.queueing_lock if queueing_lock is None else queueing_lock,
            scheduled_at=_schedule(schedule_at, schedule_in),
            tags=None if tags is None else tuple(tags),
            meta=meta,
            unique=unique_option(unique),
            on_conflict=on_conflict,
        )
        check_on_conflict(options.on_conflict, options.unique, self.name)
        return JobDeferrer(self.app, self.name, options, bind)

    def _deferrer(self) -> JobDeferrer:
        return JobDeferrer(self.app, self.name, self.options)

    def defer(self, /, **kwargs: Any) -> int:
        """Queue one job for this task (its own transaction); returns the job id."""
        return self._deferrer().defer(**kwargs)

    async def defer_async(self, /, **kwargs: Any) -> int:
        return await self._deferrer().defer_async(**kwargs)

    def step(self, /, **kwargs: Any) -> Step:
        """A job of a workflow (`sqla_jobs.App.workflow`, `chain`, `group`, `chord`), not
        deferred on its own."""
        return self._deferrer().step(**kwargs)

    def batch_defer(self, *kwargs: Mapping[str, Any]) -> list[int]:
        """Queue one job per argument dict, in one statement; returns their ids in order."""
        return self._deferrer().batch_defer(*kwargs)

    async def batch_defer_async(self, *kwargs: Mapping[str, Any]) -> list[int]:
        return await self._deferrer().batch_defer_async(*kwargs)
