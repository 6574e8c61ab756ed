"""Which conversation-ended records are copies of one this process already took.

A vendor's retry, or Retell's second `call_ended` within a second, that reaches another ingress replica
is published again under the same event id (derived from the vendor's natural key; a native bridge
derives it from its platform's ids: the contract's idempotency key). An event is its account and that
id, as a CloudEvent is its source and id: another account's bridge may send its own `evt-1`. Both copies
carry the conversation id as their key, so they land on the same partition and reach the same extractor,
one after the other: the second is skipped, so the model is asked once. A record seen again at the same
place (its retry tiers, a redelivery after a restart of the consumer) is not a copy and is extracted
again; a re-extraction or a replayed dead letter is the operator's deliberate second try (the handler
takes both without asking here).

The memory is per process, bounded in time and count: a copy that arrives after a restart, after a
rebalance moved the partition, or after the window is extracted again; its output has the same event
id as the first's, and downstream the action ids keep each effect single.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

Place = tuple[int, int]  # (partition, offset) where the record first arrived


class SeenEvents:
    def __init__(self, seconds: float, most: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds, self._most, self._clock = seconds, most, clock
        self._seen: dict[Hashable, tuple[float, Place]] = {}  # oldest first (dicts keep insertion order)

    def first_place(self, event: Hashable, place: Place) -> Place | None:
        """Where another record of this event (its account and id) arrived within the window; None when
        this record is the first (it is remembered) or the same one again."""
        if self._seconds <= 0 or self._most <= 0:
            return None
        now = self._clock()
        self._forget(now - self._seconds)
        known = self._seen.get(event)
        if known is not None:
            return known[1] if known[1] != place else None
        self._seen[event] = (now, place)
        if len(self._seen) > self._most:
            del self._seen[next(iter(self._seen))]
        return None

    def not_taken(self, event: Hashable, place: Place) -> None:
        """The record at `place` was not taken after all (its agent has no configuration): forget the event
        if that record is the one remembered, so that the event published again is not a copy."""
        known = self._seen.get(event)
        if known is not None and known[1] == place:
            del self._seen[event]

    def _forget(self, horizon: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest][0] >= horizon:
                return
            del self._seen[oldest]
