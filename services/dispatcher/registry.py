"""The destinations at run time: lookup by name and kind, one isolation gate each, and the ones disabled
by a 410 Gone (exported as postcall_destination_disabled).

With a SharedState attached (services/dispatcher/shared.py, as the dispatcher runs) every replica shares
a destination's disabled state, its circuit breaker's open state and its rate limit: what this replica
decides is written to postcall.destination-state.v1, what another decided is applied here, and each
token bucket fills at `limit / n`, n the live replicas that want the destination (this one always
counts: its share is ready when its work comes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from services.common.breaker import CircuitBreaker, State
from services.common.errors import PermanentError
from services.dispatcher.destinations import AnyDestination, DestinationBase, SmtpDestination
from services.dispatcher.limits import Gate, Pressure, TokenBucket
from services.dispatcher.metrics import CIRCUIT_OPEN, DESTINATION_DISABLED, RATE_SHARE, known_destinations

D = TypeVar("D", bound=DestinationBase)
log = logging.getLogger("postcall.dispatcher.registry")
# Places in a destination's waiting room per concurrency slot: enough to keep its slots busy while the
# runtime fetches more, few enough that a stalled destination holds a small share of the runtime's
# window (its waiters leave after max_wait_seconds anyway). A backlog for one healthy destination does
# not need a bigger room: beyond it records wait in the gate's line while the runtime takes no new ones
# (services/dispatcher/limits.py). With the room at 48 per slot and no line, the default window (1024)
# overfilled it and a 2,000-action backlog bounced through retry tier 1 (bench/dispatcher.py: 0.41 of
# bare httpx, 478 deferrals).
WAITING_PER_SLOT = 4


class Publisher(Protocol):
    """Where this replica's decisions go (services.dispatcher.shared.SharedState)."""

    def disabled(self, destination: str, reason: str) -> None: ...
    def circuit(self, destination: str, open_until: float | None) -> None: ...
    def wake(self) -> None: ...  # this replica wants a destination again: tell the others now


class Registry:
    def __init__(
        self,
        destinations: Mapping[str, AnyDestination],
        *,
        default_timeout: float,
        max_wait_seconds: float,
        smtp_timeout: float | None = None,
    ) -> None:
        """`smtp_timeout`: the whole-attempt bound of smtp destinations that set none; default `default_timeout`."""
        self._destinations = dict(destinations)
        self._default_timeout = default_timeout
        self._smtp_timeout = smtp_timeout or default_timeout
        self.disabled: dict[str, str] = {}
        self.enabled_at: dict[str, float] = {}  # destination -> an operator's latest enable (epoch seconds)
        self._shared: Publisher | None = None
        self.pressure = Pressure()  # on: a line is not empty or many records are on their way to a gate
        self._gates = {name: self._gate(d, max_wait_seconds) for name, d in self._destinations.items()}
        known_destinations(self._destinations)
        for name, dest in self._destinations.items():
            DESTINATION_DISABLED.labels(name).set(0)
            CIRCUIT_OPEN.labels(name).set(0)
            if dest.rate_limit_per_second is not None:
                RATE_SHARE.labels(name).set(dest.rate_limit_per_second)

    def attach(self, shared: Publisher) -> None:
        """Share decisions with the other replicas from now on."""
        self._shared = shared

    def _gate(self, dest: AnyDestination, max_wait_seconds: float) -> Gate:
        bucket = None
        if dest.rate_limit_per_second is not None:
            bucket = TokenBucket(dest.rate_limit_per_second, _burst(dest), on_wake=self._woke)
        return Gate(
            dest.name,
            max_concurrency=dest.max_concurrency,
            max_waiting=dest.max_waiting if dest.max_waiting is not None else WAITING_PER_SLOT * dest.max_concurrency,
            max_wait_seconds=max_wait_seconds,
            breaker=CircuitBreaker(dest.circuit_breaker.policy(), on_change=self._circuit_changed(dest.name)),
            bucket=bucket,
            pressure=self.pressure,
        )

    def _circuit_changed(self, name: str) -> Callable[[State, float | None], None]:
        gauge = CIRCUIT_OPEN.labels(name)

        def changed(state: State, reopen_at: float | None) -> None:
            gauge.set(0 if state is State.CLOSED else 1)
            if self._shared is not None and state is not State.HALF_OPEN:
                self._shared.circuit(name, reopen_at if state is State.OPEN else None)

        return changed

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
        default = self._smtp_timeout if isinstance(dest, SmtpDestination) else self._default_timeout
        return dest.timeout_seconds or default

    def disable(self, name: str, reason: str, started: float | None = None) -> None:
        """This replica's decision (a 410): every replica's, and it outlives restarts. `started` (epoch
        seconds): when the request that met the 410 began; one begun before an operator's latest
        `postcall destinations enable` is ignored (the owner fixed the destination meanwhile)."""
        enabled_at = self.enabled_at.get(name)
        if started is not None and enabled_at is not None and started < enabled_at:
            log.info("destination %s: a 410 to a request sent before it was enabled again, ignored", name)
            return
        self.apply_disabled(name, reason)
        if self._shared is not None:
            self._shared.disabled(name, reason)

    # ── another replica's (or an operator's) decisions: services.dispatcher.shared.Listener ──────

    def apply_disabled(self, destination: str, reason: str | None, enabled_at: float | None = None) -> None:
        if destination not in self._destinations:
            return
        if reason is None:
            self.disabled.pop(destination, None)
            if enabled_at is not None:
                self.enabled_at[destination] = max(enabled_at, self.enabled_at.get(destination, enabled_at))
        else:
            self.disabled[destination] = reason
        DESTINATION_DISABLED.labels(destination).set(0 if reason is None else 1)

    def apply_circuit(self, destination: str, open_until: float | None) -> None:
        gate = self._gates.get(destination)
        if gate is None:
            return
        if open_until is None:
            gate.breaker.close()
        else:
            gate.breaker.open_until(open_until)
        CIRCUIT_OPEN.labels(destination).set(0 if gate.breaker.state is State.CLOSED else 1)

    def apply_peers(self, peers: list[frozenset[str] | None]) -> None:
        """The other live replicas, each by what it wants (None: everything, a replica from before `wants`).
        This one sends to a destination at `limit / n`, n = 1 + the peers that want it (at least one token
        a burst)."""
        for name, gate in self._gates.items():
            dest = self._destinations[name]
            if gate.bucket is not None and dest.rate_limit_per_second is not None:
                n = 1 + sum(1 for wants in peers if wants is None or name in wants)
                gate.bucket.resize(dest.rate_limit_per_second / n, max(1, _burst(dest) // n))
                RATE_SHARE.labels(name).set(gate.bucket.rate)

    def wanted(self) -> list[str]:
        """The rate-limited destinations this replica has work for lately (its heartbeat says so)."""
        return [name for name, gate in self._gates.items() if gate.bucket is not None and gate.bucket.wanted()]

    def _woke(self) -> None:
        if self._shared is not None:
            self._shared.wake()

    def smtp(self) -> list[SmtpDestination]:
        return self.only(SmtpDestination)


def _burst(dest: DestinationBase) -> int:
    assert dest.rate_limit_per_second is not None
    return dest.rate_limit_burst or max(1, round(dest.rate_limit_per_second))
