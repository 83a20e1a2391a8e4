"""No SQL text is ever built from what users pass: every statement that reaches the driver is
one of the statements rendered when the app was made (or a claim of that app with its limit
written in, or the COPY of new jobs), whatever the task names, queues, locks, arguments and
filters; the values travel as parameters only. Watched at the driver (psycopg's cursors), so
that a statement built anywhere in sqla_jobs would show."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import sqla_jobs
from sqla_jobs import queries

# Values that would change a statement if they ever became part of its text.
hostile_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=8, max_size=40
).map(lambda text: f"'\"%$:;--{text}")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)


class SentSql:
    """Every SQL text psycopg's sync and async cursors receive, from the test's thread (the
    test-database server creates the next databases from a thread of its own), while
    installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        test_thread = threading.get_ident()

        class Sent(list[str]):
            def append(self, text: str) -> None:
                if threading.get_ident() == test_thread:
                    super().append(text)

        sent = self.texts = Sent()

        def wrap(cls: Any, method: str) -> None:
            original = getattr(cls, method)

            if method == "copy":

                def copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
                    sent.append(str(statement))
                    return original(self, statement, *args, **kwargs)

                monkeypatch.setattr(cls, method, copy)
            else:

                def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                    sent.append(str(query))
                    return original(self, query, *args, **kwargs)

                monkeypatch.setattr(cls, method, execute)

        for cls in (psycopg.Cursor, psycopg.AsyncCursor):
            wrap(cls, "execute")
            wrap(cls, "copy")
        for cls in (psycopg.Connection, psycopg.AsyncConnection):
            wrap(cls, "execute")


@pytest.fixture
def sent_sql(monkeypatch: pytest.MonkeyPatch) -> Iterator[SentSql]:
    yield SentSql(monkeypatch)


def known_statement(statements: queries.Statements) -> re.Pattern[str]:
    """Every text the app may send: its rendered statements, its claims with any limit, the
    COPY of new jobs, and the connectors' own fixed commands (LISTEN on the channel)."""
    texts = [re.escape(query.sql) for query in queries.ALL]
    for in_queues in (False, True):
        claim = statements.claim_query(queries.LIMIT_MARKER, in_queues=in_queues).sql
        texts.append(re.escape(claim).replace(str(queries.LIMIT_MARKER), r"\d+"))
    for columns in (queries.COPY_COLUMNS, queries.COPY_COLUMNS_WITH_TAGS):
        copy_columns = ", ".join(f'"{column}"' for column in columns)
        texts.append(re.escape(f"COPY {statements.jobs_table} ({copy_columns}) FROM STDIN"))
    texts.append(re.escape(f'LISTEN "{sqla_jobs.schema.NOTIFY_CHANNEL}"'))
    return re.compile("|".join(f"(?:{text})" for text in texts))


@pytest.mark.timeout(180)
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    # Each example runs a worker: a failure is reported as found, not shrunk for minutes.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    task_name=hostile_text,
    queue=hostile_text,
    lock=hostile_text,
    queueing_lock=hostile_text,
    args=st.dictionaries(hostile_text, json_values, max_size=4),
)
async def test_what_users_pass_reaches_the_server_as_parameters_only(
    db_url: str,
    sent_sql: SentSql,
    task_name: str,
    queue: str,
    lock: str,
    queueing_lock: str,
    args: dict[str, Any],
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:  # what an earlier example left
        conn.execute("DELETE FROM sqla_jobs_jobs")
        conn.execute("DELETE FROM sqla_jobs_workers")
    sent_sql.texts.clear()
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    sync_app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector(conninfo=db_url))
    received: list[dict[str, Any]] = []

    @app.task(name=task_name)
    def record(**kwargs: Any) -> None:
        received.append(kwargs)

    deferrer = app.configure_task(task_name, queue=queue, lock=lock)
    async with app.open_async():
        await deferrer.defer_async(**args)
        await app.configure_task(task_name, queue=queue, queueing_lock=queueing_lock).defer_async(
            **args
        )
        with pytest.raises(sqla_jobs.AlreadyEnqueued):
            await app.configure_task(task_name, queueing_lock=queueing_lock).defer_async()
        many = [args] * (app.job_manager.copy_threshold + 1)  # COPY
        await app.configure_task(task_name, queue=queue).batch_defer_async(*many)
        sync_app.configure_task(task_name, queue=queue).batch_defer(args, args)
        sync_app.close()
        assert await app.job_manager.list_jobs_async(queue=queue, task_name=task_name, lock=lock)
        await asyncio.wait_for(
            app.run_worker_async(queues=[queue], wait=False, install_signal_handlers=False), 30
        )
    assert received and received[0] == args

    # Watched: the defers, the COPY, the list, the claims and the finishes (a WITH: the
    # finish releases workflow dependents in the same statement) all went by.
    watched = {text.split()[0] for text in sent_sql.texts}
    assert {"INSERT", "COPY", "SELECT", "WITH", "DELETE"} <= watched, watched
    assert any(text.startswith("WITH finished AS") for text in sent_sql.texts)
    known = known_statement(app.statements)
    sent = [text for text in sent_sql.texts if not known.fullmatch(text)]
    assert sent == [], "statements the app did not render at start"
    for value in (task_name, queue, lock, queueing_lock, *args):
        assert not any(value in text for text in sent_sql.texts)
