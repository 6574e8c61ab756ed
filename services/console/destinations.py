"""Destination state on a call's page: disabled by a 410, circuit open, rate limited.

The dispatcher's replicas share each destination's state in the compacted topic
postcall.destination-state.v1 (services/dispatcher/shared.py). The query API follows that topic in the
background (`DestinationStates.follow`: read whole, then every new record) so that a page shows the
state without asking Kafka per request; when Kafka cannot be read, the page says so instead of showing
a destination as fine. "Rate limited" is the call's own evidence: attempts the dispatcher deferred
because the destination's rate limit was reached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schemas.events import DestinationState
from schemas.topics import DESTINATION_STATE
from services.common.kafka import partitions_of
from services.common.settings import KafkaSettings
from services.store.rows import DEFERRED
from services.store.views import ActionView

log = logging.getLogger("postcall.console.destinations")

#: a deferral by the rate limit, as the dispatcher records it: "Deferred: " + limits.py's message
RATE_LIMITED = f"{DEFERRED} rate limit of destination "


@dataclass(frozen=True)
class DestinationStatus:
    """One destination as a call's page shows it."""

    name: str
    disabled: DestinationState | None  # the 410 that disabled it (reason, when, which replica)
    circuit_open_until: datetime | None
    rate_limited: int  # this call's attempts deferred by the rate limit

    @property
    def fine(self) -> bool:
        return self.disabled is None and self.circuit_open_until is None and not self.rate_limited


class DestinationStates:
    """The latest fact per key of postcall.destination-state.v1, as compaction keeps them."""

    def __init__(self) -> None:
        self.facts: dict[str, DestinationState] = {}
        self.error: str | None = "destination state not read yet"

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        name = key.decode("utf-8", "replace") if key else ""
        if value is None:
            self.facts.pop(name, None)
            return
        try:
            self.facts[name] = DestinationState.model_validate_json(value)
        except ValidationError:
            log.warning("destination state: an unreadable record under %r skipped", name[:100])

    def status(self, destination: str, actions: list[ActionView], now: float | None = None) -> DestinationStatus:
        now = time.time() if now is None else now
        disabled = self.facts.get(f"disabled/{destination}")
        circuit = self.facts.get(f"circuit/{destination}")
        open_until = None
        if circuit is not None and circuit.circuit == "open" and circuit.open_until is not None:
            open_until = circuit.open_until if circuit.open_until.timestamp() > now else None
        deferred = sum(
            1
            for a in actions
            for t in a.attempts
            if (t.destination or a.destination) == destination and (t.error or "").startswith(RATE_LIMITED)
        )
        gone = disabled if disabled is not None and disabled.disabled else None
        return DestinationStatus(destination, gone, open_until, deferred)

    def for_call(self, actions: list[ActionView]) -> list[DestinationStatus]:
        """Every destination the call's actions went to, in name order."""
        names = {n for a in actions for n in (a.destination, *(t.destination for t in a.attempts)) if n}
        return [self.status(name, actions) for name in sorted(names)]

    async def follow(self, kafka: KafkaSettings, topic: str = DESTINATION_STATE, retry_seconds: float = 5.0) -> None:
        """Read the topic whole, then follow it until cancelled; a Kafka failure is retried."""
        while True:
            try:
                await self._follow(kafka, topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the page shows the error; the next attempt reads the topic again
                self.error = f"destination state unavailable: {type(exc).__name__} reading {topic}"
                log.warning("%s: %s", self.error, exc)
            await asyncio.sleep(retry_seconds)

    async def _follow(self, kafka: KafkaSettings, topic: str) -> None:
        partitions = await partitions_of(kafka, topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            self.facts = {}  # read whole again; until caught up, `error` still says why the view may be partial
            caught_up = False
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        self.apply(record.key, record.value)
                if not caught_up and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    caught_up, self.error = True, None
        finally:
            await consumer.stop()
