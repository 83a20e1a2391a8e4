"""Task names and options at registration, fuzzed: ``@app.task(name=...)`` (and a blueprint's)
takes any name a job can carry, and refuses the others at once, with `InvalidJobOptions`
naming the problem, rather than at the first defer or in a worker that cannot find the task.
What it accepts round-trips through a real worker: tests/integration/test_task_names.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sqla_jobs
from sqla_jobs.jobs import MAX_NAME_BYTES, JobSpec, check_options

settings.register_profile(
    "sqla_jobs_registration_fuzz", max_examples=500, deadline=None, derandomize=True
)
FUZZ = settings.get_profile("sqla_jobs_registration_fuzz")

HOSTILE_NAMES = [
    "o'brien",
    "a$$b",
    "x.job",
    "a\\b",
    "new\nline",
    "Robert'); DROP TABLE sqla_jobs_jobs;--",
    "ns:task",
    " ",
    "n" * MAX_NAME_BYTES,
]
BAD_NAMES: list[tuple[Any, str]] = [
    (42, "must be a string, not int"),
    (b"send", "must be a string, not bytes"),
    (["send"], "must be a string, not list"),
    (True, "must be a string, not bool"),
    ("a\x00b", "NUL"),
    ("a\ud800", "lone surrogate"),
    ("n" * (MAX_NAME_BYTES + 1), "1,001 bytes"),
    ("€" * 334, "1,002 bytes"),
]

# Falsy names ("", 0, b"", []) have their own test below: they are taken for no name.
names = st.one_of(
    st.text(min_size=1, max_size=30),
    st.text(st.characters(codec="utf-8"), min_size=995, max_size=1005),
    st.sampled_from(HOSTILE_NAMES),
    st.integers().filter(bool),
    st.floats().filter(bool),
    st.binary(min_size=1, max_size=5),
    st.lists(st.text(max_size=3), min_size=1, max_size=2),
)


def _app() -> sqla_jobs.App:
    return sqla_jobs.App(connector=sqla_jobs.PsycopgConnector())  # never opened


def _job_can_carry(name: object) -> bool:
    try:
        check_options(JobSpec(task_name=name, args={}))  # type: ignore[arg-type]
    except sqla_jobs.InvalidJobOptions:
        return False
    return True


def _function() -> None:
    return None


@given(name=names, blueprint=st.booleans())
@example(name="a\x00", blueprint=False)
@example(name="a\udfff", blueprint=True)
@FUZZ
def test_a_task_name_is_registered_if_a_job_can_carry_it_else_refused_at_once(
    name: Any, blueprint: bool
) -> None:
    registry: sqla_jobs.App | sqla_jobs.Blueprint = sqla_jobs.Blueprint() if blueprint else _app()

    if _job_can_carry(name):
        task = registry.task(name=name)(_function)
        assert task.name == name
        assert registry.tasks == {name: task}
    else:
        with pytest.raises(sqla_jobs.InvalidJobOptions, match="task name"):
            registry.task(name=name)(_function)
        assert registry.tasks == {}


@pytest.mark.parametrize(("name", "match"), BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_a_name_no_job_can_carry_is_refused_naming_the_problem(name: Any, match: str) -> None:
    app = _app()

    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match) as caught:
        app.task(name=name)(_function)
    if isinstance(name, str):  # configure_task looks the name up first: a list is unhashable
        with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
            app.configure_task(name)

    assert isinstance(caught.value, ValueError)
    assert app.tasks == {}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"queue": 7}, "queue .* must be a string, not int"),
        ({"queue": ""}, "queue .* must not be empty"),
        ({"queue": "q" * (MAX_NAME_BYTES + 1)}, "1,001 bytes"),
        ({"lock": b"user"}, "lock .* must be a string, not bytes"),
        ({"queueing_lock": "x\x00"}, "queueing_lock .*NUL"),
        ({"priority": "high"}, "priority .* must be an int, not str"),
        ({"priority": 2**31}, "out of range"),
    ],
)
def test_task_options_no_job_can_carry_are_refused_at_registration(
    options: dict[str, Any], match: str
) -> None:
    app = _app()

    with pytest.raises(sqla_jobs.InvalidJobOptions, match=match):
        app.task(name="tests.options", **options)(_function)

    assert app.tasks == {}


def test_a_namespace_that_makes_a_name_too_long_is_refused_when_the_blueprint_is_added() -> None:
    blueprint = sqla_jobs.Blueprint()
    blueprint.task(name="send")(_function)
    app = _app()

    with pytest.raises(sqla_jobs.InvalidJobOptions, match="bytes long"):
        app.add_tasks_from(blueprint, namespace="n" * MAX_NAME_BYTES)
    with pytest.raises(sqla_jobs.InvalidJobOptions, match="NUL"):
        app.add_tasks_from(blueprint, namespace="a\x00")

    assert app.tasks == {}
    assert not blueprint.tasks["send"].is_bound


@pytest.mark.parametrize("name", ["", 0, False, b"", []], ids=repr)
def test_an_empty_or_falsy_task_name_is_refused(name: Any) -> None:
    app = _app()

    with pytest.raises(sqla_jobs.InvalidJobOptions, match="task name"):
        app.task(name=name)(_function)


@pytest.mark.parametrize("options", [{"queue": ""}, {"priority": ""}, {"priority": False}])
def test_configure_task_refuses_an_empty_queue_or_a_falsy_priority_of_the_wrong_type(
    options: dict[str, Any],
) -> None:
    with pytest.raises(sqla_jobs.InvalidJobOptions):
        _app().configure_task("tests.unregistered", **options)


def test_a_blueprint_whose_namespaced_names_a_job_cannot_carry_registers_none() -> None:
    blueprint = sqla_jobs.Blueprint()
    blueprint.task(name="a")(_function)
    blueprint.task(name="b" * 20)(lambda: None)
    app = _app()

    with pytest.raises(sqla_jobs.InvalidJobOptions):
        app.add_tasks_from(blueprint, namespace="n" * (MAX_NAME_BYTES - 10))

    assert app.tasks == {}
