"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

from services.dispatcher.breaker import HALF_OPEN_WAIT_SECONDS, BreakerPolicy, CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**policy: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerPolicy(**policy), clock), clock  # type: ignore[arg-type]


def state(b: CircuitBreaker) -> State:
    return b.state  # read through a call: mypy would keep the narrowed type across b.record()


def run(b: CircuitBreaker, outcomes: str) -> None:
    for c in outcomes:
        assert b.check() == 0.0
        b.record(c == "o")


def test_trips_at_the_failure_rate_once_enough_requests_were_seen() -> None:
    b, _ = breaker(failure_threshold_percent=70, minimum_requests=10, consecutive_failures=100)
    run(b, "xoxoxxxxx")  # 7 of 9 failed, but under the minimum
    assert state(b) is State.CLOSED
    run(b, "x")  # 8 of 10
    assert state(b) is State.OPEN


def test_does_not_trip_under_the_failure_rate() -> None:
    b, _ = breaker(failure_threshold_percent=70, minimum_requests=10, consecutive_failures=100)
    run(b, "xoxoxoxoxoxoxoxoxoxo" * 3)
    assert state(b) is State.CLOSED


def test_trips_on_consecutive_failures_regardless_of_rate() -> None:
    b, _ = breaker(minimum_requests=1000, consecutive_failures=3)
    run(b, "o" * 50 + "xx")
    assert state(b) is State.CLOSED
    run(b, "x")
    assert state(b) is State.OPEN


def test_open_circuit_says_how_long_until_a_probe() -> None:
    b, clock = breaker(consecutive_failures=1, open_seconds=30)
    run(b, "x")
    clock.now += 10
    assert b.check() == 20.0


def test_half_open_lets_one_probe_through_and_success_closes() -> None:
    b, clock = breaker(consecutive_failures=1, open_seconds=30)
    run(b, "x")
    clock.now += 30
    assert b.check() == 0.0
    assert state(b) is State.HALF_OPEN
    assert b.check() == HALF_OPEN_WAIT_SECONDS  # the probe is out; others wait
    b.record(True)
    assert state(b) is State.CLOSED
    assert b.check() == 0.0


def test_failed_probe_opens_again_for_a_full_period() -> None:
    b, clock = breaker(consecutive_failures=1, open_seconds=30)
    run(b, "x")
    clock.now += 31
    assert b.check() == 0.0
    b.record(False)
    assert state(b) is State.OPEN
    assert b.check() == 30.0


def test_abandoned_probe_frees_the_probe_slot() -> None:
    b, clock = breaker(consecutive_failures=1, open_seconds=30)
    run(b, "x")
    clock.now += 31
    assert b.check() == 0.0
    b.abandon()
    assert b.check() == 0.0


def test_old_failures_leave_the_window() -> None:
    b, clock = breaker(failure_threshold_percent=50, minimum_requests=4, consecutive_failures=100, window_seconds=60)
    run(b, "xxx")
    clock.now += 120
    run(b, "oox")
    assert b.failure_rate() == (1, 3)
    assert state(b) is State.CLOSED


def test_results_of_requests_started_before_opening_do_not_change_an_open_circuit() -> None:
    b, _ = breaker(consecutive_failures=1, open_seconds=30)
    run(b, "x")
    b.record(True)
    assert state(b) is State.OPEN
