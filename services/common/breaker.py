"""One circuit breaker for every dependency a service calls: the extractor's LLM endpoint, each of the
dispatcher's destinations.

    CLOSED ──(K failures in a row within the window, or >= P % failed of >= M requests in the window)──► OPEN
    OPEN ──(open_seconds later)──► HALF_OPEN: one probe request goes through
    HALF_OPEN ──probe succeeds──► CLOSED        HALF_OPEN ──probe fails──► OPEN for a full period

`check()` says how long until a request may go (0.0: now; while half-open only the probe goes);
`record(ok, generation)` reports how a request `check` let through ended (a failure is the dependency's:
timeouts, connection errors, 5xx, 429; an answer that blames the request is a success here);
`abandon(generation)` frees the probe slot of a request that never reached the dependency. `generation`
is the breaker's `generation` when `check` let the request through: it changes each time the circuit
opens, so a request that began before (a slow one, still out when the circuit opened and half-opened)
neither counts nor decides the probe's verdict, nor frees the probe's slot. What a caller does with a wait is its own
business: the extractor pauses consumption (DependencyUnavailable), the dispatcher moves the record to
a retry tier.

`on_change(state, reopen_at)` hears of every transition this breaker makes (metrics; the dispatcher
shares a destination's open state across its replicas through Kafka), with the wall-clock time a probe
is allowed when it opened. `open_until(wall_time)` and `close()` apply a transition another replica
made; they do not call `on_change`.
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
    consecutive_failures: int = 10  # K failures in a row within window_seconds trip it
    failure_threshold_percent: float | None = 70.0  # None: only consecutive failures trip it
    minimum_requests: int = 10  # requests in the window before the rate counts
    window_seconds: float = 300.0
    open_seconds: float = 30.0  # open time before one probe is let through


HALF_OPEN_WAIT_SECONDS = 1.0  # what a request is told while the single probe is out
OnChange = Callable[[State, float | None], None]


class CircuitBreaker:
    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange = lambda state, reopen_at: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._clock, self._wall = clock, wall_clock
        self._on_change = on_change
        self.state = State.CLOSED
        self._probe_at = 0.0  # monotonic: when an open circuit lets a probe through
        self._probe_out = False
        self.generation = 0  # +1 each time the circuit opens (here or on another replica's word)
        self._run: deque[float] = deque(maxlen=policy.consecutive_failures)  # the current run of failures
        self._buckets: deque[list[int]] = deque()  # [second, ok, failed], oldest first
        self._ok = 0
        self._failed = 0

    def check(self) -> float:
        """0.0 when a request may go now; otherwise how many seconds until one may."""
        if self.state is State.OPEN:
            remaining = self._probe_at - self._clock()
            if remaining > 0:
                return remaining
            self._become(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self._probe_out:
                return HALF_OPEN_WAIT_SECONDS
            self._probe_out = True
        return 0.0

    def record(self, ok: bool, generation: int | None = None) -> None:
        """The outcome of a request that `check` let through (in `generation`; None: the current one)."""
        if generation is not None and generation != self.generation:
            return  # it began before the circuit last opened: that decision is made, a probe's is its own
        if self.state is State.HALF_OPEN:
            self._probe_out = False
            self._close() if ok else self._open(self.policy.open_seconds)
            return
        if self.state is State.OPEN:
            return  # a request started before the circuit opened: the decision is made
        self._count(ok)
        if self._tripped():
            self._open(self.policy.open_seconds)

    def abandon(self, generation: int | None = None) -> None:
        """A request `check` let through (in `generation`) never reached the dependency (cancelled,
        refused locally)."""
        if generation is None or generation == self.generation:
            self._probe_out = False

    def failure_rate(self) -> tuple[int, int]:
        """(failed, total) within the window."""
        self._prune(self._clock())
        return self._failed, self._ok + self._failed

    # ── another replica's transitions ──────────────────────────────────────────────────────────

    def open_until(self, wall_time: float) -> None:
        """Open (or stay open) until `wall_time`, as another replica decided; no-op when that has passed."""
        remaining = wall_time - self._wall()
        if remaining <= 0:
            return
        probe_at = self._clock() + remaining
        if self.state is not State.OPEN or probe_at > self._probe_at:
            self.state, self._probe_at, self._probe_out = State.OPEN, probe_at, False
            self.generation += 1

    def close(self) -> None:
        """Closed, as another replica's successful probe decided."""
        if self.state is not State.CLOSED:
            self._reset()
            self.state = State.CLOSED

    # ── internals ──────────────────────────────────────────────────────────────────────────────

    def _count(self, ok: bool) -> None:
        now = self._clock()
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][1 if ok else 2] += 1
        self._ok += ok
        self._failed += not ok
        if ok:
            self._run.clear()
        else:
            self._run.append(now)
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            _, ok, failed = self._buckets.popleft()
            self._ok -= ok
            self._failed -= failed

    def _tripped(self) -> bool:
        run, policy = self._run, self.policy
        if len(run) == run.maxlen and run[-1] - run[0] <= policy.window_seconds:
            return True
        total = self._ok + self._failed
        threshold = policy.failure_threshold_percent
        return threshold is not None and total >= policy.minimum_requests and self._failed * 100.0 >= threshold * total

    def _open(self, seconds: float) -> None:
        self._probe_at = self._clock() + seconds
        self._run.clear()
        self._probe_out = False
        self.generation += 1
        self._become(State.OPEN, self._wall() + seconds)

    def _close(self) -> None:
        self._reset()
        self._become(State.CLOSED)

    def _reset(self) -> None:
        self._run.clear()
        self._buckets.clear()
        self._ok = self._failed = 0
        self._probe_out = False

    def _become(self, state: State, reopen_at: float | None = None) -> None:
        self.state = state
        self._on_change(state, reopen_at)
