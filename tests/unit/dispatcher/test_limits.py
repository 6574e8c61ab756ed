"""Token bucket and the destination gate: whatever would wait too long becomes a RetryableError."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.breaker import BreakerPolicy, CircuitBreaker, State
from services.common.errors import Deferred, RetryableError
from services.dispatcher.limits import Gate, Pressure, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take(max_wait=0)[0] for _ in range(4)] == [True, True, True, False]
    clock.now += 0.1
    assert bucket.take(max_wait=0) == (True, 0.0)


def test_bucket_reserves_a_token_ahead_when_the_wait_is_short_enough() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=1, clock=clock)
    assert bucket.take(max_wait=1) == (True, 0.0)
    granted, wait = bucket.take(max_wait=1)
    assert granted and wait == pytest.approx(0.5)
    granted, wait = bucket.take(max_wait=1)  # the owed token pushes the next one further out
    assert granted and wait == pytest.approx(1.0)
    granted, wait = bucket.take(max_wait=1)
    assert not granted and wait == pytest.approx(1.5)


def test_a_bucket_is_wanted_while_asked_lately_or_owing_and_says_when_it_is_asked_again() -> None:
    clock = Clock()
    woke: list[float] = []
    bucket = TokenBucket(rate=1, burst=1, clock=clock, idle_after=6, on_wake=lambda: woke.append(clock.now))
    assert not bucket.wanted()
    bucket.take(max_wait=0)  # the first ask after a pause (here: ever)
    assert woke == [0.0] and bucket.wanted()
    assert bucket.take(max_wait=10)[1] == pytest.approx(1.0)  # asked again at once: no wake
    clock.now = 5.9
    assert bucket.wanted()  # asked within idle_after
    clock.now = 6.5
    assert not bucket.wanted()  # not asked for 6.5 s, and the token owed for t=1 is repaid
    bucket.take(max_wait=10)
    assert woke == [0.0, 6.5]

    slow = TokenBucket(rate=0.1, burst=1, clock=clock, idle_after=6, on_wake=lambda: woke.append(-1))
    slow.take(max_wait=0)
    slow.take(max_wait=100)  # a token owed for 10 s
    clock.now += 9
    assert slow.wanted()  # not asked for 9 s, but still owing
    slow.take(max_wait=100)
    assert woke == [0.0, 6.5, -1]  # owing: not a wake
    clock.now += 30
    assert not slow.wanted()


def test_tokens_taken_ahead_are_due_later_when_the_rate_falls_and_not_earlier_when_it_rises() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    taken = [(bucket.take(max_wait=5)[1], bucket.mark) for _ in range(4)]
    assert [wait for wait, _ in taken] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    clock.now = 0.1
    bucket.resize(2, 1)  # this replica's share halves: what is still ahead takes twice as long from now
    assert bucket.due(0.75, taken[3][1]) == pytest.approx((0.1 + 0.65 * 2, 1))
    assert bucket.due(0.05, taken[0][1])[0] == pytest.approx(0.05)  # due before the change: unchanged
    assert bucket.take(max_wait=5)[1] == pytest.approx(1.8)  # due at 1.9: 0.5 s after the last stretched one
    clock.now = 0.2
    bucket.resize(8, 1)  # faster: a token already taken is not due earlier
    assert bucket.due(1.4, 1) == (1.4, 1)


async def test_a_gate_waiting_for_a_token_waits_longer_when_the_rate_falls_meanwhile() -> None:
    g = gate(max_concurrency=10, max_waiting=10, max_wait=5)
    g.bucket = bucket = TokenBucket(rate=20, burst=1)
    start = time.monotonic()

    async def send() -> float:
        async with g.slot():
            return time.monotonic() - start

    sends = [asyncio.create_task(send()) for _ in range(5)]  # tokens at 0, 0.05 ... 0.2 s
    await asyncio.sleep(0)
    bucket.resize(5, 1)  # a quarter of the rate: the last one is due at ~0.8 s, not 0.2
    done = await asyncio.gather(*sends)
    assert max(done) >= 0.75, done


async def test_a_token_the_falling_rate_stretches_past_max_wait_is_deferred_not_waited_for() -> None:
    """The gate's token wait is one of the three max_wait_seconds the handler's timeout leaves room for
    (services.dispatcher.settings.AttemptBound): a token stretched past it (this replica's share shrank)
    waited on, and an attempt at the bound could be stopped mid-request by the handler's timeout."""
    g = gate(max_concurrency=10, max_waiting=10, max_wait=0.5)
    g.bucket = bucket = TokenBucket(rate=20, burst=1)
    start = time.monotonic()

    async def send() -> float | Deferred:
        try:
            async with g.slot():
                return time.monotonic() - start
        except Deferred as exc:
            assert exc.retry_after is not None and exc.retry_after > 0
            return exc

    sends = [asyncio.create_task(send()) for _ in range(10)]  # tokens at 0, 0.05 ... 0.45 s
    await asyncio.sleep(0)
    bucket.resize(5, 1)  # a quarter of the rate: the last ones due at ~1.8 s, past max_wait
    done = await asyncio.gather(*sends)
    sent = [t for t in done if isinstance(t, float)]
    assert max(sent) <= 0.5 + 0.1, done  # none waited longer than max_wait
    assert len(sent) < 10, done  # those stretched past it went to a retry tier instead
    assert g._pressure.at_gates == 0


def test_bucket_never_saves_more_than_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.take(max_wait=0)[0] for _ in range(3)] == [True, True, False]


