"""The destinations at run time: lookup by name and kind, one isolation gate each, and the ones
disabled by a 410 Gone (in memory until restart, and exported as postcall_destination_disabled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from services.common.errors import PermanentError
from services.dispatcher.breaker import CircuitBreaker
from services.dispatcher.destinations import AnyDestination, DestinationBase, SmtpDestination
from services.dispatcher.limits import Gate, TokenBucket
from services.dispatcher.metrics import CIRCUIT_OPEN, DESTINATION_DISABLED

D = TypeVar("D", bound=DestinationBase)
# Waiters per concurrency slot: enough that a backlog for one healthy destination drains from the
# runtime's window instead of bouncing through retry tier 1 (bench/dispatcher.py: with 8 per slot a
# 2,000-action backlog drained at ~54/s), few enough that a stalled destination holds a bounded share of
# the in-flight records. A stalled one's waiters leave after max_wait_seconds anyway.
WAITING_PER_SLOT = 48


class Registry:
    def __init__(
        self, destinations: Mapping[str, AnyDestination], *, default_timeout: float, max_wait_seconds: float
    ) -> None:
        self._destinations = dict(destinations)
        self._default_timeout = default_timeout
        self.disabled: dict[str, str] = {}
        self._gates = {name: self._gate(d, max_wait_seconds) for name, d in self._destinations.items()}
        for name in self._destinations:
            DESTINATION_DISABLED.labels(name).set(0)
            CIRCUIT_OPEN.labels(name).set(0)

    @staticmethod
    def _gate(dest: AnyDestination, max_wait_seconds: float) -> Gate:
        bucket = None
        if dest.rate_limit_per_second is not None:
            burst = dest.rate_limit_burst or max(1, round(dest.rate_limit_per_second))
            bucket = TokenBucket(dest.rate_limit_per_second, burst)
        gauge = CIRCUIT_OPEN.labels(dest.name)
        return Gate(
            dest.name,
            max_concurrency=dest.max_concurrency,
            max_waiting=dest.max_waiting if dest.max_waiting is not None else WAITING_PER_SLOT * dest.max_concurrency,
            max_wait_seconds=max_wait_seconds,
            breaker=CircuitBreaker(dest.circuit_breaker.policy()),
            bucket=bucket,
            on_state=lambda is_open: gauge.set(1 if is_open else 0),
        )

    def get(self, name: str, kind: type[D]) -> D:
        """The destination, or PermanentError when it is unknown, of another kind, or disabled."""
        dest = self._destinations.get(name)
        if dest is None:
            raise PermanentError(f"unknown destination {name!r}: not in the dispatcher's destinations file")
        if not isinstance(dest, kind):
            raise PermanentError(f"destination {name!r} is {dest.kind}, this action needs another kind")
        if name in self.disabled:
            raise PermanentError(self.disabled[name])
        return dest

    def only(self, kind: type[D]) -> list[D]:
        return [d for d in self._destinations.values() if isinstance(d, kind)]

    def gate(self, name: str) -> Gate:
        return self._gates[name]

    def timeout(self, dest: DestinationBase) -> float:
        return dest.timeout_seconds or self._default_timeout

    def disable(self, name: str, reason: str) -> None:
        self.disabled[name] = reason
        DESTINATION_DISABLED.labels(name).set(1)

    def smtp(self) -> list[SmtpDestination]:
        return self.only(SmtpDestination)
