"""The workflow builder, without a database: shapes flattened into steps and edges."""

from __future__ import annotations

from typing import Any

import pytest

from sqla_jobs import InvalidJobOptions, chain, chord, group
from sqla_jobs.jobs import JobSpec, Unique
from sqla_jobs.workflows import Plan, Step, Workflow, WorkflowRun, plan, step_of


def step(name: str) -> Step:
    return step_of(JobSpec(name, {}), bound=False)


def names(built: Plan) -> list[str]:
    return [spec.task_name for spec in built.specs]


def edges(built: Plan) -> list[tuple[str, str, str]]:
    """(job, parent, policy) by task name."""
    by_index = names(built)
    return [(by_index[job], by_index[parent], policy) for job, parent, policy in built.edges]


def captured() -> tuple[Workflow, list[Plan]]:
    plans: list[Plan] = []

    def defer(built: Plan, name: str | None, bind: Any) -> WorkflowRun:
        plans.append(built)
        return WorkflowRun(7, tuple(range(100, 100 + len(built.specs))))

    async def defer_async(built: Plan, name: str | None, bind: Any) -> WorkflowRun:
        return defer(built, name, bind)

    return Workflow(defer, defer_async, name="w"), plans


def test_a_chain_makes_each_step_wait_for_the_one_before() -> None:
    built = plan(chain(step("a"), step("b"), step("c")))

    assert names(built) == ["a", "b", "c"]
    assert edges(built) == [("b", "a", "cancel"), ("c", "b", "cancel")]
    assert built.parents_left() == [None, 1, 1]
    assert built.has_dependents() == [True, True, None]


def test_a_group_in_a_chain_fans_out_and_in() -> None:
    built = plan(chain(step("a"), group(step("b"), step("c")), step("d")))

    assert edges(built) == [
        ("b", "a", "cancel"),
        ("c", "a", "cancel"),
        ("d", "b", "cancel"),
        ("d", "c", "cancel"),
    ]
    assert built.parents_left() == [None, 1, 1, 2]


def test_a_chord_is_a_group_then_its_callback() -> None:
    built = plan(chord([step("a"), chain(step("b"), step("c"))], step("d")), "run")

    assert names(built) == ["a", "b", "c", "d"]
    assert edges(built) == [("c", "b", "run"), ("d", "a", "run"), ("d", "c", "run")]


def test_nested_chains_and_groups_wait_only_for_the_last_steps() -> None:
    built = plan(chain(group(chain(step("a"), step("b")), step("c")), group(step("d"))))

    assert edges(built) == [("b", "a", "cancel"), ("d", "b", "cancel"), ("d", "c", "cancel")]


def test_after_waits_for_the_last_steps_of_the_items_named_with_each_edge_its_policy() -> None:
    wf, plans = captured()
    first = wf.add(chain(step("a"), step("b")))
    other = wf.add(step("c"))
    last = wf.add(step("d"), after=[first, other], on_parent_failure="run")

    run = wf.defer()

    assert edges(plans[0]) == [("b", "a", "cancel"), ("d", "b", "run"), ("d", "c", "run")]
    assert run[first] == (100, 101)
    assert run[other] == 102
    assert run[last] == 103
    other, _ = captured()
    with pytest.raises(KeyError, match="this run's workflow"):
        run[other.add(step("e"))]


def test_the_same_step_added_twice_is_two_jobs() -> None:
    again = step("a")

    assert names(plan(chain(again, again))) == ["a", "a"]


def test_an_empty_workflow_or_a_ref_of_another_one_is_refused() -> None:
    wf, _ = captured()
    other, _ = captured()
    ref = other.add(step("a"))

    with pytest.raises(InvalidJobOptions, match="at least one step"):
        wf.defer()
    with pytest.raises(InvalidJobOptions, match="add\\(\\) of this workflow"):
        wf.add(step("b"), after=[ref])
    with pytest.raises(InvalidJobOptions, match="not str"):
        chain(step("a"), "b")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["abort", None, ""])
def test_an_unknown_policy_is_refused(policy: Any) -> None:
    wf, _ = captured()
    with pytest.raises(InvalidJobOptions, match="on_parent_failure"):
        Workflow(wf._defer_plan, wf._defer_plan_async, on_parent_failure=policy)
    if policy is not None:
        with pytest.raises(InvalidJobOptions, match="on_parent_failure"):
            wf.add(step("a"), on_parent_failure=policy)


def test_options_a_workflow_cannot_honour_are_refused_when_the_step_is_made() -> None:
    with pytest.raises(InvalidJobOptions, match="queueing_lock"):
        step_of(JobSpec("t", {}, queueing_lock="x"), bound=False)
    spec = JobSpec("t", {})
    spec.unique = Unique()
    with pytest.raises(InvalidJobOptions, match="unique"):
        step_of(spec, bound=False)
    with pytest.raises(InvalidJobOptions, match="bind="):
        step_of(JobSpec("t", {}), bound=True)
