"""Retry arithmetic: whether a job that raised runs again, and after how long."""

from __future__ import annotations

import pytest

from sqla_jobs import RetryStrategy
from sqla_jobs.retry import LONGEST_WAIT, retry_strategy


def delays(strategy: RetryStrategy, runs: int, exc: BaseException | None = None) -> list:
    """The answer after each of the first ``runs`` attempts."""
    error = exc if exc is not None else ValueError("boom")
    return [strategy.delay(attempts, error) for attempts in range(1, runs + 1)]


def test_max_attempts_counts_every_run_including_the_first() -> None:
    assert delays(RetryStrategy(max_attempts=3), 4) == [0.0, 0.0, None, None]


def test_max_attempts_one_never_retries() -> None:
    assert delays(RetryStrategy(max_attempts=1), 2) == [None, None]


def test_no_max_attempts_retries_for_ever() -> None:
    strategy = RetryStrategy(max_attempts=None)
    assert strategy.delay(1_000_000, ValueError()) == 0.0


def test_constant_wait_is_the_same_after_every_attempt() -> None:
    assert delays(RetryStrategy(max_attempts=4, wait=5), 4) == [5.0, 5.0, 5.0, None]


def test_linear_wait_grows_by_the_same_step_per_attempt() -> None:
    assert delays(RetryStrategy(max_attempts=4, linear_wait=10), 3) == [10.0, 20.0, 30.0]


def test_exponential_wait_is_the_base_to_the_power_of_the_attempts() -> None:
    assert delays(RetryStrategy(max_attempts=None, exponential_wait=2), 4) == [2, 4, 8, 16]


def test_wait_parts_add_up() -> None:
    strategy = RetryStrategy(max_attempts=None, wait=1, linear_wait=10, exponential_wait=3)
    # after n attempts: 1 + 10 n + 3 ** n
    assert delays(strategy, 3) == [14.0, 30.0, 58.0]


def test_max_wait_caps_the_growth() -> None:
    strategy = RetryStrategy(max_attempts=None, exponential_wait=2, max_wait=10)
    assert delays(strategy, 5) == [2, 4, 8, 10, 10]


def test_huge_exponential_waits_stop_at_a_year_instead_of_overflowing() -> None:
    strategy = RetryStrategy(max_attempts=None, exponential_wait=10)
    assert strategy.delay(5_000, ValueError()) == LONGEST_WAIT


def test_only_the_listed_exceptions_and_their_subclasses_are_retried() -> None:
    strategy = RetryStrategy(max_attempts=5, retry_exceptions=(ConnectionError, TimeoutError))
    assert strategy.delay(1, ConnectionRefusedError()) == 0.0  # a ConnectionError
    assert strategy.delay(1, TimeoutError()) == 0.0
    assert strategy.delay(1, ValueError()) is None


def test_one_exception_class_or_a_list_of_them_is_accepted() -> None:
    single = RetryStrategy(max_attempts=2, retry_exceptions=KeyError)
    listed = RetryStrategy(max_attempts=2, retry_exceptions=[KeyError])  # type: ignore[arg-type]
    assert single.delay(1, KeyError()) == listed.delay(1, KeyError()) == 0.0
    assert single.delay(1, IndexError()) is listed.delay(1, IndexError()) is None
    assert hash(listed)  # stored as a tuple: the strategy stays hashable


def test_a_matching_exception_past_max_attempts_is_not_retried() -> None:
    strategy = RetryStrategy(max_attempts=2, retry_exceptions=KeyError)
    assert strategy.delay(2, KeyError()) is None


def test_strategy_is_frozen() -> None:
    strategy = RetryStrategy(max_attempts=2)
    with pytest.raises(AttributeError):
        strategy.wait = 3  # type: ignore[misc]


def test_max_attempts_must_be_given() -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        RetryStrategy()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "at least 1"),
        ({"max_attempts": 2.5}, "whole number"),
        ({"max_attempts": 3, "wait": -1}, "wait must be zero or more seconds"),
        ({"max_attempts": 3, "linear_wait": float("nan")}, "linear_wait"),
        ({"max_attempts": 3, "exponential_wait": 0.5}, "above 1"),
        ({"max_attempts": 3, "exponential_wait": 1}, "does not grow"),
        ({"max_attempts": 3, "max_wait": -5}, "max_wait"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryStrategy(**options)


def test_retry_exceptions_must_be_exception_classes() -> None:
    with pytest.raises(TypeError, match=r"exception classes.*'ValueError'"):
        RetryStrategy(max_attempts=2, retry_exceptions=("ValueError",))  # type: ignore[arg-type]


# -- @app.task(retry=...) ----------------------------------------------------------------------


def test_retry_number_means_that_many_retries_at_once() -> None:
    strategy = retry_strategy(3)
    assert strategy == RetryStrategy(max_attempts=4)
    assert delays(strategy, 5) == [0.0, 0.0, 0.0, None, None]


@pytest.mark.parametrize("retry", [None, 0, False])
def test_no_retry_gives_no_strategy(retry: int | None) -> None:
    assert retry_strategy(retry) is None


def test_a_strategy_is_used_as_it_is() -> None:
    strategy = RetryStrategy(max_attempts=2, wait=1)
    assert retry_strategy(strategy) is strategy


def test_retry_true_is_refused_as_ambiguous() -> None:
    with pytest.raises(TypeError, match=r"number of retries \(retry=3\)"):
        retry_strategy(True)


def test_negative_retry_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        retry_strategy(-1)


def test_retry_of_another_type_is_refused_naming_the_choices() -> None:
    with pytest.raises(TypeError, match="RetryStrategy"):
        retry_strategy("3")  # type: ignore[arg-type]
