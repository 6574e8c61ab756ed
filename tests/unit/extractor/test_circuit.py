"""The LLM circuit breaker: opens on a sustained outage, lets one probe through after the cool-down."""

from __future__ import annotations

import pytest

from services.common.errors import DependencyUnavailable
from services.extractor.circuit import CircuitBreaker
from services.extractor.settings import CircuitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("test", CircuitSettings(failure_threshold=3, window_seconds=10, cooldown_seconds=5), clock)


def test_consecutive_failures_within_the_window_open_the_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    assert not b.failure() and not b.failure()
    assert b.failure()
    with pytest.raises(DependencyUnavailable) as caught:
        b.before_call()
    assert caught.value.retry_after == 5


def test_failures_spread_over_more_than_the_window_do_not_open_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(6):
        assert not b.failure()
        clock.now += 6
    b.before_call()


def test_a_success_resets_the_count() -> None:
    b = breaker(Clock())
    b.failure(), b.failure()
    b.success()
    assert not b.failure() and not b.failure()
    assert b.state == "closed"


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5
    b.before_call()  # the probe
    assert b.state == "half_open"
    with pytest.raises(DependencyUnavailable):
        b.before_call()  # everyone else still waits
    b.success()
    assert str(b.state) == "closed"
    b.before_call()


def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5
    b.before_call()
    assert b.failure()
    with pytest.raises(DependencyUnavailable):
        b.before_call()


def test_a_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 5
    b.before_call()
    b.release()
    b.before_call()
