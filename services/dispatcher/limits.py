"""Per-destination isolation: a circuit breaker, a token bucket and a concurrency limit with a bounded
wait. What cannot go soon moves to a retry tier instead of holding one of the runtime's in-flight
slots, so one slow or failing destination never slows the others: a saturated limit raises Deferred
(not attempted, no attempt counted), an open circuit raises RetryableError (the destination failing).

Waiting for a slot, in two stages:

    a free slot                  -> sent at once
    the waiting room (timed)     -> max_waiting records, each at most max_wait_seconds, then Deferred
    the line (untimed)           -> beyond the room, while the destination drains its room and its
                                    line within max_wait_seconds (at its pace: max_concurrency / the
                                    mean time recent requests held a slot; so the line holds at most
                                    that much work):
                                    the record waits for a place in the room, and the gate reports
                                    backpressure (`Pressure`): the dispatcher's runtime takes no new
                                    records until the line is empty. A destination whose room does not
                                    drain so (a waiter timed out lately, or it is too slow) refuses at
                                    once: Deferred; with no measurement yet, a record waits in the line
                                    at most max_wait_seconds.

So a backlog for one healthy destination drains at the destination's pace from the runtime's window,
never bouncing through a retry tier, while a stalled or slow one still moves its excess to a retry
tier and holds no more than its room of the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from services.common.breaker import CircuitBreaker
from services.common.errors import Deferred, RetryableError

SLOWED_KEPT = 64  # a bucket's latest slowings kept for the tokens taken ahead (a share changes seconds apart)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. A taken token may be owed (waited for).

    Lowering the rate stretches the tokens already taken ahead too: a token reserved for `due` when the
    rate fell from r1 to r2 at `at` is due at `at + (due - at) * r1 / r2` (`due()`; Gate waits for it so,
    or defers the record when that is past its max_wait_seconds), so a replica whose share shrinks does not
    go on sending its reserved backlog at the old pace.

    It also says whether it is wanted: asked for a token within the last `idle_after` seconds, or owing
    one. `on_wake` is called when it is asked again after such a pause (the dispatcher's replicas share a
    destination's limit among those that want it: services/dispatcher/shared.py)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        idle_after: float = 6.0,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self.idle_after = idle_after
        self.on_wake = on_wake
        self._asked = -float("inf")
        self._slowed: deque[tuple[float, float]] = deque(maxlen=SLOWED_KEPT)  # (when, r1 / r2) per slowing
        self._slowings = 0  # how many there were, kept or not

    @property
    def mark(self) -> int:
        """Where a token taken now starts reading the slowings that come after it (`due`)."""
        return self._slowings

    def now(self) -> float:
        return self._clock()

    def due(self, due: float, mark: int) -> tuple[float, int]:
        """When a token reserved for `due` (on this bucket's clock) when the bucket was at `mark` is due now,
        after the slowings since; and the mark to ask with next time."""
        kept = len(self._slowed)
        for at, factor in list(self._slowed)[max(0, kept - (self._slowings - mark)) :]:
            if due > at:
                due = at + (due - at) * factor
        return due, self._slowings

    def wanted(self) -> bool:
        """Asked for a token within `idle_after` seconds, or a token taken is still owed."""
        now = self._clock()
        return now - self._asked <= self.idle_after or self._tokens + (now - self._stamp) * self.rate < 0

    def resize(self, rate: float, burst: int) -> None:
        """A new rate and burst from now on (the dispatcher's share of a destination's limit)."""
        now = self._clock()
        self._tokens = min(float(burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if rate < self.rate:
            self._slowed.append((now, self.rate / rate))
            self._slowings += 1
        self.rate, self.burst = rate, burst

    def take(self, max_wait: float) -> tuple[bool, float]:
        """(True, wait) with a token reserved `wait` seconds ahead; (False, wait) when wait > max_wait."""
        now = self._clock()
        woke = now - self._asked > self.idle_after and not self.wanted()
        self._asked = now
        if woke and self.on_wake is not None:
            self.on_wake()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        wait = max(0.0, (1.0 - self._tokens) / self.rate)
        if wait > max_wait:
            return False, wait
        self._tokens -= 1.0
        return True, wait


class Slot:
    """Handed to the sender while it holds a destination slot; it reports how the request went."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._generation = breaker.generation  # a request from before the circuit opens again decides nothing
        self.recorded = False

    def record(self, ok: bool) -> None:
        self.recorded = True
        self._breaker.record(ok, self._generation)

    def abandon(self) -> None:
        """Never recorded: the request did not reach the destination (frees the probe's place if it was it)."""
        if not self.recorded:
            self._breaker.abandon(self._generation)


class Pressure:
    """The dispatcher's backpressure (its `capacity` is services.common.api.Service.capacity): the runtime
    takes no new records while a destination has records in its line (beyond its waiting room), and
    otherwise only as many as keep the records on their way to a gate (taken by the handler, in the ledger
    check, not at a gate yet) within `in_transit`: those may be for a destination whose line is full, and
    they all join it. So a line gets at most `in_transit` records after it forms, whatever the gates and
    the ledger check were doing when the runtime took them, and the runtime's window never floods one
    destination's line faster than the gates can judge it."""

    def __init__(self, in_transit: int = 64) -> None:
        self.lines = 0  # destinations whose line is not empty
        self.handling = 0  # records in the dispatcher's handler
        self.at_gates = 0  # records at a gate: in its line, its room, a slot, or waiting for a token
        self.in_transit = in_transit

    def __call__(self) -> bool:
        """On: the runtime takes no new records."""
        return self.capacity() == 0

    def capacity(self) -> int:
        """How many more records the runtime may hand the dispatcher now."""
        if self.lines > 0:
            return 0
        return max(0, self.in_transit - (self.handling - self.at_gates))


class Holding:
    """A slot of a gate while the request holds it (a class, not @asynccontextmanager: one per request)."""

    __slots__ = ("_gate", "_since", "_slot")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    async def __aenter__(self) -> Slot:
        gate = self._gate
        slot = self._slot = gate._check()
        gate._pressure.at_gates += 1
        try:
            await gate._take_token()
            await gate._acquire()
            self._since = gate._clock()
        except BaseException:
            gate._pressure.at_gates -= 1
            slot.abandon()
            raise
        return slot

    async def __aexit__(self, *exc_info: object) -> None:
        self._gate._pressure.at_gates -= 1
        self._gate._release(self._slot, self._since)


class Gate:
    """What a request to one destination passes through before it is sent."""

    def __init__(
        self,
        name: str,
        *,
        max_concurrency: int,
        max_waiting: int,
        max_wait_seconds: float,
        breaker: CircuitBreaker,
        bucket: TokenBucket | None = None,
        pressure: Pressure | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.bucket = bucket
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_waiting = max_waiting
        self._max_wait = max_wait_seconds
        self._waiting = 0  # in the room, including those let in from the line and not yet resumed
        self._line: deque[asyncio.Future[None]] = deque()
        self._pressing = False  # counted in `pressure` (the line is not empty)
        self._pressure = pressure if pressure is not None else Pressure()
        self._clock = clock
        self._concurrency = max_concurrency
        self._holds: deque[float] = deque(maxlen=8 * max_concurrency)  # how long recent requests held a slot
        self._holds_sum = 0.0
        self._timed_out_at = -float("inf")  # when a waiter in the room last gave up

    def slot(self) -> Holding:
        """`async with gate.slot() as slot:` circuit, then rate, then concurrency; RetryableError when
        any would make us wait too long."""
        return Holding(self)

    def _check(self) -> Slot:
        wait = self.breaker.check()
        if wait > 0:
            raise RetryableError(f"circuit open for destination {self.name}", retry_after=wait)
        return Slot(self.breaker)

    def _release(self, slot: Slot, since: float) -> None:
        self._semaphore.release()
        holds = self._holds
        if len(holds) == holds.maxlen:
            self._holds_sum -= holds[0]
        held = max(0.0, self._clock() - since)
        holds.append(held)
        self._holds_sum += held
        slot.abandon()

    async def _take_token(self) -> None:
        bucket = self.bucket
        if bucket is None:
            return
        granted, wait = bucket.take(self._max_wait)
        if not granted:
            raise Deferred(f"rate limit of destination {self.name} reached", retry_after=wait)
        if wait > 0:
            now = bucket.now()
            due, mark, latest = now + wait, bucket.mark, now + self._max_wait
            while wait > 0:  # the rate may fall while we wait (this replica's share shrank): due later
                await asyncio.sleep(wait)
                due, mark = bucket.due(due, mark)
                wait = due - bucket.now()
                if due > latest:  # past max_wait: the handler's timeout leaves no room (settings.AttemptBound)
                    # the token stays spent: the replica sends a little under its share, never over
                    raise Deferred(f"rate limit of destination {self.name} reached", retry_after=wait)

    async def _acquire(self) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # free now: no timer, no extra task
            return
        if self._waiting < self._max_waiting and not self._line:
            self._waiting += 1
        else:
            await self._wait_in_line()  # in the room when it returns (counted in _waiting)
        try:
            async with asyncio.timeout(self._max_wait):  # no extra task, unlike wait_for
                await self._semaphore.acquire()
        except TimeoutError:
            self._timed_out_at = self._clock()
            self._refuse_line()
            raise Deferred(f"destination {self.name} busy: no free slot within {self._max_wait:g}s") from None
        finally:
            self._waiting -= 1
            self._let_in()

    def draining(self) -> bool | None:
        """Whether the room and the line, with one more record, empty within max_wait_seconds at the
        destination's pace, and no waiter timed out lately; None before any request has ended. Counting
        the line bounds how long it keeps the runtime from taking records for the other destinations: no
        longer than the room's own waiters may wait.

        The pace is max_concurrency / the mean time the last 8 x max_concurrency requests held a slot:
        a destination answering in 2 s through 16 slots releases them in bursts of 16, which a rate read
        from release times called fast right after a burst (its line then held the runtime for seconds);
        a short sample of release times called a healthy one slow after a pause of the process."""
        if self._max_waiting == 0 or self._clock() - self._timed_out_at < self._max_wait:
            return False
        if not self._holds:
            return None
        pace = self._concurrency * len(self._holds) / self._holds_sum if self._holds_sum > 0 else float("inf")
        return (self._waiting + len(self._line) + 1) / pace <= self._max_wait

    async def _wait_in_line(self) -> None:
        draining = self.draining()
        if draining is False:
            raise Deferred(f"destination {self.name} busy: {self._waiting} requests already waiting")
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(place)
        self._update_pressure()
        try:
            if draining is None:
                # not measured yet: wait in line as long as in the room; longer if it turned out to drain
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._max_wait):
                        await asyncio.shield(place)
                if not place.done() and self.draining():
                    await place
            else:
                await place
        except BaseException:
            if _let_in(place):  # let in, then cancelled before it resumed: pass the place on
                self._waiting -= 1
                self._let_in()
            raise
        finally:
            if not place.done():
                place.cancel()
            if not _let_in(place):  # a place let in was taken off the line already (a miss formats a repr)
                with contextlib.suppress(ValueError):  # or one given up, by _let_in
                    self._line.remove(place)
            self._update_pressure()
        if not _let_in(place):
            raise Deferred(f"destination {self.name} busy: no place in its waiting room within {self._max_wait:g}s")

    def _let_in(self) -> None:
        """Move the head of the line into the room while the room has places."""
        line = self._line
        while line and self._waiting < self._max_waiting:
            place = line.popleft()
            if place.done():
                continue  # gave up (timed out or cancelled)
            self._waiting += 1
            place.set_result(None)
        self._update_pressure()

    def _update_pressure(self) -> None:
        pressing = bool(self._line)
        if pressing != self._pressing:
            self._pressing = pressing
            self._pressure.lines += 1 if pressing else -1

    def _refuse_line(self) -> None:
        """A waiter in the room timed out: the destination does not keep up; the line goes to a retry tier."""
        for place in self._line:
            if not place.done():
                place.set_exception(Deferred(f"destination {self.name} busy: its waiting room does not drain"))


def _let_in(place: asyncio.Future[None]) -> bool:
    return place.done() and not place.cancelled() and place.exception() is None
