"""`sqla-jobs jobs ...` end to end: real processes on the test's own fresh database.

Jobs are set up through the public API (and, for old or failed jobs, a direct UPDATE); every
command runs as ``python -m sqla_jobs`` in a subprocess, the way an operator runs it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_cli import (
    DEMO_APP,
    WorkerProcess,
    assert_one_line_error,
    cli,
    defer,
    job_status,
    listening,
    query,
    wait_for,
)

import sqla_jobs

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 12, in send\n'
    "    raise ValueError('mailbox full')\n"
    "ValueError: mailbox full\n"
)


@pytest.fixture
def app(db_url: str) -> Iterator[sqla_jobs.App]:
    """A defer-only app on the test database, to set jobs up."""
    app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=db_url))
    with app.open():
        yield app


def ok(db_url: str, *args: str) -> str:
    result = cli(db_url, "jobs", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def execute(db_url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute(sql, params)


def fail(db_url: str, job_id: int) -> None:
    execute(
        db_url,
        "UPDATE sqla_jobs_jobs SET status = 'failed', attempts = 3, finished_at = now(), "
        "last_error = %s WHERE id = %s",
        TRACEBACK,
        job_id,
    )


def test_jobs_list_prints_an_aligned_table_newest_first_with_each_error_in_one_line(
    db_url: str, app: sqla_jobs.App
) -> None:
    sent = app.configure_task("mail.send", queue="mail").defer(to="a@example.com")
    report = app.configure_task("reports.build", queue="reports").defer()
    later = app.configure_task("mail.send", queue="mail", schedule_in={"hours": 1}).defer()
    fail(db_url, sent)

    lines = ok(db_url, "list").splitlines()

    header = lines[0]
    assert header.split() == [
        "ID",
        "QUEUE",
        "TASK",
        "STATUS",
        "ATTEMPTS",
        "SCHEDULED/CREATED",
        "LAST",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:]] == [str(later), str(report), str(sent)]
    # Aligned: every column starts where its header does.
    status_column = header.index("STATUS")
    assert [line[status_column:].split()[0] for line in lines[1:]] == ["todo", "todo", "failed"]
    assert lines[1][header.index("SCHEDULED/CREATED") :].startswith("runs ")
    assert lines[2][header.index("SCHEDULED/CREATED") :].startswith("created ")
    assert lines[3][header.index("LAST ERROR") :] == "ValueError: mailbox full"

    failed = ok(db_url, "list", "--status", "failed").splitlines()
    assert [line.split()[0] for line in failed[1:]] == [str(sent)]
    in_mail = ok(db_url, "list", "--queue", "mail", "--task", "mail.send", "--limit", "1")
    assert [line.split()[0] for line in in_mail.splitlines()[1:]] == [str(later)]
    assert ok(db_url, "list", "--queue", "nowhere").strip() == "No jobs."


def test_jobs_show_prints_the_fields_the_history_and_the_whole_last_error(
    db_url: str, app: sqla_jobs.App
) -> None:
    job_id = app.configure_task("mail.send", lock="user-1").defer(to="a@example.com")
    fail(db_url, job_id)

    output = ok(db_url, "show", str(job_id))

    fields = dict(line.split(None, 1) for line in output.split("\n\n")[0].splitlines()[1:])
    assert fields["task"] == "mail.send"
    assert fields["status"] == "failed"
    assert fields["args"] == '{"to": "a@example.com"}'
    assert fields["lock"] == "user-1"
    assert fields["attempts"] == "3"
    history = output.split("history (oldest first):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[2] for line in history] == ["todo", "failed"]
    assert output.rstrip().endswith("  ValueError: mailbox full")
    assert "    raise ValueError('mailbox full')" in output  # the whole traceback


def test_jobs_counts_prints_jobs_per_queue_and_status_with_totals(
    db_url: str, app: sqla_jobs.App
) -> None:
    app.configure_task("a", queue="mail").batch_defer({}, {})
    app.configure_task("b", queue="reports").defer()

    lines = ok(db_url, "counts").splitlines()

    assert lines[0].split() == ["QUEUE", *(status.value for status in sqla_jobs.JobStatus), "TOTAL"]
    # todo doing succeeded failed cancelled aborting aborted blocked TOTAL
    assert lines[1].split() == ["mail", "2", "0", "0", "0", "0", "0", "0", "0", "2"]
    assert lines[2].split() == ["reports", "1", "0", "0", "0", "0", "0", "0", "0", "1"]
    assert lines[3].split() == ["(all)", "3", "0", "0", "0", "0", "0", "0", "0", "3"]


def test_jobs_cancel_retry_abort_and_delete_change_the_job_and_say_what_they_did(
    db_url: str, app: sqla_jobs.App
) -> None:
    job_id = app.configure_task("mail.send").defer()

    assert "cancelled" in ok(db_url, "cancel", str(job_id))
    assert job_status(db_url, job_id) == "cancelled"
    assert "back in the queue" in ok(db_url, "retry", str(job_id))
    assert job_status(db_url, job_id) == "todo"
    assert "cancelled" in ok(db_url, "abort", str(job_id))  # a waiting job: cancelled
    assert job_status(db_url, job_id) == "cancelled"
    assert "deleted" in ok(db_url, "delete", str(job_id))
    assert query(db_url, "SELECT count(*) FROM sqla_jobs_jobs")[0][0] == 0


def test_jobs_commands_refuse_in_one_line_a_missing_job_or_one_in_the_wrong_status(
    db_url: str, app: sqla_jobs.App
) -> None:
    job_id = app.configure_task("mail.send").defer()

    assert_one_line_error(cli(db_url, "jobs", "show", "424242"), "No job with id 424242")
    assert_one_line_error(cli(db_url, "jobs", "retry", "424242"), "No job with id 424242")
    assert_one_line_error(
        cli(db_url, "jobs", "retry", str(job_id)),
        f"job {job_id} is todo",
        "only failed, cancelled or aborted jobs",
    )
    ok(db_url, "cancel", str(job_id))
    assert_one_line_error(
        cli(db_url, "jobs", "cancel", str(job_id)),
        "only jobs that have not started (todo, or blocked in a workflow) can be cancelled",
    )
    bad_id = cli(db_url, "jobs", "show", "seven")
    assert bad_id.returncode == 2
    assert "'seven' is not a job id" in bad_id.stderr


def test_jobs_abort_makes_the_worker_stop_a_running_async_job(
    db_url: str,
    app: sqla_jobs.App,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    worker = start_worker(db_url, "--app", DEMO_APP, "--polling-interval", "0.2")
    wait_for(lambda: listening(db_url), "the worker to listen", worker=worker)
    job_id = app.configure_task("slow_async").defer(
        seconds=60, started=str(started), path=str(finished)
    )
    wait_for(started.exists, "the job to start", worker=worker, database_url=db_url)

    output = ok(db_url, "abort", str(job_id))

    assert "aborting" in output
    wait_for(
        lambda: job_status(db_url, job_id) == "aborted",
        "the job to be aborted",
        worker=worker,
        database_url=db_url,
    )
    assert not finished.exists()
    history = ok(db_url, "show", str(job_id)).split("history (oldest first):\n")[1]
    assert [line.split()[2] for line in history.split("\n\n")[0].splitlines()] == [
        "todo",
        "doing",
        "aborting",
        "aborted",
    ]
    assert worker.stop(signal.SIGTERM) == 0


def test_jobs_prune_deletes_jobs_finished_before_the_cutoff(
    db_url: str, app: sqla_jobs.App
) -> None:
    old, recent, waiting = app.configure_task("mail.send").batch_defer({}, {}, {})
    execute(
        db_url,
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() - interval '8 days' "
        "WHERE id = %s",
        old,
    )
    execute(
        db_url,
        "UPDATE sqla_jobs_jobs SET status = 'succeeded', finished_at = now() WHERE id = %s",
        recent,
    )

    output = ok(db_url, "prune", "--older-than", "7d")

    assert output.strip() == (
        "Deleted 1 job (succeeded, failed, cancelled, aborted) that finished more than 7d ago."
    )
    remaining = [row[0] for row in query(db_url, "SELECT id FROM sqla_jobs_jobs ORDER BY id")]
    assert remaining == [recent, waiting]
    bad = cli(db_url, "jobs", "prune", "--older-than", "7", "--status", "todo")
    assert bad.returncode == 2
    assert "'7' is not a duration" in bad.stderr


def test_defer_stores_tags_and_meta_and_jobs_list_and_counts_filter_by_tag(
    db_url: str, app: sqla_jobs.App
) -> None:
    tagged = defer(
        db_url, "write_file", "{}", "--tag=tenant:7", "--tag=plan:gold", '--meta={"r": 1}'
    )
    app.configure_task("write_file", tags=["tenant:8"]).defer()
    app.configure_task("write_file").defer()
    assert query(db_url, "SELECT tags, meta FROM sqla_jobs_jobs WHERE id = %s", tagged) == [
        (["tenant:7", "plan:gold"], {"r": 1})
    ]

    listed = ok(db_url, "list", "--tag", "tenant:7")
    lines = listed.splitlines()
    assert lines[0].split()[-3:] == ["TAGS", "LAST", "ERROR"]
    assert len(lines) == 2 and lines[1].split()[0] == str(tagged)
    assert "tenant:7,plan:gold" in lines[1]
    assert ok(db_url, "list", "--tag", "tenant:7", "--tag", "nobody").strip() == "No jobs."
    assert "TAGS" not in ok(db_url, "list", "--tag", "tenant:7", "--status", "failed")
    counts = ok(db_url, "counts", "--tag", "tenant:8").splitlines()
    assert counts[1].split()[:3] == ["default", "1", "0"]
    shown = ok(db_url, "show", str(tagged))
    assert "tenant:7, plan:gold" in shown and '{"r": 1}' in shown


def test_defer_unique_refuses_a_twin_or_prints_its_id_and_bad_options_are_usage_errors(
    db_url: str,
) -> None:
    first = defer(db_url, "write_file", '{"path": "a"}', "--unique")
    twin = cli(db_url, "defer", "write_file", '{"path": "a"}', "--unique")
    assert_one_line_error(twin, f"job {first} (todo) holds its unique key")
    assert defer(db_url, "write_file", '{"path": "a"}', "--unique", "--return-existing") == first
    keyed = defer(db_url, "write_file", '{"path": "b"}', "--unique-key=k", "--unique-period=3600")
    assert keyed != first

    for args, message in [
        (["--return-existing"], "--return-existing applies to unique jobs"),
        (["--tag", ""], "must not be empty"),
        (["--meta", "[1]"], "is a JSON array, not an object"),
        (["--unique-key", ""], "unique key must not be empty"),
    ]:
        result = cli(db_url, "defer", "write_file", "{}", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
    assert query(db_url, "SELECT count(*) FROM sqla_jobs_jobs") == [(2,)]


# -- workflows ---------------------------------------------------------------------------------


def test_workflows_show_and_cancel_a_workflow_and_jobs_list_filters_by_it(
    db_url: str, app: sqla_jobs.App
) -> None:
    """A chain charge -> (ship, email) -> summary: `workflows show` prints each job with what
    it runs after; a job's `jobs show` names its workflow; `jobs list --workflow` lists its
    jobs only; `workflows cancel` cancels what has not started."""
    step = app.configure_task
    run = app.defer_workflow(
        sqla_jobs.chain(
            step("shop.charge").step(order_id=1),
            sqla_jobs.group(step("shop.ship").step(order_id=1), step("shop.email").step()),
            step("shop.summary").step(),
        ),
        name="checkout of order 1",
    )
    app.configure_task("other.job").defer()
    charge, ship, email, summary = run.job_ids

    shown = cli(db_url, "workflows", "show", str(run.workflow_id))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"workflow  {run.workflow_id} (checkout of order 1)"
    assert lines[2].startswith("state     running: 1 todo, 3 blocked"), lines
    rows = {line.split()[0]: line.split() for line in lines[4:] if line[:1].isdigit()}
    assert rows[str(charge)][1:4] == ["shop.charge", "todo", "-"]
    assert rows[str(ship)][1:4] == ["shop.ship", "blocked", str(charge)]
    assert rows[str(summary)][1:4] == ["shop.summary", "blocked", f"{ship},{email}"]

    details = ok(db_url, "show", str(ship)).split("\n\n")[0].splitlines()
    fields = dict(line.split(None, 1) for line in details)
    assert fields["workflow"].startswith(f"{run.workflow_id} (sqla-jobs workflows show")
    listed = ok(db_url, "list", "--workflow", str(run.workflow_id)).splitlines()[1:]
    assert sorted(int(line.split()[0]) for line in listed) == sorted(run.job_ids)

    cancelled = cli(db_url, "workflows", "cancel", str(run.workflow_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Cancelled 4 jobs of workflow {run.workflow_id}" in cancelled.stdout
    assert job_status(db_url, summary) == "cancelled"
    assert job_status(db_url, charge) == "cancelled"

    missing = cli(db_url, "workflows", "show", "999999")
    assert_one_line_error(missing, "999999")
