"""A circuit breaker for the LLM endpoint: an outage pauses extraction instead of failing records.

    closed ──N consecutive failures within the window──► open ──cool-down──► half-open (one probe)
      ▲                                                   ▲                      │
      └───────────────── probe succeeds ──────────────────┼──── probe fails ◄────┘

While open (or while the half-open probe is out), `before_call` raises DependencyUnavailable: the
runtime pauses consumption and retries the record in place, so nothing is dead-lettered for an outage.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from services.common.errors import DependencyUnavailable
from services.extractor.metrics import LLM_CIRCUIT_OPEN
from services.extractor.settings import CircuitSettings

log = logging.getLogger("postcall.extractor.circuit")

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, provider: str, settings: CircuitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self._settings = settings
        self._clock = clock
        self._failures: deque[float] = deque(maxlen=settings.failure_threshold)
        self._state: State = "closed"
        self._opened_at = 0.0
        self._probe_out = False
        LLM_CIRCUIT_OPEN.labels(provider).set(0)

    @property
    def state(self) -> State:
        return self._state

    @property
    def cooldown(self) -> float:
        return self._settings.cooldown_seconds

    def before_call(self) -> None:
        """Let a request through, or raise DependencyUnavailable while the circuit is open."""
        if self._state == "closed":
            return
        remaining = self._settings.cooldown_seconds - (self._clock() - self._opened_at)
        if self._state == "open" and remaining <= 0:
            self._transition("half_open")
        if self._state == "half_open" and not self._probe_out:
            self._probe_out = True
            return
        raise DependencyUnavailable(
            f"{self.provider} circuit is {self._state.replace('_', '-')} after repeated failures",
            retry_after=max(remaining, 0.0) or None,
        )

    def success(self) -> None:
        """The endpoint answered (even with a 4xx): it is up."""
        self._failures.clear()
        self._probe_out = False
        if self._state != "closed":
            self._transition("closed")

    def failure(self) -> bool:
        """An outage-type failure; returns True when the circuit is open afterwards."""
        now = self._clock()
        self._probe_out = False
        if self._state == "half_open":
            self._open(now)
            return True
        self._failures.append(now)
        full = len(self._failures) == self._failures.maxlen
        if self._state == "closed" and full and now - self._failures[0] <= self._settings.window_seconds:
            self._open(now)
        return self._state == "open"

    def release(self) -> None:
        """The call ended without a verdict (cancelled): free the probe slot."""
        self._probe_out = False

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._transition("open")

    def _transition(self, state: State) -> None:
        log.warning("circuit %s -> %s", self._state, state, extra={"provider": self.provider, "circuit": state})
        self._state = state
        LLM_CIRCUIT_OPEN.labels(self.provider).set(0 if state == "closed" else 1)