def gate(
    max_concurrency: int = 1,
    max_waiting: int = 1,
    max_wait: float = 0.2,
    pressure: Pressure | None = None,
    **policy: float,
) -> Gate:
    return Gate(
        "slow",
        max_concurrency=max_concurrency,
        max_waiting=max_waiting,
        max_wait_seconds=max_wait,
        breaker=CircuitBreaker(BreakerPolicy(**policy)),  # type: ignore[arg-type]
        pressure=pressure,
    )


async def test_a_full_destination_with_a_full_queue_refuses_at_once() -> None:
    g = gate(max_concurrency=1, max_waiting=0)
    async with g.slot():
        with pytest.raises(RetryableError, match="busy"):
            async with g.slot():
                pass


async def test_waiting_for_a_slot_is_bounded() -> None:
    g = gate(max_concurrency=1, max_waiting=5, max_wait=0.05)
    async with g.slot():
        with pytest.raises(RetryableError, match=r"no free slot within 0.05s"):
            async with g.slot():
                pass


async def test_a_waiter_gets_the_slot_when_it_frees_in_time() -> None:
    g = gate(max_concurrency=1, max_waiting=5, max_wait=2)
    order: list[str] = []

    async def hold() -> None:
        async with g.slot() as slot:
            order.append("first")
            await asyncio.sleep(0.05)
            slot.record(True)

    first = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    async with g.slot() as slot:
        order.append("second")
        slot.record(True)
    await first
    assert order == ["first", "second"]


async def test_open_circuit_raises_retryable_with_the_remaining_open_time() -> None:
    g = gate(consecutive_failures=1, open_seconds=30)
    async with g.slot() as slot:
        slot.record(False)
    assert g.breaker.state is State.OPEN
    with pytest.raises(RetryableError, match="circuit open for destination slow") as caught:
        async with g.slot():
            pass
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30


async def test_rate_limited_destination_past_the_bound_goes_to_a_retry_tier() -> None:
    g = Gate(
        "paced",
        max_concurrency=10,
        max_waiting=10,
        max_wait_seconds=0.1,
        breaker=CircuitBreaker(BreakerPolicy()),
        bucket=TokenBucket(rate=1, burst=1),
    )
    async with g.slot():
        pass
    with pytest.raises(RetryableError, match="rate limit") as caught:
        async with g.slot():
            pass
    assert caught.value.retry_after is not None and 0.8 < caught.value.retry_after <= 1.0


def lined_gate(pressure: Pressure, max_wait: float = 2.0) -> Gate:
    return Gate(
        "crm",
        max_concurrency=4,
        max_waiting=8,
        max_wait_seconds=max_wait,
        breaker=CircuitBreaker(BreakerPolicy()),
        pressure=pressure,
    )


async def send_through(g: Gate, seconds: float) -> str:
    try:
        async with g.slot() as slot:
            await asyncio.sleep(seconds)
            slot.record(True)
    except RetryableError as exc:
        return str(exc)
    return "sent"


async def test_a_backlog_beyond_the_room_of_a_healthy_destination_waits_in_line_under_backpressure() -> None:
    """400 records at once to 4 slots and 8 waiting places: none goes to a retry tier, and the gate
    asks for no new records while its line is not empty."""
    pressure = Pressure()
    # a 2 s wait failed once in a loaded `make test` (a worker beside, load 6 on 2 cores): the first
    # waiter's 2 s passed before the 4 slots' 2 ms sends ended; the line drains in ~0.2 s unloaded
    g = lined_gate(pressure, max_wait=30.0)
    sends = [asyncio.create_task(send_through(g, 0.002)) for _ in range(400)]
    await asyncio.sleep(0)
    assert pressure()
    assert await asyncio.gather(*sends) == ["sent"] * 400
    assert not pressure() and pressure.lines == 0


