"""Actions on many jobs at once (the dashboard's bulk actions): one statement for the action
and one to tell skipped jobs from missing ones, whatever their number; the same rules as the
one-job actions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import sqla_jobs
from sqla_jobs import operations as ops


@pytest.fixture
def app(db_url: str) -> Iterator[sqla_jobs.App]:
    made = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=db_url))
    yield made
    made.close()


def count_statements(app: sqla_jobs.App, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    fetch_all = app.connector.fetch_all

    def recording(query: Any, params: Any = None) -> Any:
        sent.append(query.name)
        return fetch_all(query, params)

    monkeypatch.setattr(app.connector, "fetch_all", recording)
    return sent


def set_status(db_url: str, ids: list[int], status: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sqla_jobs_jobs SET status = %s, finished_at = now() WHERE id = ANY(%s)",
            [status, ids],
        )


def test_a_bulk_cancel_of_many_jobs_takes_two_statements(
    app: sqla_jobs.App, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = app.configure_task("t").batch_defer(*([{}] * 500))
    finished = app.configure_task("t").batch_defer({}, {})
    set_status(db_url, finished, "succeeded")
    sent = count_statements(app, monkeypatch)

    result = app.job_manager.run(ops.act_on_jobs("cancel", [*waiting, *finished, 10**9]))

    assert sent == ["cancel_jobs", "existing_job_ids"]
    assert (result.done, result.skipped, result.gone) == (waiting, finished, [10**9])
    assert {job.status for job in app.job_manager.list_jobs(limit=1000)} == {
        sqla_jobs.JobStatus.CANCELLED,
        sqla_jobs.JobStatus.SUCCEEDED,
    }


@pytest.mark.parametrize(
    ("action", "start", "done", "end"),
    [
        ("abort", "todo", True, "cancelled"),
        ("abort", "doing", True, "aborting"),
        ("abort", "succeeded", False, "succeeded"),
        ("retry", "failed", True, "todo"),
        ("retry", "todo", False, "todo"),
        ("delete", "failed", True, None),
        ("delete", "doing", False, "doing"),
        ("cancel", "doing", False, "doing"),
    ],
)
def test_bulk_actions_follow_the_one_job_rules(
    app: sqla_jobs.App, db_url: str, action: str, start: str, done: bool, end: str | None
) -> None:
    (job_id,) = app.configure_task("t").batch_defer({})
    if start != "todo":
        set_status(db_url, [job_id], start)

    result = app.job_manager.run(ops.act_on_jobs(action, [job_id]))

    assert (result.done, result.skipped) == (([job_id], []) if done else ([], [job_id]))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status::text FROM sqla_jobs_jobs WHERE id = %s", [job_id]
        ).fetchone()
    assert (row[0] if row else None) == end


def test_a_bulk_retry_that_a_queueing_lock_refuses_says_which_and_retries_the_rest(
    app: sqla_jobs.App, db_url: str
) -> None:
    first = app.configure_task("t", queueing_lock="once").defer()
    other = app.configure_task("t").defer()
    set_status(db_url, [first, other], "failed")
    app.configure_task("t", queueing_lock="once").defer()  # now waiting: holds the lock

    result = app.job_manager.run(ops.act_on_jobs("retry", [first, other]))

    assert result.done == [other]
    assert [job_id for job_id, _ in result.refused] == [first]
    assert "queueing_lock 'once'" in result.refused[0][1]


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="cancel, abort, retry, delete"):
        next(ops.act_on_jobs("explode", [1]))
