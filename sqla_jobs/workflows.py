"""Workflows: jobs deferred together, each starting once the jobs it depends on succeeded.

A `Step` is a job not yet deferred (``task.step(**kwargs)``); `chain`, `group` and `chord`
compose steps into shapes, and `Workflow` builds any graph (``after=`` names earlier items, so
a cycle cannot be written). `plan` turns what was added into the rows one statement writes
(`sqla_jobs.workflow_operations`); the database does the rest when jobs end (revision 0010).
Pure values and logic: nothing here sends a statement.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar, overload

from .errors import InvalidJobOptions
from .jobs import Job, JobSpec
from .statuses import FINISHED_STATUSES, JobStatus

if TYPE_CHECKING:
    from .connectors.bind import Bind

__all__ = [
    "ON_PARENT_FAILURE",
    "Chain",
    "Group",
    "Item",
    "OnParentFailure",
    "ParentJob",
    "Plan",
    "Ref",
    "Step",
    "Workflow",
    "WorkflowInfo",
    "WorkflowRun",
    "chain",
    "check_on_parent_failure",
    "chord",
    "group",
    "plan",
    "step_of",
]

#: What a job does when a job it depends on ends without succeeding (failed for good,
#: cancelled, aborted, deleted): ``"cancel"`` (it is cancelled, and what depends on it), or
#: ``"run"`` (it runs anyway once that job ended).
OnParentFailure = Literal["cancel", "run"]
ON_PARENT_FAILURE: tuple[OnParentFailure, ...] = ("cancel", "run")


def check_on_parent_failure(value: object) -> OnParentFailure:
    """``value`` if it is a policy, else `InvalidJobOptions` naming the valid ones."""
    if value not in ON_PARENT_FAILURE:
        raise InvalidJobOptions(
            f"on_parent_failure must be 'cancel' (a job whose parent ends without succeeding "
            f"is cancelled) or 'run' (it runs anyway), not {value!r}."
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Step:
    """One job of a workflow, not deferred on its own: ``task.step(**kwargs)`` or
    ``task.configure(...).step(**kwargs)``. Each place a step is added becomes a job."""

    spec: JobSpec

    def __repr__(self) -> str:
        return f"<Step {self.spec.task_name}({dict(self.spec.args)!r})>"


def step_of(spec: JobSpec, *, bound: bool) -> Step:
    """A `Step` for ``spec``, refused (`InvalidJobOptions`, naming the fix) when its options
    cannot work in a workflow: a queueing lock or a unique key could refuse a job as it leaves
    ``blocked`` inside its parent's finish, failing that finish for ever; ``bind`` belongs to
    the whole workflow."""
    task = spec.task_name
    if spec.queueing_lock is not None:
        raise InvalidJobOptions(
            f"A step of task {task!r} has queueing_lock={spec.queueing_lock!r}: a workflow's "
            "steps cannot have one (a waiting job holding the lock would refuse the step when "
            "its parents finish). Configure the step without queueing_lock."
        )
    if spec.unique is not None:
        raise InvalidJobOptions(
            f"A step of task {task!r} is unique: a workflow's steps cannot be (another job "
            "holding the key would refuse the step when its parents finish). Configure the "
            "step without unique."
        )
    if bound:
        raise InvalidJobOptions(
            f"A step of task {task!r} was configured with bind=: a workflow is written in one "
            "transaction, so pass bind= to the workflow's defer (wf.defer(bind=session) or "
            "app.defer_workflow(..., bind=session)) instead."
        )
    return Step(spec)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Chain:
    """Items one after another: each starts once the previous one's last steps succeeded."""

    items: tuple[Item, ...]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Group:
    """Items in parallel: what follows the group waits for all of them."""

    items: tuple[Item, ...]


#: What a workflow is made of: steps and shapes of them.
Item: TypeAlias = Step | Chain | Group


def _items(items: Iterable[Item], shape: str) -> tuple[Item, ...]:
    items = tuple(items)
    for item in items:
        if not isinstance(item, Step | Chain | Group):
            raise InvalidJobOptions(
                f"{shape}() takes steps (task.step(**kwargs)) and shapes (chain, group, chord), "
                f"not {type(item).__name__} {item!r}."
            )
    return items


def chain(*items: Item) -> Chain:
    """``items`` one after another."""
    return Chain(_items(items, "chain"))


def group(*items: Item) -> Group:
    """``items`` in parallel."""
    return Group(_items(items, "group"))


