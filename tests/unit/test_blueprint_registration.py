"""Blueprints without a database: tasks declared with no app, added later under a namespace,
and the errors for the ways this goes wrong."""

from __future__ import annotations

import pytest

import sqla_jobs


def new_app() -> sqla_jobs.App:
    # Declaring and registering tasks never connects: any DSN will do.
    return sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo="postgresql://nowhere"))


def test_blueprint_tasks_are_registered_under_the_namespace_and_bound_to_the_app() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.task(name="send", queue="mail", retry=2)
    def send(to: str) -> None: ...

    @bp.task
    def plain() -> None: ...

    app = new_app()
    app.add_tasks_from(bp, namespace="mail")

    assert set(app.tasks) == {"mail:send", f"mail:{__name__}.{plain.func.__qualname__}"}
    assert app.tasks["mail:send"] is send, "the blueprint's own object is bound, not a copy"
    assert send.name == "mail:send"
    assert send.app is app
    assert send.options.queue == "mail"
    assert send.retry is not None
    assert send.configure(priority=3).task_name == "mail:send"


def test_deferring_a_blueprint_task_before_it_is_added_says_to_call_add_tasks_from() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.task(name="send")
    def send(to: str) -> None: ...

    with pytest.raises(sqla_jobs.TaskNotFound, match=r"add_tasks_from\(blueprint") as raised:
        send.defer(to="a@example.com")
    assert isinstance(raised.value, sqla_jobs.JobsError)
    assert "'send'" in str(raised.value)
    with pytest.raises(sqla_jobs.TaskNotFound):
        send.configure(queue="other")
    assert send("x") is None, "calling the function itself needs no app"
    assert not send.is_bound


def test_blueprint_periodic_schedules_are_registered_under_the_namespaced_task() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.periodic(cron="*/5 * * * *", periodic_id="p", kwargs={"region": "eu"})
    @bp.task(name="refresh")
    def refresh(region: str, timestamp: int) -> None: ...

    app = new_app()
    app.add_tasks_from(bp, namespace="reports")

    periodic = app.periodic_tasks[("reports:refresh", "p")]
    assert periodic.task is refresh
    assert periodic.cron == "*/5 * * * *"
    assert periodic.tick(0).spec.task_name == "reports:refresh"


def test_blueprint_periodic_checks_the_cron_at_declaration() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.task(name="refresh")
    def refresh(timestamp: int) -> None: ...

    with pytest.raises(ValueError, match="Invalid cron expression"):
        bp.periodic(cron="*/0 * * * *")(refresh)


def test_tasks_declared_after_the_blueprint_was_added_reach_the_app() -> None:
    bp = sqla_jobs.Blueprint()
    app = new_app()
    app.add_tasks_from(bp, namespace="late")

    @bp.periodic(cron="* * * * *")
    @bp.task(name="tick")
    def tick(timestamp: int) -> None: ...

    assert app.tasks["late:tick"] is tick
    assert tick.app is app
    assert ("late:tick", "") in app.periodic_tasks


def test_a_name_clash_registers_nothing() -> None:
    app = new_app()

    @app.task(name="ns:b")
    def taken() -> None: ...

    bp = sqla_jobs.Blueprint()

    @bp.task(name="a")
    def a() -> None: ...

    @bp.task(name="b")
    def b() -> None: ...

    with pytest.raises(ValueError, match="'ns:b'"):
        app.add_tasks_from(bp, namespace="ns")
    assert set(app.tasks) == {"ns:b"}
    assert app.tasks["ns:b"] is taken
    assert not a.is_bound and a.name == "a", "the blueprint is unchanged"
    assert not bp.added_to


def test_adding_a_blueprint_twice_to_one_app_under_one_namespace_changes_nothing() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.task(name="a")
    def a() -> None: ...

    app = new_app()
    app.add_tasks_from(bp, namespace="ns")
    app.add_tasks_from(bp, namespace="ns")
    assert app.tasks == {"ns:a": a}


def test_a_second_app_gets_copies_and_the_blueprint_objects_stay_with_the_first() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.periodic(cron="0 * * * *")
    @bp.task(name="a")
    def a(timestamp: int) -> None: ...

    first, second = new_app(), new_app()
    first.add_tasks_from(bp, namespace="one")
    second.add_tasks_from(bp, namespace="two")

    assert a.app is first and a.name == "one:a"
    copy = second.tasks["two:a"]
    assert copy is not a and copy.app is second and copy.func is a.func
    assert second.periodic_tasks[("two:a", "")].task is copy
    assert first.periodic_tasks[("one:a", "")].task is a


@pytest.mark.parametrize("namespace", ["", None])
def test_the_namespace_must_be_a_non_empty_string(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace must be a non-empty string"):
        new_app().add_tasks_from(sqla_jobs.Blueprint(), namespace=namespace)


def test_add_tasks_from_takes_a_blueprint() -> None:
    with pytest.raises(TypeError, match="Blueprint"):
        new_app().add_tasks_from(new_app(), namespace="ns")  # type: ignore[arg-type]


def test_blueprint_task_names_clash_like_app_task_names() -> None:
    bp = sqla_jobs.Blueprint()

    @bp.task(name="same")
    def one() -> None: ...

    with pytest.raises(ValueError, match="Two functions are registered under the task name"):

        @bp.task(name="same")
        def two() -> None: ...


def test_blueprint_is_exported() -> None:
    assert "Blueprint" in sqla_jobs.__all__
