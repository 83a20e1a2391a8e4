"""The systems under test, each behind the same small interface.

The parent process (run.py) uses the *database side* of each system: create its schema, load
waiting jobs server-side, and read back from its own tables how many jobs finished and when.
The child process (child.py) uses the *client side*: run a worker, defer in batches, defer
one job per transaction. Every system runs no-op async jobs.

Timing of worker runs comes from the database: each job's recorded finish (``now()`` of the
statement that stored its outcome), read back from the system's own tables, so that a job
counts only once its outcome is stored (bench/steady.py turns them into a steady-state rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg

#: Task / entrypoint names. ``noop`` does nothing; ``probe`` calls the child's hook with the
#: job's arguments (a latency sample, or a count: the worker stops once it has started all
#: the jobs loaded). Worker runs use ``probe`` jobs; the defer scenarios ``noop``.
NOOP = "noop"
PROBE = "probe"


def attempts_column(cursor: Any) -> int:
    """Where the claim's rows carry the job's attempt, which the finish statements take with
    each id: found by name, as the claim's columns differ between versions (--sqla-jobs-path)."""
    return [column.name for column in cursor.description].index("attempts")


Hook = Callable[[float | None], None]


class System:
    """One job queue. Subclasses fill in the SQL and the client calls."""

    name = ""
    #: The table holding waiting jobs (checked for statistics in the no-statistics rows).
    jobs_table = ""
    #: Worker settings used by "default" (what a user gets) and "best" (the sweep's winner in
    #: the last full run: used when a run skips the sweep, ``--no-sweep``).
    default_settings: dict[str, Any] = {}
    best_settings: dict[str, Any] = {}
    #: Worker settings at concurrency 10, for the memory comparison.
    conc10_settings: dict[str, Any] = {}
    #: The settings the sweep probes (bench/throughput.py), default first.
    sweep_grid: list[dict[str, Any]] = [{}]

    def sweep_more(self, leader: dict[str, Any]) -> list[dict[str, Any]]:
        """Settings to probe once the grid is done and ``leader`` leads it: a leader at the
        grid's edge gets the next step, so that no system is stopped short of its best."""
        return []

    # -- database side (parent, sync psycopg) ---------------------------------------------

    def create_schema(self, url: str) -> None:
        raise NotImplementedError

    def load_sql(self, task: str) -> str:
        """INSERT of ``%(n)s`` waiting jobs for ``task``, generated server-side."""
        raise NotImplementedError

    def reset_sql(self) -> str:
        raise NotImplementedError

    def waiting_sql(self) -> str:
        raise NotImplementedError

    def finish_times_sql(self) -> str:
        """Epoch seconds of each job recorded as succeeded after %(since)s, in order."""
        raise NotImplementedError

    def finish_times(self, conn: psycopg.Connection[Any], since: float) -> list[float]:
        sql = self.finish_times_sql()
        rows = conn.execute(sql, {"since": since}).fetchall()
        return [float(row[0]) for row in rows]

    # -- client side (child) --------------------------------------------------------------

    async def run_worker(
        self,
        url: str,
        settings: dict[str, Any],
        *,
        drain: bool,
        hook: Hook | None,
        on_ready: Callable[[Callable[[], None]], None],
    ) -> None:
        """Run one worker until drained (``drain``) or until the stop callback handed to
        ``on_ready`` is called."""
        raise NotImplementedError

    async def batch_defer(self, url: str, n: int, calls: int) -> list[float]:
        """Seconds taken by each of ``calls`` batch defers of ``n`` jobs."""
        raise NotImplementedError

    def sync_deferrer(self, url: str) -> contextlib.AbstractContextManager[Callable[[], Any]]:
        """A context giving ``defer()``: one job per transaction through the system's
        SQLAlchemy-engine connector (or its own sync driver if it has none)."""
        raise NotImplementedError

    def async_deferrer(
        self, url: str
    ) -> contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[Any]]]:
        """An async context giving ``await defer()``: one job per transaction."""
        raise NotImplementedError

    def single_defer_sync(self, url: str, n: int, warmup: int, rounds: int) -> list[float]:
        """Seconds taken by each of ``rounds`` runs of ``n`` single defers."""
        with self.sync_deferrer(url) as defer:
            for _ in range(warmup):
                defer()
            durations = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(n):
                    defer()
                durations.append(time.perf_counter() - started)
            return durations

    async def single_defer_async(self, url: str, n: int, warmup: int, rounds: int) -> list[float]:
        async with self.async_deferrer(url) as defer:
            for _ in range(warmup):
                await defer()
            durations = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(n):
                    await defer()
                durations.append(time.perf_counter() - started)
            return durations

    async def latency_client(self, url: str) -> tuple[Callable[[float], Any], Callable[[], Any]]:
        """An async ``defer(t)`` for one probe job carrying ``t``, and an async ``close()``."""
        raise NotImplementedError


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("procrastinate", "pgqueuer", "sqla_jobs"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# sqla_jobs
# ---------------------------------------------------------------------------------------------

_SQLA_FINISHES = """
SELECT extract(epoch FROM finished_at)::float8 FROM sqla_jobs_jobs
WHERE status = 'succeeded' AND finished_at > to_timestamp(%(since)s)
ORDER BY 1
"""


class SqlaJobs(System):
    name = "sqla_jobs"
    jobs_table = "sqla_jobs_jobs"
    default_settings: dict[str, Any] = {}
    best_settings: dict[str, Any] = {"concurrency": 500, "fetch_batch": 500}
    conc10_settings: dict[str, Any] = {"concurrency": 10}
    # Default: concurrency 10, fetch_batch 1000, prefetch adaptive (up to fetch_batch).
    sweep_grid: list[dict[str, Any]] = [
        {},
        *({"concurrency": n, "fetch_batch": n} for n in (100, 300, 500)),
    ]

    def sweep_more(self, leader: dict[str, Any]) -> list[dict[str, Any]]:
        if leader.get("concurrency") == 500:
            return [{"concurrency": 1000, "fetch_batch": 1000}]
        return []

    def create_schema(self, url: str) -> None:
        from sqla_jobs import migrations

        migrations.upgrade(url)

    def load_sql(self, task: str) -> str:
        return (
            "INSERT INTO sqla_jobs_jobs (queue, task_name, args) "
            f"SELECT 'default', '{task}', '{{}}'::jsonb FROM generate_series(1, %(n)s)"
        )

    def reset_sql(self) -> str:
        return "TRUNCATE sqla_jobs_jobs, sqla_jobs_job_events, sqla_jobs_workers RESTART IDENTITY"

    def waiting_sql(self) -> str:
        return "SELECT count(*) FROM sqla_jobs_jobs WHERE status IN ('todo', 'doing')"

    def finish_times_sql(self) -> str:
        return _SQLA_FINISHES

    def _app(self, connector: Any, hook: Hook | None = None) -> Any:
        from sqla_jobs import App

        app = App(connector=connector)

        @app.task(name=NOOP)
        async def noop(**kwargs: Any) -> None:
            return None

        @app.task(name=PROBE)
        async def probe(t: float | None = None) -> None:
            assert hook is not None
            hook(t)

        return app

    async def run_worker(self, url, settings, *, drain, hook, on_ready):  # type: ignore[no-untyped-def]
        from sqla_jobs import PsycopgConnector, Worker, WorkerOptions

        _quiet()
        app = self._app(PsycopgConnector(conninfo=url), hook)
        async with app.open_async():
            worker = Worker(
                app, WorkerOptions(wait=not drain, install_signal_handlers=False, **settings)
            )
            on_ready(worker.stop)
            await worker.run()

    async def batch_defer(self, url: str, n: int, calls: int) -> list[float]:
        from sqla_jobs import PsycopgConnector

        app = self._app(PsycopgConnector(conninfo=url))
        task = app.tasks[NOOP]
        durations = []
        async with app.open_async():
            await task.batch_defer_async(*([{}] * 100))  # warm-up
            for _ in range(calls):
                args: list[dict[str, Any]] = [{}] * n
                started = time.perf_counter()
                await task.batch_defer_async(*args)
                durations.append(time.perf_counter() - started)
        return durations

    @contextlib.contextmanager
    def sync_deferrer(self, url: str) -> Iterator[Callable[[], Any]]:
        from sqla_jobs import SQLAlchemyPsycopg2Connector

        app = self._app(SQLAlchemyPsycopg2Connector(dsn=url))
        with app.open():
            yield app.tasks[NOOP].defer

    @contextlib.asynccontextmanager
    async def async_deferrer(self, url: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        from sqla_jobs import PsycopgConnector

        app = self._app(PsycopgConnector(conninfo=url))
        async with app.open_async():
            yield app.tasks[NOOP].defer_async

    async def latency_client(self, url: str) -> tuple[Callable[[float], Any], Callable[[], Any]]:
        from sqla_jobs import PsycopgConnector

        app = self._app(PsycopgConnector(conninfo=url))
        await app.open_async()
        task = app.tasks[PROBE]

        async def defer(t: float) -> None:
            await task.defer_async(t=t)

        return defer, app.close_async


# ---------------------------------------------------------------------------------------------
# Raw SQL floor: our schema and our statements, sent by a bare psycopg loop
# ---------------------------------------------------------------------------------------------


def _raw_defer_params() -> dict[str, Any]:
    return {
        "queue": "default",
        "task_name": NOOP,
        "priority": 0,
        "lock": None,
        "queueing_lock": None,
        "args": "{}",
        "scheduled_at": None,
        "trace_context": None,  # sqla_jobs since revision 0005 (older ones ignore it)
        **_NO_EXTRAS,
    }


#: The tags, meta and unique key of a job that uses none (sqla_jobs since revision 0007; older
#: ones ignore them).
_NO_EXTRAS = {"tags": None, "meta": None, "unique_key": None, "unique_statuses": None}


class RawFloor(SqlaJobs):
    """The same claim and finish statements as sqla_jobs, from a bare psycopg loop: no
    asyncio tasks, no pool, no Job objects. What PostgreSQL itself allows."""

    name = "raw_sql"
    default_settings: dict[str, Any] = {"batch": 100}
    best_settings: dict[str, Any] = {"batch": 3000}
    conc10_settings: dict[str, Any] = {"batch": 10}
    sweep_grid: list[dict[str, Any]] = [{"batch": n} for n in (100, 300, 1000)]

    def sweep_more(self, leader: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"batch": 3000}] if leader.get("batch") == 1000 else []

    async def run_worker(self, url, settings, *, drain, hook, on_ready):  # type: ignore[no-untyped-def]
        from sqla_jobs import queries

        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True

        batch = int(settings.get("batch", 100))
        # Sent as the worker sends them: prepared statements (sqla_jobs.queries.Query.prepared).
        with psycopg.connect(url, autocommit=True) as conn:
            worker_id = conn.execute(
                queries.register_worker.sql,
                {"name": "raw", "hostname": "bench", "pid": 0, "queues": None, "concurrency": 1},
            ).fetchone()[0]  # type: ignore[index]
            on_ready(stop)  # connected, as the other systems are when they say READY
            claim = queries.claim_jobs.sql
            finish = queries.finish_succeeded.sql
            while not stopped:
                params = {"worker_id": worker_id, "limit": batch}
                cursor = conn.execute(claim, params, prepare=True)
                rows = cursor.fetchall()
                if not rows:
                    if drain:
                        break
                    await asyncio.sleep(0.001)
                    continue
                if hook is not None:
                    for row in rows:  # the arguments come as JSON text, as the worker reads them
                        hook(json.loads(row[3]).get("t"))
                attempts = attempts_column(cursor)
                done = {
                    "worker_id": worker_id,
                    "ids": [row[0] for row in rows],
                    "attempts": [row[attempts] for row in rows],
                }
                conn.execute(finish, done, prepare=True)
                # The loop's statements block: yield once a batch, or the child's time bound
                # (a timer on this event loop) could never stop it.
                await asyncio.sleep(0)

    async def batch_defer(self, url: str, n: int, calls: int) -> list[float]:
        from sqla_jobs import queries

        params = {
            "queues": ["default"] * n,
            "task_names": [NOOP] * n,
            "priorities": [0] * n,
            "locks": [None] * n,
            "queueing_locks": [None] * n,
            "args": ["{}"] * n,
            "scheduled_ats": [None] * n,
            "trace_contexts": [None] * n,
            # sqla_jobs since revision 0007: NULL arrays, a NULL per job (older ones ignore them)
            "tags": None,
            "metas": None,
            "unique_keys": None,
            "unique_statuses": None,
        }
        durations = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for _ in range(calls):
                started = time.perf_counter()
                cursor = await conn.execute(queries.defer_jobs.sql, params)
                await cursor.fetchall()
                durations.append(time.perf_counter() - started)
        return durations

    async def copy_defer(self, url: str, n: int, calls: int) -> list[float]:
        durations = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for _ in range(calls):
                started = time.perf_counter()
                async with conn.cursor() as cursor:
                    copy_sql = "COPY sqla_jobs_jobs (queue, task_name, args) FROM STDIN"
                    async with cursor.copy(copy_sql) as copy:
                        for _ in range(n):
                            await copy.write_row(("default", NOOP, "{}"))
                durations.append(time.perf_counter() - started)
        return durations

    @contextlib.contextmanager
    def sync_deferrer(self, url: str) -> Iterator[Callable[[], Any]]:
        # The driver under SQLAlchemyPsycopg2Connector: psycopg2, one INSERT + COMMIT each.
        import psycopg2

        from sqla_jobs import queries

        sql, params = queries.defer_job.sql, _raw_defer_params()
        conn = psycopg2.connect(url)
        cursor = conn.cursor()

        def defer() -> None:
            cursor.execute(sql, params)
            cursor.fetchone()
            conn.commit()

        try:
            yield defer
        finally:
            conn.close()

    @contextlib.asynccontextmanager
    async def async_deferrer(self, url: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        # The driver under PsycopgConnector: psycopg 3 async, one autocommit INSERT each.
        from sqla_jobs import queries

        sql, params = queries.defer_job.sql, _raw_defer_params()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

            async def defer() -> None:
                await (await conn.execute(sql, params)).fetchone()

            yield defer

    async def run_latency_worker(
        self, url: str, hook: Hook, on_ready: Callable[[Callable[[], None]], None]
    ) -> None:
        """LISTEN, and on each notification claim and finish: the floor of defer-to-start."""
        from sqla_jobs import queries
        from sqla_jobs.schema import NOTIFY_CHANNEL

        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True

        on_ready(stop)
        async with (
            await psycopg.AsyncConnection.connect(url, autocommit=True) as listen,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        ):
            row = await (
                await conn.execute(
                    queries.register_worker.sql,
                    {"name": "raw", "hostname": "b", "pid": 0, "queues": None, "concurrency": 1},
                )
            ).fetchone()
            assert row is not None
            worker_id = row[0]
            await listen.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
            while not stopped:
                async for _ in listen.notifies(timeout=0.5, stop_after=1):
                    pass
                cursor = await conn.execute(
                    queries.claim_jobs.sql, {"worker_id": worker_id, "limit": 100}, prepare=True
                )
                rows = await cursor.fetchall()
                for job in rows:
                    hook(json.loads(job[3]).get("t"))
                if rows:
                    attempts = attempts_column(cursor)
                    done = {
                        "worker_id": worker_id,
                        "ids": [r[0] for r in rows],
                        "attempts": [r[attempts] for r in rows],
                    }
                    await conn.execute(queries.finish_succeeded.sql, done, prepare=True)

    async def latency_client(self, url: str) -> tuple[Callable[[float], Any], Callable[[], Any]]:
        from sqla_jobs import queries

        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        base = {
            "queue": "default",
            "task_name": PROBE,
            "priority": 0,
            "lock": None,
            "queueing_lock": None,
            "scheduled_at": None,
            "trace_context": None,
            **_NO_EXTRAS,
        }

        async def defer(t: float) -> None:
            await conn.execute(queries.defer_job.sql, {**base, "args": f'{{"t":{t!r}}}'})

        return defer, conn.close


# ---------------------------------------------------------------------------------------------
# Procrastinate (PsycopgConnector; SQLAlchemyPsycopg2Connector for sync defers)
# ---------------------------------------------------------------------------------------------

# The succeeded event is written by Procrastinate's own trigger when the job's status changes.
_PROC_FINISHES = """
SELECT extract(epoch FROM at)::float8 FROM procrastinate_events
WHERE type = 'succeeded' AND at > to_timestamp(%(since)s)
ORDER BY 1
"""


class Procrastinate(System):
    name = "procrastinate"
    jobs_table = "procrastinate_jobs"
    default_settings: dict[str, Any] = {}
    best_settings: dict[str, Any] = {"concurrency": 50}
    conc10_settings: dict[str, Any] = {"concurrency": 10}
    # Each of ``concurrency`` sub-workers fetches one job at a time (default 1).
    sweep_grid: list[dict[str, Any]] = [{}] + [{"concurrency": n} for n in (5, 10, 25, 50)]

    def sweep_more(self, leader: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"concurrency": 100}] if leader.get("concurrency") == 50 else []

    def _app(self, connector: Any, hook: Hook | None = None) -> Any:
        import procrastinate

        app = procrastinate.App(connector=connector)

        @app.task(name=NOOP)
        async def noop(**kwargs: Any) -> None:
            return None

        @app.task(name=PROBE)
        async def probe(t: float | None = None) -> None:
            assert hook is not None
            hook(t)

        return app

    def create_schema(self, url: str) -> None:
        import procrastinate

        async def apply() -> None:
            app = self._app(procrastinate.PsycopgConnector(conninfo=url))
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(apply())

    def load_sql(self, task: str) -> str:
        return (
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            f"SELECT 'default', '{task}', '{{}}'::jsonb FROM generate_series(1, %(n)s)"
        )

    def reset_sql(self) -> str:
        return (
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers, "
            "procrastinate_periodic_defers RESTART IDENTITY CASCADE"
        )

    def waiting_sql(self) -> str:
        return "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"

    def finish_times_sql(self) -> str:
        return _PROC_FINISHES

    async def run_worker(self, url, settings, *, drain, hook, on_ready):  # type: ignore[no-untyped-def]
        import procrastinate
        from procrastinate.worker import Worker

        _quiet()
        app = self._app(procrastinate.PsycopgConnector(conninfo=url), hook)
        async with app.open_async():
            worker = Worker(app, wait=not drain, install_signal_handlers=False, **settings)
            on_ready(worker.stop)
            await worker.run()

    async def batch_defer(self, url: str, n: int, calls: int) -> list[float]:
        import procrastinate

        app = self._app(procrastinate.PsycopgConnector(conninfo=url))
        durations = []
        async with app.open_async():
            task = app.tasks[NOOP]
            await task.batch_defer_async(*([{}] * 100))
            for _ in range(calls):
                args: list[dict[str, Any]] = [{}] * n
                started = time.perf_counter()
                await task.batch_defer_async(*args)
                durations.append(time.perf_counter() - started)
        return durations

    @contextlib.contextmanager
    def sync_deferrer(self, url: str) -> Iterator[Callable[[], Any]]:
        from procrastinate.contrib.sqlalchemy import SQLAlchemyPsycopg2Connector

        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3: name psycopg2 explicitly.
        dsn = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        app = self._app(SQLAlchemyPsycopg2Connector(dsn=dsn))
        with app.open():
            yield app.tasks[NOOP].defer

    @contextlib.asynccontextmanager
    async def async_deferrer(self, url: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        import procrastinate

        app = self._app(procrastinate.PsycopgConnector(conninfo=url))
        async with app.open_async():
            yield app.tasks[NOOP].defer_async

    async def latency_client(self, url: str) -> tuple[Callable[[float], Any], Callable[[], Any]]:
        import procrastinate

        app = self._app(procrastinate.PsycopgConnector(conninfo=url))
        await app.open_async()
        task = app.tasks[PROBE]

        async def defer(t: float) -> None:
            await task.defer_async(t=t)

        return defer, app.close_async


# ---------------------------------------------------------------------------------------------
# PgQueuer (its psycopg driver; never asyncpg)
# ---------------------------------------------------------------------------------------------

# PgQueuer deletes a finished job and logs it, in one statement, when its completion buffer
# flushes (every batch_size outcomes, or ~0.1 s): the log row's ``created`` is that moment.
_PGQ_FINISHES = """
SELECT extract(epoch FROM created)::float8 FROM pgqueuer_log
WHERE status = 'successful' AND created > to_timestamp(%(since)s)
ORDER BY 1
"""


class PgQueuer(System):
    name = "pgqueuer"
    jobs_table = "pgqueuer"
    default_settings: dict[str, Any] = {}
    best_settings: dict[str, Any] = {"batch_size": 500}
    conc10_settings: dict[str, Any] = {"batch_size": 10}
    # Default batch_size 10. Its other worker-wide option that bears on concurrency,
    # max_concurrent_tasks (default unlimited; at least twice batch_size), is a cap, probed
    # at its tightest once the best batch size is known.
    sweep_grid: list[dict[str, Any]] = [{}] + [{"batch_size": n} for n in (50, 100, 200, 500, 1000)]

    def sweep_more(self, leader: dict[str, Any]) -> list[dict[str, Any]]:
        batch = int(leader.get("batch_size", 10))
        more = [{"batch_size": batch, "max_concurrent_tasks": 2 * batch}]
        if batch == 1000:
            more.append({"batch_size": 2000})
        return more

    def create_schema(self, url: str) -> None:
        from pgqueuer import PsycopgDriver, Queries

        async def install() -> None:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            try:
                await Queries(PsycopgDriver(conn)).install()
            finally:
                await conn.close()

        asyncio.run(install())

    def load_sql(self, task: str) -> str:
        return (
            "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
            f"SELECT 0, '{task}', NULL, 'queued' FROM generate_series(1, %(n)s)"
        )

    def reset_sql(self) -> str:
        return "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY"

    def waiting_sql(self) -> str:
        return "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"

    def finish_times_sql(self) -> str:
        return _PGQ_FINISHES

    async def run_worker(self, url, settings, *, drain, hook, on_ready):  # type: ignore[no-untyped-def]
        from pgqueuer import PsycopgDriver, Queries, QueueManager
        from pgqueuer.domain.types import QueueExecutionMode

        _quiet()
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            qm = QueueManager(Queries(PsycopgDriver(conn)))

            @qm.entrypoint(NOOP)
            async def noop(job: Any) -> None:
                return None

            @qm.entrypoint(PROBE)
            async def probe(job: Any) -> None:
                assert hook is not None
                hook(float(job.payload) if job.payload else None)

            on_ready(qm.shutdown.set)
            mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
            await qm.run(mode=mode, **settings)
        finally:
            await conn.close()

    async def batch_defer(self, url: str, n: int, calls: int) -> list[float]:
        from pgqueuer import PsycopgDriver, Queries

        durations = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            queries = Queries(PsycopgDriver(conn))
            await queries.enqueue([NOOP] * 100, [None] * 100, [0] * 100)
            for _ in range(calls):
                started = time.perf_counter()
                await queries.enqueue([NOOP] * n, [None] * n, [0] * n)
                durations.append(time.perf_counter() - started)
        return durations

    @contextlib.contextmanager
    def sync_deferrer(self, url: str) -> Iterator[Callable[[], Any]]:
        # PgQueuer has no SQLAlchemy connector: its own sync psycopg driver.
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        with psycopg.connect(url, autocommit=True) as conn:
            queries = SyncQueries(SyncPsycopgDriver(conn))
            yield lambda: queries.enqueue(NOOP, None)

    @contextlib.asynccontextmanager
    async def async_deferrer(self, url: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        from pgqueuer import PsycopgDriver, Queries

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            queries = Queries(PsycopgDriver(conn))
            yield lambda: queries.enqueue(NOOP, None)

    async def latency_client(self, url: str) -> tuple[Callable[[float], Any], Callable[[], Any]]:
        from pgqueuer import PsycopgDriver, Queries

        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        queries = Queries(PsycopgDriver(conn))

        async def defer(t: float) -> None:
            await queries.enqueue(PROBE, repr(t).encode())

        return defer, conn.close


SYSTEMS: dict[str, System] = {
    s.name: s for s in (SqlaJobs(), Procrastinate(), PgQueuer(), RawFloor())
}
PEERS = ("procrastinate", "pgqueuer")
