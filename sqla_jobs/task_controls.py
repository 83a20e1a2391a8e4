"""What a task can say about its own job from inside: put it back for later (`Snooze`), end it
as cancelled (`CancelJob`); and the checks of a task's ``timeout``.

Both are exceptions, so that a sync task (in its thread) and an async task say it the same
way, from any depth of their code: ``raise sqla_jobs.Snooze(seconds=30)``. The worker turns
them into outcomes; the task's retry strategy plays no part.
"""

from __future__ import annotations

from .errors import InvalidJobOptions
from .retry import LONGEST_WAIT
from .statuses import CANCELLED_BY_TASK, SNOOZED


class Snooze(Exception):
    """Raised by a task: its job goes back to the queue, to run again in ``seconds``, and the
    run does not count as an attempt (the retry strategy neither sees nor spends it).

    ``seconds``: from 0 (at once) to a year. ``reason`` goes into the job's history. A job
    whose queueing lock another waiting job holds cannot wait a second time: it fails,
    saying so, as a retry would.
    """

    def __init__(self, seconds: float, reason: str | None = None) -> None:
        self.seconds = float(check_seconds(f"Snooze(seconds={seconds!r})", seconds, zero=True))
        self.reason = reason
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{SNOOZED} for {self.seconds:g} s"
        return f"{text}: {self.reason}" if self.reason else text


class CancelJob(Exception):
    """Raised by a task: its job ends ``cancelled`` (not failed, never retried), with
    ``reason`` in its last error and its history."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{CANCELLED_BY_TASK}: {self.reason}" if self.reason else f"{CANCELLED_BY_TASK}."


def check_seconds(what: str, value: object, *, zero: bool, other: str = "") -> float:
    """``value`` as a number of seconds, from 0 (``zero``) or above 0, up to a year; else
    `InvalidJobOptions` naming ``what`` and the fix (``other``: another way out)."""
    lowest = "0 or more" if zero else "more than 0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJobOptions(
            f"{what}: give a number of seconds ({lowest}, e.g. 30){other}, not "
            f"{type(value).__name__} {value!r}."
        )
    if value != value or value < 0 or (value == 0 and not zero):  # != itself: NaN
        raise InvalidJobOptions(f"{what}: give a number of seconds, {lowest} (e.g. 30){other}.")
    if value > LONGEST_WAIT:
        raise InvalidJobOptions(
            f"{what} is over a year ({LONGEST_WAIT:,.0f} s), the longest allowed: give fewer "
            f"seconds{other}."
        )
    return float(value)


def check_timeout(task_name: str, timeout: object) -> float | None:
    """A task's ``timeout`` (seconds, or None for none), checked where the task is declared."""
    if timeout is None:
        return None
    return check_seconds(
        f"timeout={timeout!r} of task {task_name!r}",
        timeout,
        zero=False,
        other=", or leave timeout out (None) for no timeout",
    )
