"""Retry strategies: whether a job that raised runs again, and after how long.

Pure arithmetic on the number of attempts made so far; the worker asks the job's task when a
job raises (`Task.retry_delay`), never when it succeeds.
"""

from __future__ import annotations

import dataclasses
import math

#: No wait between attempts is longer than this (one year), whatever the strategy says.
LONGEST_WAIT = 365 * 24 * 3600.0

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryStrategy:
    """When a job that raised runs again, given to ``@app.task(retry=...)``.

    ``max_attempts`` counts every run of the job, the first one included: with
    ``max_attempts=3`` a job runs at most three times (two retries); None retries for ever.
    After ``n`` attempts the job waits ``wait + linear_wait * n + exponential_wait ** n``
    seconds (at most ``max_wait``, and never more than a year) before the next one; by default
    it runs again at once. ``retry_exceptions``: only these exception classes (and their
    subclasses) are retried, any other error fails the job at once; None retries every error.
    """

    max_attempts: int | None
    wait: float = 0.0
    linear_wait: float = 0.0
    exponential_wait: float = 0.0
    max_wait: float | None = None
    retry_exceptions: ExceptionTypes | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(
                f"max_attempts must be a whole number of runs, at least 1 (the first run "
                f"counts), or None to retry for ever; not {self.max_attempts!r}"
            )
        for name in ("wait", "linear_wait", "exponential_wait"):
            value = getattr(self, name)
            if not _is_seconds(value):
                raise ValueError(f"{name} must be zero or more seconds, not {value!r}")
        if 0 < self.exponential_wait <= 1:
            raise ValueError(
                f"exponential_wait={self.exponential_wait!r} does not grow: it is the base of "
                "the wait after n attempts (exponential_wait ** n seconds); use a number above "
                "1 (2 doubles the wait at each attempt), or 0 for no exponential part"
            )
        if self.max_wait is not None and not _is_seconds(self.max_wait):
            raise ValueError(f"max_wait must be zero or more seconds, not {self.max_wait!r}")
        if self.retry_exceptions is not None:
            object.__setattr__(self, "retry_exceptions", _exception_types(self.retry_exceptions))

    def delay(self, attempts: int, exception: BaseException) -> float | None:
        """Seconds to wait before running again a job that raised ``exception`` on its
        ``attempts``-th run, or None when it must not run again (it fails)."""
        if self.retry_exceptions is not None and not isinstance(exception, self.retry_exceptions):
            return None
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return None
        seconds = self.wait + self.linear_wait * attempts
        if self.exponential_wait:
            try:
                seconds += float(self.exponential_wait) ** attempts
            except OverflowError:
                seconds = math.inf
        ceiling = LONGEST_WAIT if self.max_wait is None else min(self.max_wait, LONGEST_WAIT)
        return min(seconds, ceiling)


def retry_strategy(retry: int | RetryStrategy | None) -> RetryStrategy | None:
    """The strategy that ``@app.task(retry=...)`` stands for: a number N retries up to N times
    at once (N + 1 runs in all); 0 or None never retries."""
    if retry is None or retry is False:
        return None
    if isinstance(retry, RetryStrategy):
        return retry
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise TypeError(
            f"retry={retry!r}: give the number of retries (retry=3) or a "
            "sqla_jobs.RetryStrategy(max_attempts=..., wait=...), or leave it out to never "
            "retry"
        )
    if retry < 0:
        raise ValueError(f"retry={retry} is negative: give the number of retries, 0 or more")
    return RetryStrategy(max_attempts=retry + 1) if retry else None


def _is_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, list | tuple | set | frozenset) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(
                f"retry_exceptions must be exception classes, e.g. (ConnectionError, "
                f"TimeoutError); {item!r} is not one"
            )
    return types