async def test_a_stalled_destinations_line_goes_to_a_retry_tier_within_max_wait_then_at_once() -> None:
    pressure = Pressure()
    g = lined_gate(pressure, max_wait=0.2)
    started = time.monotonic()
    sends = [asyncio.create_task(send_through(g, 5)) for _ in range(20)]
    await asyncio.sleep(0)
    assert pressure()  # not measured yet: the line waits, at most max_wait
    await asyncio.sleep(0.3)
    assert not pressure()
    assert all(s.done() for s in sends[4:]) and not any(s.done() for s in sends[:4])
    assert all("busy" in s.result() for s in sends[4:])
    assert time.monotonic() - started < 1
    # its waiters timed out lately: beyond the room a record is refused at once, no line, no pressure
    room = [asyncio.create_task(send_through(g, 0)) for _ in range(8)]
    await asyncio.sleep(0)
    assert await send_through(g, 0) == "destination crm busy: 8 requests already waiting"
    assert not pressure()
    for s in [*sends[:4], *room]:
        s.cancel()
    await asyncio.gather(*sends[:4], *room, return_exceptions=True)


async def test_a_cancelled_record_in_line_leaves_no_trace() -> None:
    pressure = Pressure()
    g = lined_gate(pressure)
    sends = [asyncio.create_task(send_through(g, 0.05)) for _ in range(14)]  # 4 slots, 8 waiting, 2 in line
    await asyncio.sleep(0)
    assert pressure()
    sends[-1].cancel()
    sends[-2].cancel()
    await asyncio.sleep(0)
    assert not pressure()
    assert (await asyncio.gather(*sends[:12])) == ["sent"] * 12


async def test_a_slow_healthy_destinations_line_holds_back_the_runtime_at_most_max_wait() -> None:
    """A destination answering in 100 ms through one slot (10/s), a backlog of 60 for it: its line
    may hold only what drains within max_wait (as long as a waiter in the room may wait), so the
    runtime, which takes no records for any destination while a line is not empty, is held back at
    most that long; the excess goes to a retry tier."""
    pressure = Pressure()
    slow = gate(max_concurrency=1, max_waiting=2, max_wait=0.8, pressure=pressure)
    for _ in range(3):  # measured: its recent slot releases come 100 ms apart
        assert await send_through(slow, 0.1) == "sent"
    sends = [asyncio.create_task(send_through(slow, 0.1)) for _ in range(60)]
    pressed, started = 0.0, time.monotonic()
    while time.monotonic() - started < 1.5:
        await asyncio.sleep(0.02)
        pressed += 0.02 if pressure() else 0.0
    assert pressed <= 0.8 + 0.1
    results = await asyncio.gather(*sends)
    assert results.count("sent") <= 12 and all(r == "sent" or "busy" in r for r in results)
    assert pressure.lines == 0


async def test_a_slow_destinations_burst_of_releases_does_not_read_as_fast() -> None:
    """Four requests answered together after 0.5 s (a pace of 8/s): right after that burst the line
    takes only what drains within max_wait; the rest is refused at once. (Read from release times,
    the burst looked infinitely fast and every record went into the line, holding the runtime.)"""
    pressure = Pressure()
    g = gate(max_concurrency=4, max_waiting=2, max_wait=0.5, pressure=pressure)
    assert await asyncio.gather(*(send_through(g, 0.5) for _ in range(4))) == ["sent"] * 4
    sends = [asyncio.create_task(send_through(g, 0.5)) for _ in range(20)]
    await asyncio.sleep(0.01)
    refused = [s.result() for s in sends if s.done()]
    assert len(refused) >= 12 and all("requests already waiting" in r for r in refused)
    for s in sends:
        s.cancel()
    await asyncio.gather(*sends, return_exceptions=True)


async def test_a_slow_request_from_before_the_circuit_opened_does_not_decide_its_probe() -> None:
    """A request still out when its destination's circuit opened and half-opened (a 15 s timeout, a 1 s
    open period) closed the circuit on its late success while the probe was still out, and a second probe
    went through; now only the probe decides."""
    g = gate(max_concurrency=4, max_waiting=0, consecutive_failures=1, open_seconds=0.05)
    slow = g.slot()
    slow_slot = await slow.__aenter__()
    async with g.slot() as failing:
        failing.record(False)
    assert g.breaker.state is State.OPEN
    await asyncio.sleep(0.06)
    async with g.slot() as probe:
        assert g.breaker.state is State.HALF_OPEN
        slow_slot.record(True)
        await slow.__aexit__(None, None, None)
        assert g.breaker.state is State.HALF_OPEN
        with pytest.raises(RetryableError, match="circuit open"):  # the probe is still out: no second one
            async with g.slot():
                pass
        probe.record(True)
    assert g.breaker.state is State.CLOSED
