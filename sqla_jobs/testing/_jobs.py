"""What an application's tests do with the queue: point the app at the test's database, run
the jobs it deferred with the real worker, and check what it deferred."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConnectorNotOpen
from ..jobs import Job
from ..manager import JobManager
from ..statuses import JobStatus

if TYPE_CHECKING:
    from ..app import App
    from ..connectors.base import BaseConnector
    from ..tasks import Task

__all__ = [
    "assert_deferred",
    "deferred_jobs",
    "deferred_jobs_async",
    "run_deferred_jobs",
    "run_deferred_jobs_async",
    "use_connector",
]

Statuses = JobStatus | str | Collection[JobStatus | str]

#: The worker that runs a test's jobs: it drains the queue and returns, leaves the test
#: runner's signal handlers alone, and needs no LISTEN (nothing else defers meanwhile).
_WORKER_OPTIONS: dict[str, Any] = {
    "wait": False,
    "install_signal_handlers": False,
    "listen_notify": False,
    "polling_interval": 0.05,
}
_PAGE = 1000


@contextlib.contextmanager
def use_connector(app: App, connector: BaseConnector) -> Iterator[App]:
    """Point ``app`` at ``connector`` inside the block, then give it back its own.

    Your code keeps deferring through the app it imports (``send_welcome.defer(...)``,
    ``app.configure_task(...)``): its tasks, ``app.job_manager`` and a worker of the app all
    use ``connector`` meanwhile. A `JobDeferrer` made before the block (``task.configure()``
    kept in a variable) keeps the connector it was made with."""
    saved = app.connector, app.job_manager
    app.connector = connector
    app.job_manager = app.job_manager.using(connector)
    try:
        yield app
    finally:
        app.connector, app.job_manager = saved


# -- running ---------------------------------------------------------------------------------


def run_deferred_jobs(app: App, *, timeout: float = 60.0, **worker_options: Any) -> list[Job]:
    """Run the jobs deferred so far with a real worker of ``app``, until none is left to run;
    return them as they ended (`run_deferred_jobs_async` from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_deferred_jobs() blocks, and was called inside a running event loop (an async "
            "test?): use `await sqla_jobs.testing.run_deferred_jobs_async(app)` there."
        )
    return asyncio.run(run_deferred_jobs_async(app, timeout=timeout, **worker_options))


async def run_deferred_jobs_async(
    # A bound of its own, not the caller's asyncio.timeout(): a test that forgets one must not
    # hang, and the error says what to do.
    app: App,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    **worker_options: Any,
) -> list[Job]:
    """Run the jobs deferred so far with a real worker of ``app`` (``wait=False``: until no
    job is left that can run now), and return them as they ended, oldest first.

    The jobs returned are those waiting (``todo``) when called, those of workflows that were
    ``blocked`` and no longer are (their parents ended), and those deferred while the worker
    ran (by the jobs themselves), each read back after the worker stopped: its
    ``status`` (``succeeded``, ``failed``...), ``last_error`` (the traceback of its last
    failed run) and ``attempts``. A job still ``todo`` did not run: it is scheduled later, or
    waits for a retry later. ``worker_options`` are `WorkerOptions` (``queues=["emails"]``
    runs one queue only). ``timeout`` bounds the run: past it the worker is stopped and
    TimeoutError raised.

    The app's connector is opened for the run if it is not open, and closed after. An app
    whose connector cannot run a worker (a sync one, e.g. on your Flask-SQLAlchemy engine)
    is run by a copy of it on a `PsycopgConnector` to the same database.
    """
    if "wait" in worker_options:
        raise TypeError(
            "run_deferred_jobs runs the worker with wait=False (until no job can run now) and "
            "returns; start a worker of your own (app.run_worker_async()) for one that waits"
        )
    options = {**_WORKER_OPTIONS, **worker_options}
    manager = app.job_manager
    async with contextlib.AsyncExitStack() as stack:
        try:
            before = await _all_jobs_async(manager)
        except ConnectorNotOpen:
            await app.open_async()
            stack.push_async_callback(app.close_async)
            before = await _all_jobs_async(manager)
        worker_app = app
        if not app.connector.can_run_worker:
            worker_app = app.with_connector(_worker_connector(app.connector))
            await worker_app.open_async()
            stack.push_async_callback(worker_app.close_async)
        try:
            await asyncio.wait_for(worker_app.run_worker_async(**options), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"run_deferred_jobs: the jobs were still running after {timeout:g} s, and the "
                "worker was stopped (a job that never returns? jobs that defer jobs for ever?). "
                "Pass timeout= for longer jobs."
            ) from None
        after = await _all_jobs_async(manager)
    waiting = {job.id for job in before.values() if job.status is JobStatus.TODO}
    released = {
        job.id
        for job in before.values()
        if job.status is JobStatus.BLOCKED
        and job.id in after
        and after[job.id].status is not JobStatus.BLOCKED
    }
    ran = waiting | released | (after.keys() - before.keys())
    return [after[job_id] for job_id in sorted(ran) if job_id in after]


def _worker_connector(connector: BaseConnector) -> BaseConnector:
    """An async connector to the database of ``connector``, which cannot run a worker."""
    from ..connectors.psycopg import PsycopgConnector

    url = connector.sqlalchemy_engine().url.set(drivername="postgresql")
    return PsycopgConnector(conninfo=url.render_as_string(hide_password=False), min_size=1)


async def _all_jobs_async(manager: JobManager) -> dict[int, Job]:
    jobs: dict[int, Job] = {}
    while True:
        page = await manager.list_jobs_async(limit=_PAGE, offset=len(jobs))
        jobs.update((job.id, job) for job in page)
        if len(page) < _PAGE:
            return jobs


# -- looking -----------------------------------------------------------------------------------


def deferred_jobs(
    app: App,
    *,
    task: Task | str | None = None,
    queue: str | None = None,
    status: Statuses | None = None,
    lock: str | None = None,
) -> list[Job]:
    """The jobs in ``app``'s database, oldest first, with their ``args``; only those of
    ``task`` (a task or its name), in ``queue``, in ``status`` (one or several) or with
    ``lock`` when given."""
    return _deferred(app.job_manager, _filters(task, queue, status, lock))


def _deferred(manager: JobManager, filters: dict[str, Any]) -> list[Job]:
    jobs: list[Job] = []
    while True:
        page = manager.list_jobs(**filters, limit=_PAGE, offset=len(jobs))
        jobs.extend(page)
        if len(page) < _PAGE:
            return jobs[::-1]


async def deferred_jobs_async(
    app: App,
    *,
    task: Task | str | None = None,
    queue: str | None = None,
    status: Statuses | None = None,
    lock: str | None = None,
) -> list[Job]:
    """`deferred_jobs` from async code (the app's connector open)."""
    filters = _filters(task, queue, status, lock)
    jobs: list[Job] = []
    while True:
        page = await app.job_manager.list_jobs_async(**filters, limit=_PAGE, offset=len(jobs))
        jobs.extend(page)
        if len(page) < _PAGE:
            return jobs[::-1]


def _filters(
    task: Task | str | None, queue: str | None, status: Statuses | None, lock: str | None
) -> dict[str, Any]:
    task_name = task if task is None or isinstance(task, str) else task.name
    return {"task_name": task_name, "queue": queue, "status": status, "lock": lock}


def assert_deferred(task: Task, /, **args: Any) -> Job:
    """Check that exactly one job of ``task`` was deferred with exactly these arguments (in
    any status), and return it; otherwise fail, listing the jobs that were deferred.

    ``unittest.mock.ANY`` matches any value of an argument.
    """
    __tracebackhide__ = True  # pytest shows the failure in the test, not in here
    manager = task.app.job_manager
    jobs = _deferred(manager, _filters(None, None, None, None))
    matching = [job for job in jobs if job.task_name == task.name and job.args == args]
    if len(matching) == 1:
        return matching[0]
    call = _call(task.name, args)
    where = manager.connector.describe()
    if not matching:
        raise AssertionError(f"No job {call} was deferred. {_listing(jobs, where)}")
    raise AssertionError(
        f"{len(matching)} jobs {call} were deferred, not one. {_listing(jobs, where)}"
    )


def _call(task_name: str, args: Mapping[str, Any]) -> str:
    return f"{task_name}({', '.join(f'{key}={value!r}' for key, value in args.items())})"


def _listing(jobs: list[Job], where: str) -> str:
    if not jobs:
        return f"No job at all was deferred (in {where})."
    lines = [f"The jobs deferred (in {where}), oldest first:"]
    lines += [
        f"  #{job.id} {_call(job.task_name, job.args)}: {job.status}, queue {job.queue!r}"
        for job in jobs
    ]
    return "\n".join(lines)
