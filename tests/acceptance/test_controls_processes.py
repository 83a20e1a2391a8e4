"""Execution controls held by several real `sqla-jobs worker` processes at once: a
concurrency limit declared in the app's code, a rate limit set from the command line, a pause
and a resume from the command line (`apps/controls_app.py` records each job's run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import WorkerProcess, cli, wait_for

import sqla_jobs
from sqla_jobs import PsycopgConnector

CONTROLS_APP = "controls_app:app"
FAST = ("--app", CONTROLS_APP, "--polling-interval", "0.5", "--concurrency", "4")


def runs(directory: Path) -> list[tuple[float, float]]:
    found = []
    for path in directory.glob("*.run"):
        started, ended = path.read_text().split()
        found.append((float(started), float(ended)))
    return sorted(found)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def defer(database_url: str, task: str, count: int, directory: Path, **extra: float) -> None:
    async def go() -> None:
        app = sqla_jobs.App(connector=PsycopgConnector(conninfo=database_url))
        async with app.open_async():
            deferrer = app.configure_task(task, queue="limited" if task == "record" else "rated")
            await deferrer.batch_defer_async(
                *({"directory": str(directory), "n": n, **extra} for n in range(count))
            )

    asyncio.run(go())


def test_three_worker_processes_keep_to_a_concurrency_limit_declared_in_code(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [start_worker(db_url, *FAST, "--name", f"w{n}") for n in range(3)]
    defer(db_url, "record", 24, tmp_path, seconds=0.15)
    wait_for(lambda: len(runs(tmp_path)) == 24, "24 runs", 30, workers[0], db_url)
    # 3 workers x 4 slots, but never more than the queue's 2 at once.
    assert most_at_once(runs(tmp_path)) == 2
    listing = cli(db_url, "--app", CONTROLS_APP, "queues", "list")
    assert listing.returncode == 0, listing.stderr
    assert "limited" in listing.stdout and " 2 " in listing.stdout, listing.stdout


def test_a_rate_limit_and_a_pause_set_from_the_command_line_hold_across_processes(
    db_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    limit = cli(db_url, "--app", CONTROLS_APP, "queues", "limit", "rated", "--rate", "10/s")
    assert limit.returncode == 0, limit.stderr
    workers = [start_worker(db_url, *FAST, "--name", f"w{n}") for n in range(3)]
    began = time.time()
    defer(db_url, "rated", 40, tmp_path)
    wait_for(lambda: len(runs(tmp_path)) == 40, "40 runs", 30, workers[0], db_url)
    starts = [start for start, _ in runs(tmp_path)]
    # A full bucket of 10, then 10 a second: 40 take 3 s at least.
    assert starts[-1] - began >= 2.5, starts[-1] - began
    for index, started in enumerate(starts, 1):
        assert index <= 10 + 10 * (started - began) + 1, (index, started - began)

    paused = cli(db_url, "--app", CONTROLS_APP, "queues", "pause", "rated")
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    time.sleep(0.3)
    after = tmp_path / "after"
    after.mkdir()
    defer(db_url, "rated", 5, after)
    time.sleep(1.5)
    assert runs(after) == []
    resumed_at = time.time()
    resumed = cli(db_url, "--app", CONTROLS_APP, "queues", "resume", "rated")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: len(runs(after)) == 5, "the 5 runs after the resume", 15, workers[0])
    assert min(start for start, _ in runs(after)) - resumed_at < 2


@pytest.mark.parametrize("args", [["--rate", "fast"], ["--concurrency", "0"]])
def test_a_bad_limit_on_the_command_line_is_refused_naming_the_fix(
    db_url: str, args: list[str]
) -> None:
    result = cli(db_url, "queues", "limit", "q", *args)
    assert result.returncode == 2
    assert "100/s" in result.stderr or "at least 1" in result.stderr, result.stderr
