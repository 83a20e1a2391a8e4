"""Execution controls of queues and tasks: paused, a concurrency limit, a rate limit.

They live in the database (``sqla_jobs_controls``) and the claim obeys them, so that they hold
across every worker process: set them with the job manager (``app.job_manager.pause_queue``,
``set_queue_limits``...), the CLI (``sqla-jobs queues ...``), or declare limits in code
(``app.configure_queue(...)``), which each worker writes at start.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import queries
from .connectors.base import Row
from .errors import InvalidJobOptions
from .operations import Fetch, Operation

QUEUE = "queue"
TASK = "task"
SCOPES = (QUEUE, TASK)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$")

#: The largest limit a control takes (PostgreSQL's integer).
MAX_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` jobs started per ``period`` seconds, across all workers."""

    limit: int
    period: float

    def __str__(self) -> str:
        for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
            if self.period == seconds:
                return f"{self.limit}/{unit}"
        return f"{self.limit}/{self.period:g}s"


RateLike = str | Rate | tuple[int, float]


def parse_rate(value: RateLike | None, *, what: str = "rate_limit") -> Rate | None:
    """``"100/s"``, ``"10/m"``, ``"5/h"``, ``"1/d"``, ``"30/5s"`` (per 5 seconds), a `Rate` or
    ``(limit, seconds)``; None for no limit. A clear `InvalidJobOptions` otherwise."""
    if value is None or isinstance(value, Rate):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        limit, period = value
    elif isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise InvalidJobOptions(
                f"{what} {value!r} is not a rate: write jobs per period, such as '100/s', "
                "'10/m', '5/h', '1/d' or '30/5s' (30 per 5 seconds)"
            )
        count, multiple, unit = match.groups()
        limit = int(count)
        period = (float(multiple) if multiple else 1.0) * _UNITS[unit]
    else:
        raise InvalidJobOptions(
            f"{what} must be a string such as '100/s', or (jobs, seconds), not {value!r}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidJobOptions(
            f"{what} {value!r}: the number of jobs must be a whole number from 1 to {MAX_LIMIT}"
        )
    if (
        isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not math.isfinite(period)
        or period <= 0
    ):
        raise InvalidJobOptions(f"{what} {value!r}: the period must be more than 0 seconds")
    return Rate(limit, float(period))


def check_concurrency_limit(value: object, *, what: str = "concurrency_limit") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidJobOptions(
            f"{what} must be a whole number from 1 to {MAX_LIMIT} (or None for no limit), "
            f"not {value!r}"
        )
    return value


def check_name(scope: str, name: object) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    if not isinstance(name, str) or not name:
        raise InvalidJobOptions(f"a {scope} name must be a non-empty string, not {name!r}")
    if "\x00" in name or len(name.encode("utf-8", "surrogatepass")) > 1000:
        raise InvalidJobOptions(
            f"{scope} name {name[:40]!r} cannot be stored: at most 1,000 bytes, no NUL"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The limits of a queue or a task: None for none."""

    concurrency_limit: int | None = None
    rate_limit: Rate | None = None

    @classmethod
    def of(cls, concurrency_limit: object = None, rate_limit: RateLike | None = None) -> Limits:
        return cls(check_concurrency_limit(concurrency_limit), parse_rate(rate_limit))

    def params(self, scope: str, name: str) -> dict[str, Any]:
        rate = self.rate_limit
        return {
            "scope": scope,
            "name": name,
            "concurrency_limit": self.concurrency_limit,
            "rate_limit": rate.limit if rate is not None else None,
            "rate_period": rate.period if rate is not None else None,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Control:
    """A queue's or a task's controls, as the database holds them."""

    scope: str
    name: str
    paused: bool
    limits: Limits
    updated_at: datetime.datetime | None = None

    @property
    def controls_something(self) -> bool:
        return (
            self.paused
            or self.limits.concurrency_limit is not None
            or self.limits.rate_limit is not None
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Control:
        rate = row["rate_limit"]
        return cls(
            scope=str(row["scope"]),
            name=str(row["name"]),
            paused=bool(row["paused"]),
            limits=Limits(
                row["concurrency_limit"],
                Rate(int(rate), float(row["rate_period"])) if rate is not None else None,
            ),
            updated_at=row.get("updated_at"),
        )


def applies_to(control: Control, queues: Sequence[str] | None) -> bool:
    """Whether a worker of ``queues`` (None: every queue) must claim under ``control``."""
    if not control.controls_something:
        return False
    return control.scope == TASK or queues is None or control.name in queues


# -- operations (`sqla_jobs.operations`), run by the job manager -------------------------------


def set_paused(scope: str, name: str, paused: bool) -> Operation[None]:
    """Pause (or resume) a queue or a task: no worker starts its jobs while paused; running
    ones finish; defers go on. The workers hear of it at once (NOTIFY)."""
    params = {"scope": scope, "name": check_name(scope, name), "paused": paused}
    yield Fetch(queries.set_paused, params)


def set_limits(scope: str, name: str, limits: Limits) -> Operation[None]:
    """Set a queue's or a task's limits (both: None removes one). A new rate starts with a
    full bucket; the same rate set again keeps the bucket it has."""
    yield Fetch(queries.set_limits, limits.params(scope, check_name(scope, name)))


def list_controls() -> Operation[list[Control]]:
    """Every queue and task with a control row, paused or limited or neither (after a resume)."""
    rows: list[Row] = yield Fetch(queries.list_controls)
    return [Control.from_row(row) for row in rows]
