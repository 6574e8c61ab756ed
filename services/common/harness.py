"""The runtime in memory, for unit tests: a service's route and handler over records, no broker.

    harness = Harness(Service(ROUTER, handler.handle))
    out = await harness.send(event)                 # one record in; everything it became out
    assert [o.topic for o in out.outputs] == [DECISIONS, action_topic("webhook")]
    out.events, out.retries, out.dead_letters, out.status, out.error

Like FastStream's TestKafkaBroker or arq's burst worker. It runs the runtime's own record logic
(services.common.process: contexts, decoding, routing, failure fates and hop headers, the failure
hook) and, in burst mode, takes each retry-tier copy at once instead of waiting for its due time, so one
`send` shows a record's whole life: its attempts, its retry copies, then its outputs or its dead letter.
What only a broker proves (commits, rebalances, kill -9, backpressure) stays in tests/integration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from services.common import codec
from services.common.api import Context, Event, Service
from services.common.codec import Outgoing
from services.common.errors import DependencyUnavailable
from services.common.process import Processor
from services.common.settings import RuntimeSettings

E = TypeVar("E")
Status = Literal["ok", "retrying", "dead_lettered", "unavailable"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A consumed record, as a Kafka consumer hands it to the runtime."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Outcome:
    """What one sent record became, over all its attempts."""

    status: Status = "ok"
    outputs: list[Outgoing] = field(default_factory=list)  # on output topics, the failure hook's included
    retries: list[Outgoing] = field(default_factory=list)  # copies written to retry tiers
    dead_letters: list[Outgoing] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)  # what the handler saw, one per attempt
    error: BaseException | None = None  # the last attempt's

    @property
    def events(self) -> list[Event]:
        return [o.event for o in self.outputs if o.event is not None]

    @property
    def attempts(self) -> int:
        return len(self.contexts)

    def on(self, topic: str) -> list[Event]:
        """The events produced to one topic."""
        return [o.event for o in self.outputs if o.topic == topic and o.event is not None]


class Harness(Generic[E]):
    """Runs one service's records through the runtime's logic, in memory."""

    def __init__(self, service: Service[E], settings: RuntimeSettings | None = None, *, burst: bool = True) -> None:
        route = service.route
        self.settings = settings or RuntimeSettings(**route.runtime_defaults(), retry_jitter=0, metrics_port=0)
        self.service, self.route, self.burst = service, route, burst
        self.processor = Processor(service, self.settings, route.group_id)
        self.produced: dict[str, list[Outgoing]] = defaultdict(list)  # every record written, by topic
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)

    async def send(
        self,
        event: BaseModel | bytes | None,
        *,
        topic: str | None = None,
        key: str | None = None,
        partition: int = 0,
        headers: Mapping[str, str] | None = None,
        timestamp_ms: int = 1_700_000_000_000,
    ) -> Outcome:
        """Put one record on an input topic (the stream of the event's model unless `topic` says) and
        run it to its end: outputs, or retry copies then outputs or a dead letter."""
        record = self.record(event, topic=topic, key=key, partition=partition, headers=headers, ts=timestamp_ms)
        return await self.run(record)

    async def run(self, record: Incoming) -> Outcome:
        """Run one consumed record (also a retry-tier copy) and, in burst mode, its retries."""
        outcome = Outcome()
        while True:
            copy = await self._attempt(record, outcome)
            if copy is None:
                return outcome
            outcome.status = "retrying"
            if not self.burst:
                return outcome
            record = self._consume(copy)

    def record(
        self,
        event: BaseModel | bytes | None,
        *,
        topic: str | None = None,
        key: str | None = None,
        partition: int = 0,
        headers: Mapping[str, str] | None = None,
        ts: int = 1_700_000_000_000,
    ) -> Incoming:
        """An input record as an upstream producer writes it: the stream's key and CloudEvents headers."""
        stream = self._stream(event, topic)
        value = event if isinstance(event, bytes) or event is None else codec.encode(event)
        if isinstance(event, BaseModel):
            key = key if key is not None else stream.key(event)
            ce = codec.cloudevent_headers(event, stream.ce_type, "harness", key)
            headers = {**ce, **(headers or {})}
        raw = codec.header_list(headers or {})
        offset = self._next_offset(stream.topic, partition)
        return Incoming(
            stream.topic, partition, offset, ts, key.encode() if key is not None else None, value, tuple(raw)
        )

    async def _attempt(self, record: Incoming, outcome: Outcome) -> Outgoing | None:
        """One attempt; returns the retry copy to take next, or None when the record is done."""
        p = self.processor
        ctx = p.context(record, codec.header_dict(record.headers))
        outcome.contexts.append(ctx)
        event: Any = None
        try:
            event = p.decode(record, ctx)
            outputs = p.outputs(await p.handle(event, ctx), ctx)
        except DependencyUnavailable as exc:  # the runtime pauses and retries in place; here we stop
            outcome.status, outcome.error = "unavailable", exc
            return None
        except Exception as exc:
            outcome.error = exc
            verdict = p.fail(record, ctx, event, exc)
            self._write(verdict.records, outcome)
            if verdict.fate == "dead_letter":
                outcome.status = "dead_lettered"
                return None
            return next(r for r in verdict.records if p.is_retry_topic(r.topic))
        self._write(outputs, outcome)
        outcome.status, outcome.error = "ok", None
        return None

    def _write(self, records: Sequence[Outgoing], outcome: Outcome) -> None:
        for r in records:
            self.produced[r.topic].append(r)
            if r.topic == self.processor.dead_letter_topic:
                outcome.dead_letters.append(r)
            elif self.processor.is_retry_topic(r.topic):
                outcome.retries.append(r)
            else:
                outcome.outputs.append(r)

    def _consume(self, r: Outgoing) -> Incoming:
        offset = self._next_offset(r.topic, 0)
        return Incoming(r.topic, 0, offset, 0, r.key, r.value, tuple(codec.header_list(r.headers)))

    def _stream(self, event: object, topic: str | None) -> Any:
        if topic is not None:
            if topic not in self.route.streams_by_topic:
                raise ValueError(f"{topic!r} is not an input of the {self.route.service} route")
            return self.route.streams_by_topic[topic]
        matching = [s for s in self.route.consumes if isinstance(event, s.model)]
        if len(matching) != 1:
            matching = list(self.route.consumes) if len(self.route.consumes) == 1 else []
        if not matching:
            raise ValueError(f"say which input topic: {type(event).__name__} fits none or several")
        return matching[0]

    def _next_offset(self, topic: str, partition: int) -> int:
        offset = self._offsets[topic, partition]
        self._offsets[topic, partition] = offset + 1
        return offset
