"""A per-destination circuit breaker, modelled on Convoy's.

    CLOSED ──(>= threshold % failures of >= minimum requests in the window, or K in a row)──► OPEN
    OPEN ──(open_seconds later)──► HALF_OPEN: one probe request goes through
    HALF_OPEN ──probe succeeds──► CLOSED        HALF_OPEN ──probe fails──► OPEN

Failures are the destination's: timeouts, connection errors, 5xx, 429. A 4xx answer is the request's
fault, not the destination's health, so it counts as a success here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold_percent: float = 70.0
    minimum_requests: int = 10
    consecutive_failures: int = 10
    window_seconds: float = 300.0
    open_seconds: float = 30.0


HALF_OPEN_WAIT_SECONDS = 1.0  # what a request is told while the single probe is out


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self.state = State.CLOSED
        self._opened_at = 0.0
        self._probe_out = False
        self._consecutive = 0
        self._buckets: deque[list[int]] = deque()  # [second, ok, failed], oldest first
        self._ok = 0
        self._failed = 0

    def check(self) -> float:
        """0.0 when a request may go now; otherwise how many seconds until one may."""
        if self.state is State.OPEN:
            remaining = self._opened_at + self.policy.open_seconds - self._clock()
            if remaining > 0:
                return remaining
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN:
            if self._probe_out:
                return HALF_OPEN_WAIT_SECONDS
            self._probe_out = True
        return 0.0

    def record(self, ok: bool) -> None:
        """The outcome of a request that `check` let through."""
        if self.state is State.HALF_OPEN:
            self._probe_out = False
            if ok:
                self._reset()
            else:
                self._open()
            return
        if self.state is State.OPEN:
            return  # a request started before the circuit opened; the decision is made
        self._count(ok)
        if self._tripped():
            self._open()

    def abandon(self) -> None:
        """A request `check` let through never reached the destination (cancelled, refused locally)."""
        self._probe_out = False

    def failure_rate(self) -> tuple[int, int]:
        """(failed, total) within the window."""
        self._prune(self._clock())
        return self._failed, self._ok + self._failed

    def _count(self, ok: bool) -> None:
        now = self._clock()
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][1 if ok else 2] += 1
        self._ok += ok
        self._failed += not ok
        self._consecutive = 0 if ok else self._consecutive + 1
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            _, ok, failed = self._buckets.popleft()
            self._ok -= ok
            self._failed -= failed

    def _tripped(self) -> bool:
        if self._consecutive >= self.policy.consecutive_failures:
            return True
        total = self._ok + self._failed
        return total >= self.policy.minimum_requests and (
            self._failed * 100.0 >= self.policy.failure_threshold_percent * total
        )

    def _open(self) -> None:
        self.state = State.OPEN
        self._opened_at = self._clock()

    def _reset(self) -> None:
        self.state = State.CLOSED
        self._consecutive = 0
        self._buckets.clear()
        self._ok = self._failed = 0