def chord(header: Iterable[Item], callback: Item) -> Chain:
    """``header`` in parallel, then ``callback`` once they all succeeded (it reads their
    results as ``context.parent_results``): ``chain(group(*header), callback)``."""
    return chain(group(*header), callback)


T = TypeVar("T", int, tuple[int, ...])


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Ref(Generic[T]):
    """What `Workflow.add` returns: ``after=`` of later items names it (they wait for its
    last steps), and ``run[ref]`` gives its job id (a step) or ids (a shape)."""

    workflow: Workflow
    #: The indexes of its steps, in order; and of its last steps (what ``after=`` waits for).
    steps: tuple[int, ...]
    exits: tuple[int, ...]
    single: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The rows of a workflow: its steps in order, each one's parents (indexes of earlier
    steps), and each edge's policy."""

    specs: tuple[JobSpec, ...]
    #: (job index, parent index, on_parent_failure), by job then parent.
    edges: tuple[tuple[int, int, OnParentFailure], ...]

    def parents_left(self) -> list[int | None]:
        counts: list[int | None] = [None] * len(self.specs)
        for job, _, _ in self.edges:
            counts[job] = (counts[job] or 0) + 1
        return counts

    def has_dependents(self) -> list[bool | None]:
        flags: list[bool | None] = [None] * len(self.specs)
        for _, parent, _ in self.edges:
            flags[parent] = True
        return flags


class _Builder:
    """Steps and edges as items are added: shapes flattened depth-first."""

    def __init__(self) -> None:
        self.specs: list[JobSpec] = []
        self.edges: dict[tuple[int, int], OnParentFailure] = {}

    def add(
        self, item: Item, after: Sequence[int], policy: OnParentFailure
    ) -> tuple[list[int], list[int]]:
        """Add ``item`` waiting for steps ``after``: its step indexes and its last steps."""
        if isinstance(item, Step):
            index = len(self.specs)
            self.specs.append(item.spec)
            for parent in after:
                self.edges.setdefault((index, parent), policy)
            return [index], [index]
        steps: list[int] = []
        if isinstance(item, Chain):
            exits = list(after)
            for part in item.items:
                added, exits = self.add(part, exits, policy)
                steps.extend(added)
            return steps, (exits if item.items else list(after))
        ends: list[int] = []
        for part in item.items:
            added, last = self.add(part, after, policy)
            steps.extend(added)
            ends.extend(last)
        return steps, (ends if item.items else list(after))

    def plan(self) -> Plan:
        if not self.specs:
            raise InvalidJobOptions(
                "A workflow needs at least one step: add task.step(**kwargs), or a chain, group "
                "or chord of steps, before deferring it."
            )
        edges = tuple((job, parent, policy) for (job, parent), policy in sorted(self.edges.items()))
        return Plan(tuple(self.specs), edges)


def plan(item: Item, on_parent_failure: OnParentFailure = "cancel") -> Plan:
    """The rows of a workflow made of ``item`` alone (`sqla_jobs.App.defer_workflow`)."""
    builder = _Builder()
    builder.add(_items([item], "defer_workflow")[0], (), check_on_parent_failure(on_parent_failure))
    return builder.plan()


#: How an app defers a workflow's plan: (plan, name, bind) -> the run.
DeferPlan: TypeAlias = Callable[[Plan, "str | None", "Bind | None"], "WorkflowRun"]
DeferPlanAsync: TypeAlias = Callable[[Plan, "str | None", "Bind | None"], Awaitable["WorkflowRun"]]


