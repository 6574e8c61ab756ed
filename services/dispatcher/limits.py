"""Per-destination isolation: a circuit breaker, a token bucket and a concurrency limit with a bounded
wait. What cannot go soon moves to a retry tier instead of holding one of the runtime's in-flight
slots, so one slow or failing destination never slows the others: a saturated limit raises Deferred
(not attempted, no attempt counted), an open circuit raises RetryableError (the destination failing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from services.common.breaker import CircuitBreaker
from services.common.errors import Deferred, RetryableError


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. A taken token may be owed (waited for)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def resize(self, rate: float, burst: int) -> None:
        """A new rate and burst from now on (the dispatcher's share of a destination's limit)."""
        now = self._clock()
        self._tokens = min(float(burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self.rate, self.burst = rate, burst

    def take(self, max_wait: float) -> tuple[bool, float]:
        """(True, wait) with a token reserved `wait` seconds ahead; (False, wait) when wait > max_wait."""
        now = self._clock()
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
        self.recorded = False

    def record(self, ok: bool) -> None:
        self.recorded = True
        self._breaker.record(ok)


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
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.bucket = bucket
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_waiting = max_waiting
        self._max_wait = max_wait_seconds
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Circuit, then rate, then concurrency; RetryableError when any would make us wait too long."""
        wait = self.breaker.check()
        if wait > 0:
            raise RetryableError(f"circuit open for destination {self.name}", retry_after=wait)
        slot = Slot(self.breaker)
        try:
            await self._take_token()
            await self._acquire()
            try:
                yield slot
            finally:
                self._semaphore.release()
        finally:
            if not slot.recorded:
                self.breaker.abandon()

    async def _take_token(self) -> None:
        if self.bucket is None:
            return
        granted, wait = self.bucket.take(self._max_wait)
        if not granted:
            raise Deferred(f"rate limit of destination {self.name} reached", retry_after=wait)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _acquire(self) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # free now: no timer, no extra task
            return
        if self._waiting >= self._max_waiting:
            raise Deferred(f"destination {self.name} busy: {self._waiting} requests already waiting")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._max_wait)
        except TimeoutError:
            raise Deferred(f"destination {self.name} busy: no free slot within {self._max_wait:g}s") from None
        finally:
            self._waiting -= 1
