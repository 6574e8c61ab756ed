"""The recorder's handler: every record it reads becomes rows in the conversation store.

Consumes (schemas.routes.RECORDER):
    postcall.conversation-ended.v1       the conversation (the newest event of a conversation wins)
    postcall.conversation-extracted.v1   each extraction, with every value, its evidence and confidence
    postcall.decisions.v1                each decision trace, and the actions it planned
    postcall.actions.<type>.v1           each action as produced (its payload; tasks and team alerts)
    postcall.action-results.v1           every attempt of every action
    postcall.<service>.dlq.v1            every service's dead letters, raw (and `dlq replay`'s markers)
    postcall.dispatcher.retry-<n>.v1     raw: when a failed action's next attempt is due
    postcall.recorder.replay.v1          its own dead letters replayed (`dlq replay`, the console's
                                         redrive), to it alone: the runtime hands each over as if read
                                         where it first arrived (topic, partition, offset, time), so it
                                         makes the rows the original record makes, keyed alike
Produces: nothing on Kafka; rows in the store (services/store), through the group-commit batcher.

Idempotent: a record read twice (a restart, a rebalance) adds no row (services/store/models.py). A
record older than the store's retention is skipped, so re-reading a topic never brings pruned rows
back. A main-topic record that does not fit its schema is poison (the runtime dead-letters it); a dead
letter is stored whatever its value holds. A record the store refuses fails alone (PermanentError: the
recorder's dead-letter topic); a store that cannot be reached pauses consumption (DependencyUnavailable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from schemas import headers as h
from schemas.events import ActionBase, ActionCompleted, ConversationEnded, ConversationExtracted, DecisionTrace
from schemas.routes import RECORDER, Route
from services.common.api import Context, Event, InvalidRecord, Service
from services.recorder.batcher import Batcher
from services.recorder.metrics import SKIPPED
from services.store import rows
from services.store.rows import Rows, Source
from services.store.writer import horizon


@dataclass(frozen=True)
class RawTopics:
    """Which of a route's raw inputs are dead-letter topics (and whose) and which are retry tiers; read
    off the names, so that a route renamed for a test (a prefix) classifies the same."""

    dead_letters: Mapping[str, str]  # topic -> the service that dead-lettered
    next_retries: frozenset[str]

    @classmethod
    def of(cls, route: Route) -> RawTopics:
        raw = [s.topic for s in route.consumes if s.model is bytes]
        letters = {name: name.rsplit(".", 3)[-3] for name in raw if name.endswith(".dlq.v1")}
        return cls(letters, frozenset(name for name in raw if name not in letters))


DEFAULT_TOPICS = RawTopics.of(RECORDER)


def rows_for(event: BaseModel | bytes | None, ctx: Context, raw: RawTopics = DEFAULT_TOPICS) -> Rows:
    """The rows one record adds."""
    source = Source(ctx.topic, ctx.partition, ctx.offset, ctx.timestamp_ms)
    if isinstance(event, ConversationEnded):
        return rows.ended(event, source, ctx.headers)
    if isinstance(event, ConversationExtracted):
        return rows.extracted(event, source, ctx.headers)
    if isinstance(event, DecisionTrace):
        return rows.decided(event, source)
    if isinstance(event, ActionCompleted):
        return rows.completed(event, source)
    if isinstance(event, ActionBase):
        return rows.requested(event, source)
    if isinstance(event, BaseModel):
        raise InvalidRecord(f"the recorder does not store {type(event).__name__}")
    service = raw.dead_letters.get(ctx.topic)
    if service is not None:
        if h.DLQ_REPLAYED in ctx.raw_headers:
            return rows.replay_marker(ctx.raw_headers, source)
        return rows.dead_letter(source, service, ctx.key, event, ctx.raw_headers)
    if ctx.topic in raw.next_retries:
        return rows.retry_scheduled(_json_object(event), ctx.raw_headers)
    raise InvalidRecord(f"the recorder does not read {ctx.topic!r}")


def _json_object(value: bytes | None) -> Mapping[str, Any]:
    try:
        found = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


class Recorder:
    """Builds a record's rows (a bad record fails alone) and hands them to the batcher; returns once
    they are committed, so that the runtime commits the record's offset only then."""

    def __init__(self, batcher: Batcher, retention_days: float, route: Route = RECORDER) -> None:
        self._batcher = batcher
        self._retention_days = retention_days
        self._route = route
        self._raw = RawTopics.of(route)
        self._old = SKIPPED.labels("older_than_retention")

    async def handle(self, event: BaseModel | bytes | None, ctx: Context) -> Sequence[Event]:
        if ctx.timestamp_ms < horizon(self._retention_days).timestamp() * 1000:
            self._old.inc()
            return []
        found = rows_for(event, ctx, self._raw)
        if len(found):
            await self._batcher.add(found)
        return []

    def service(self) -> Service[Any]:
        """The handler, with the batcher's backpressure: no new records while those waiting weigh too much."""
        return Service(self._route, self.handle, capacity=self._batcher.capacity)