class Workflow:
    """A graph of jobs to defer in one transaction: ``app.workflow(name=...)``, then `add`
    items (each may wait for earlier ones with ``after=``), then `defer`.

    ``on_parent_failure``: what a job does when a job it waits for ends without succeeding,
    for every edge unless `add` says otherwise: ``"cancel"`` (the default) or ``"run"``.
    """

    def __init__(
        self,
        defer_plan: DeferPlan,
        defer_plan_async: DeferPlanAsync,
        *,
        name: str | None = None,
        on_parent_failure: OnParentFailure = "cancel",
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidJobOptions(f"A workflow's name must be a string or None, not {name!r}.")
        self.name = name
        self.on_parent_failure = check_on_parent_failure(on_parent_failure)
        self._defer_plan = defer_plan
        self._defer_plan_async = defer_plan_async
        self._builder = _Builder()

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} with {len(self._builder.specs)} steps>"

    @overload
    def add(
        self,
        item: Step,
        *,
        after: Sequence[Ref[Any]] = (),
        on_parent_failure: OnParentFailure | None = None,
    ) -> Ref[int]: ...

    @overload
    def add(
        self,
        item: Chain | Group,
        *,
        after: Sequence[Ref[Any]] = (),
        on_parent_failure: OnParentFailure | None = None,
    ) -> Ref[tuple[int, ...]]: ...

    def add(
        self,
        item: Item,
        *,
        after: Sequence[Ref[Any]] = (),
        on_parent_failure: OnParentFailure | None = None,
    ) -> Ref[Any]:
        """Add ``item`` (a step or a shape), starting once the last steps of every ref in
        ``after`` succeeded; ``on_parent_failure`` for the edges this call makes (None: the
        workflow's). Returns a ref for later ``after=`` and for ``run[ref]``."""
        policy = (
            self.on_parent_failure
            if on_parent_failure is None
            else check_on_parent_failure(on_parent_failure)
        )
        if isinstance(after, Ref):
            after = (after,)
        parents: list[int] = []
        for ref in after:
            if not isinstance(ref, Ref) or ref.workflow is not self:
                raise InvalidJobOptions(
                    f"after= takes refs that add() of this workflow returned, not {ref!r}."
                )
            parents.extend(ref.exits)
        (checked,) = _items([item], "add")
        steps, exits = self._builder.add(checked, list(dict.fromkeys(parents)), policy)
        return Ref(self, tuple(steps), tuple(exits), isinstance(checked, Step))

    def defer(self, *, bind: Bind | None = None) -> WorkflowRun:
        """Write every job and dependency in one transaction (the caller's with ``bind``, a
        SQLAlchemy Session or Connection): all or nothing."""
        run = self._defer_plan(self._builder.plan(), self.name, bind)
        return dataclasses.replace(run, workflow=self)

    async def defer_async(self, *, bind: Bind | None = None) -> WorkflowRun:
        """Async form of `defer` (``bind``: an AsyncSession or AsyncConnection)."""
        run = await self._defer_plan_async(self._builder.plan(), self.name, bind)
        return dataclasses.replace(run, workflow=self)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A deferred workflow: its id, its jobs' ids in the order their steps were added (shapes
    depth-first), and ``run[ref]``: the id (a step) or ids (a shape) of an added item."""

    workflow_id: int
    job_ids: tuple[int, ...]
    #: The `Workflow` deferred (None for `App.defer_workflow`): ``run[ref]`` takes its refs only.
    workflow: Workflow | None = dataclasses.field(default=None, repr=False, compare=False)

    @overload
    def __getitem__(self, ref: Ref[int]) -> int: ...

    @overload
    def __getitem__(self, ref: Ref[tuple[int, ...]]) -> tuple[int, ...]: ...

    def __getitem__(self, ref: Ref[Any]) -> int | tuple[int, ...]:
        if not isinstance(ref, Ref) or ref.workflow is not self.workflow:
            raise KeyError(f"{ref!r} is not a ref that add() of this run's workflow returned")
        ids = tuple(self.job_ids[index] for index in ref.steps)
        return ids[0] if ref.single else ids


#: The statuses of a job that has not ended.
_UNFINISHED = frozenset(JobStatus) - FINISHED_STATUSES


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow as stored: its jobs in id order (the order their steps were added) and its
    dependencies as (job_id, parent_id, on_parent_failure)."""

    id: int
    name: str | None
    created_at: datetime.datetime
    jobs: list[Job]
    dependencies: list[tuple[int, int, OnParentFailure]]

    @property
    def counts(self) -> dict[JobStatus, int]:
        """How many of its jobs are in each status (statuses without jobs left out)."""
        counts: dict[JobStatus, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    @property
    def status(self) -> Literal["running", "finished"]:
        """``"finished"`` once no job is todo, blocked, doing or aborting; else
        ``"running"``. Whether it all went well: `succeeded`."""
        if any(job.status in _UNFINISHED for job in self.jobs):
            return "running"
        return "finished"

    @property
    def succeeded(self) -> bool:
        """Every job succeeded."""
        return all(job.status is JobStatus.SUCCEEDED for job in self.jobs)


@dataclasses.dataclass(frozen=True, slots=True)
class ParentJob:
    """A job that the running job depends on, as the worker read it when it claimed the job
    (`sqla_jobs.JobContext.parents`)."""

    id: int
    task_name: str
    status: JobStatus
    #: What its task returned (decoded JSON), if it succeeded and its task stores results.
    result: Any = None
