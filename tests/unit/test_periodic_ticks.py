"""Periodic tasks without a database: the tick arithmetic (UTC, whole seconds, seconds field),
the job a tick becomes, and the checks ``@app.periodic`` makes when it is declared."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

import sqla_jobs
from sqla_jobs import queries
from sqla_jobs.periodic import PeriodicTask
from sqla_jobs.worker.database import periodic_params


def ts(*args: int) -> int:
    """Unix seconds of a UTC date and time."""
    return int(datetime.datetime(*args, tzinfo=datetime.UTC).timestamp())  # type: ignore[misc]


@pytest.fixture
def app() -> sqla_jobs.App:
    # Declaring tasks never connects: any DSN will do.
    return sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo="postgresql://nowhere"))


def schedule(app: sqla_jobs.App, cron: str, **options: Any) -> PeriodicTask:
    @app.periodic(cron=cron, **options)
    @app.task(name=f"tests.periodic.{len(app.tasks)}")
    def job(timestamp: int, **kwargs: Any) -> None: ...

    (periodic,) = (p for p in app.periodic_tasks.values() if p.task is job)
    return periodic


# -- tick arithmetic --------------------------------------------------------------------------


def test_latest_tick_is_the_tick_itself_when_called_on_it(app: sqla_jobs.App) -> None:
    every_5_min = schedule(app, "*/5 * * * *")
    assert every_5_min.latest_tick(ts(2030, 1, 1, 10, 5)) == ts(2030, 1, 1, 10, 5)


def test_latest_tick_between_ticks_is_the_one_before(app: sqla_jobs.App) -> None:
    every_5_min = schedule(app, "*/5 * * * *")
    assert every_5_min.latest_tick(ts(2030, 1, 1, 10, 9, 59) + 0.999) == ts(2030, 1, 1, 10, 5)


def test_next_tick_is_strictly_after(app: sqla_jobs.App) -> None:
    every_5_min = schedule(app, "*/5 * * * *")
    assert every_5_min.next_tick(ts(2030, 1, 1, 10, 5)) == ts(2030, 1, 1, 10, 10)
    assert every_5_min.next_tick(ts(2030, 1, 1, 10, 5) - 0.5) == ts(2030, 1, 1, 10, 5)


def test_ticks_between_is_open_below_and_closed_above(app: sqla_jobs.App) -> None:
    every_5_min = schedule(app, "*/5 * * * *")
    ticks = every_5_min.ticks_between(ts(2030, 1, 1, 10, 0), ts(2030, 1, 1, 10, 15))
    assert ticks == [ts(2030, 1, 1, 10, 5), ts(2030, 1, 1, 10, 10), ts(2030, 1, 1, 10, 15)]
    assert every_5_min.ticks_between(ts(2030, 1, 1, 10, 1), ts(2030, 1, 1, 10, 4)) == []


def test_a_sixth_field_counts_seconds(app: sqla_jobs.App) -> None:
    every_10_s = schedule(app, "* * * * * */10")
    start = ts(2030, 1, 1, 10, 0, 0)
    assert every_10_s.ticks_between(start, start + 30) == [start + 10, start + 20, start + 30]
    assert every_10_s.latest_tick(start + 19.5) == start + 10


def test_five_fields_tick_on_whole_minutes(app: sqla_jobs.App) -> None:
    every_minute = schedule(app, "* * * * *")
    assert every_minute.next_tick(ts(2030, 1, 1, 10, 0, 30)) == ts(2030, 1, 1, 10, 1, 0)


def test_ticks_are_in_utc_whatever_the_local_time_zone(
    app: sqla_jobs.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        midnight = schedule(app, "0 0 * * *")
        assert midnight.latest_tick(ts(2030, 6, 1, 3, 0)) == ts(2030, 6, 1, 0, 0)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_alias_is_accepted(app: sqla_jobs.App) -> None:
    hourly = schedule(app, "@hourly")
    assert hourly.next_tick(ts(2030, 1, 1, 10, 30)) == ts(2030, 1, 1, 11, 0)


# -- the job of a tick --------------------------------------------------------------------------


def test_a_tick_is_a_job_of_the_task_with_its_timestamp_and_options(app: sqla_jobs.App) -> None:
    @app.periodic(cron="*/5 * * * *", periodic_id="eu", kwargs={"region": "eu"})
    @app.task(name="reports.refresh", queue="reports", priority=3, lock="reports")
    def refresh(region: str, timestamp: int) -> None: ...

    tick = app.periodic_tasks[("reports.refresh", "eu")].tick(ts(2030, 1, 1))
    assert tick.key == ("reports.refresh", "eu", ts(2030, 1, 1))
    assert tick.spec.args == {"region": "eu", "timestamp": ts(2030, 1, 1)}
    assert (tick.spec.queue, tick.spec.priority, tick.spec.lock) == ("reports", 3, "reports")
    assert tick.spec.scheduled_at is None


def test_the_defer_statement_takes_exactly_the_parameters_the_manager_sends(
    app: sqla_jobs.App,
) -> None:
    tick = schedule(app, "* * * * *").tick(ts(2030, 1, 1))
    sql = queries.defer_periodic_jobs.sql
    assert set(re.findall(r"%\((\w+)\)s", sql)) == set(periodic_params([tick]))
    assert "ON CONFLICT ON CONSTRAINT uq_sqla_jobs_periodic_defers_tick DO NOTHING" in sql


def test_two_schedules_of_one_task_need_distinct_periodic_ids(app: sqla_jobs.App) -> None:
    @app.periodic(cron="0 * * * *", periodic_id="hourly")
    @app.periodic(cron="0 0 * * *", periodic_id="daily")
    @app.task(name="tests.twice")
    def twice(timestamp: int) -> None: ...

    assert set(app.periodic_tasks) == {("tests.twice", "hourly"), ("tests.twice", "daily")}
    with pytest.raises(ValueError, match="periodic_id"):
        app.periodic(cron="*/5 * * * *", periodic_id="daily")(twice)


# -- checks at declaration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "Invalid cron expression '61 \\* \\* \\* \\*'"),
        ("* * *", "Invalid cron expression"),
        ("every five minutes", "Invalid cron expression"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_a_bad_cron_expression_is_refused_at_declaration(
    app: sqla_jobs.App, cron: str, message: str
) -> None:
    @app.task(name="tests.cron")
    def job(timestamp: int) -> None: ...

    with pytest.raises(ValueError, match=message) as raised:
        app.periodic(cron=cron)(job)
    assert "tests.cron" in str(raised.value)
    assert "five fields" in str(raised.value), "the message says what is accepted"
    assert not app.periodic_tasks


def test_periodic_below_task_is_refused_with_the_order_to_use(app: sqla_jobs.App) -> None:
    def job(timestamp: int) -> None: ...

    with pytest.raises(TypeError, match=r"put it above @app\.task"):
        app.periodic(cron="* * * * *")(job)  # type: ignore[arg-type]


def test_a_task_of_another_app_is_refused(app: sqla_jobs.App) -> None:
    other = sqla_jobs.App(connector=app.connector)

    @other.task(name="tests.elsewhere")
    def job(timestamp: int) -> None: ...

    with pytest.raises(ValueError, match="not declared on"):
        app.periodic(cron="* * * * *")(job)


def test_a_task_without_a_timestamp_parameter_is_refused(app: sqla_jobs.App) -> None:
    @app.task(name="tests.no_timestamp")
    def job() -> None: ...

    with pytest.raises(TypeError, match="timestamp: int"):
        app.periodic(cron="* * * * *")(job)


def test_kwargs_the_task_does_not_take_are_refused(app: sqla_jobs.App) -> None:
    @app.task(name="tests.kwargs")
    def job(timestamp: int, region: str) -> None: ...

    with pytest.raises(TypeError, match="region"):
        app.periodic(cron="* * * * *")(job)  # region missing
    with pytest.raises(TypeError, match="colour"):
        app.periodic(cron="* * * * *", kwargs={"region": "eu", "colour": 1})(job)
    app.periodic(cron="* * * * *", kwargs={"region": "eu"})(job)


def test_a_task_with_context_takes_the_context_first(app: sqla_jobs.App) -> None:
    @app.periodic(cron="* * * * *")
    @app.task(name="tests.context", pass_context=True)
    def job(context: sqla_jobs.JobContext, timestamp: int) -> None: ...

    assert ("tests.context", "") in app.periodic_tasks


def test_kwargs_holding_timestamp_are_refused(app: sqla_jobs.App) -> None:
    @app.task(name="tests.ts")
    def job(**kwargs: Any) -> None: ...

    with pytest.raises(ValueError, match="must not hold 'timestamp'"):
        app.periodic(cron="* * * * *", kwargs={"timestamp": 1})(job)


def test_kwargs_that_are_not_json_are_refused_at_declaration(app: sqla_jobs.App) -> None:
    @app.task(name="tests.json")
    def job(timestamp: int, when: Any) -> None: ...

    with pytest.raises(sqla_jobs.InvalidJobArguments, match="'when'"):
        app.periodic(cron="* * * * *", kwargs={"when": object()})(job)


def test_with_connector_keeps_the_schedules_bound_to_the_new_app(app: sqla_jobs.App) -> None:
    periodic = schedule(app, "* * * * *")
    other = app.with_connector(sqla_jobs.PsycopgConnector(conninfo="postgresql://elsewhere"))
    copied = other.periodic_tasks[periodic.key]
    assert copied.task is other.tasks[periodic.task.name]
    assert copied.task.app is other
    assert (copied.cron, copied.periodic_id) == (periodic.cron, periodic.periodic_id)
    assert periodic.task.app is app
