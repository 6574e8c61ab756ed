"""The one circuit breaker (services/common/breaker.py) on a fake clock: the dispatcher's rate and run rules,
the extractor's failures-in-a-row-within-a-window policy, and transitions shared between replicas."""

from __future__ import annotations

from services.common.breaker import HALF_OPEN_WAIT_SECONDS, BreakerPolicy, CircuitBreaker, State
from services.extractor.settings import CircuitSettings


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


# ── the extractor's policy: failures in a row within a window, no rate rule ─────────────────────────


def llm_breaker() -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    policy = CircuitSettings(failure_threshold=3, window_seconds=10, cooldown_seconds=5).policy()
    return CircuitBreaker(policy, clock), clock


def test_consecutive_failures_within_the_window_open_the_circuit() -> None:
    b, _ = llm_breaker()
    run(b, "xx")
    assert state(b) is State.CLOSED
    run(b, "x")
    assert state(b) is State.OPEN and b.check() == 5


def test_failures_spread_over_more_than_the_window_do_not_open_it() -> None:
    b, clock = llm_breaker()
    for _ in range(6):
        run(b, "x")
        clock.now += 6
    assert state(b) is State.CLOSED


def test_a_success_resets_the_run_and_many_failures_among_successes_never_trip_without_a_rate_rule() -> None:
    b, _ = llm_breaker()
    run(b, "xxoxxoxxo" * 10)
    assert state(b) is State.CLOSED


# ── transitions shared between replicas ────────────────────────────────────────────────────────


def test_every_transition_is_told_with_the_wall_time_a_probe_is_allowed() -> None:
    clock, seen = Clock(), []
    b = CircuitBreaker(
        BreakerPolicy(consecutive_failures=2, open_seconds=30),
        clock,
        on_change=lambda s, at: seen.append((s, at)),
        wall_clock=lambda: 5000.0,
    )
    run(b, "xx")
    clock.now += 30
    assert b.check() == 0.0
    b.record(True)
    assert seen == [(State.OPEN, 5030.0), (State.HALF_OPEN, None), (State.CLOSED, None)]


def test_another_replicas_open_state_is_applied_and_its_close_too() -> None:
    clock, seen = Clock(), []
    b = CircuitBreaker(BreakerPolicy(), clock, on_change=lambda s, at: seen.append(s), wall_clock=lambda: 5000.0)
    b.open_until(4000.0)  # already over: nothing to do
    assert state(b) is State.CLOSED
    b.open_until(5020.0)
    assert state(b) is State.OPEN and b.check() == 20
    b.close()
    assert state(b) is State.CLOSED and b.check() == 0.0
    assert seen == []  # applying another replica's decision is not announced again


def test_a_request_from_before_the_circuit_opened_does_not_decide_the_probe() -> None:
    """In HALF_OPEN the first `record()` decided the circuit, whoever made it: a slow request let through
    while closed (an LLM call with a long timeout, hundreds in flight) that ended after the circuit had
    half-opened closed it on its success, or reopened it on its failure, while the probe was still out;
    and it freed the probe's place, so a second probe went out. Its generation is older now: ignored."""
    b, clock = breaker(consecutive_failures=1, open_seconds=30)
    assert b.check() == 0.0
    slow = b.generation
    run(b, "x")  # another request fails: open
    clock.now += 31
    assert b.check() == 0.0  # the probe
    probe = b.generation
    b.record(True, slow)
    assert state(b) is State.HALF_OPEN
    b.abandon(slow)
    assert b.check() == HALF_OPEN_WAIT_SECONDS  # still one probe out
    b.record(False, slow)
    assert state(b) is State.HALF_OPEN
    b.record(True, probe)
    assert state(b) is State.CLOSED


def test_a_probe_from_before_another_replica_reopened_the_circuit_decides_nothing() -> None:
    clock = Clock()
    b = CircuitBreaker(BreakerPolicy(consecutive_failures=1, open_seconds=30), clock, wall_clock=clock)
    run(b, "x")
    clock.now += 31
    assert b.check() == 0.0
    probe = b.generation
    b.open_until(clock.now + 100.0)  # another replica's probe failed
    clock.now += 101
    assert b.check() == 0.0  # our next probe
    b.record(True, probe)  # the first one's late answer
    assert state(b) is State.HALF_OPEN
