"""The recorder's handler: every record it reads becomes rows in the conversation store.

Consumes:
    postcall.conversation-ended.v1       the conversation (the newest event of a conversation wins)
    postcall.conversation-extracted.v1   each extraction, with every value, its evidence and confidence
    postcall.decisions.v1                each decision trace, and the actions it planned
    postcall.action-results.v1           every attempt of every action
    postcall.<service>.dlq.v1            every service's dead letters (and `dlq replay` markers)
    postcall.dispatcher.retry-<n>.v1     when a failed action's next attempt is due
Produces: nothing on Kafka; rows in the store (services/store), through the group-commit batcher.

Idempotent: a record read twice (a restart, a rebalance) adds no row (see services/store/models.py).
A record older than the store's retention is skipped, so re-reading a topic never brings pruned rows
back. A main-topic record that does not fit its schema is poison (dead-lettered by the runtime); a
dead letter is stored whatever its value holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from schemas import headers as h
from schemas.events import ActionCompleted, ConversationEnded, ConversationExtracted, DecisionTrace
from schemas.topics import (
    ACTION_RESULTS,
    CONVERSATION_ENDED,
    CONVERSATION_EXTRACTED,
    DECISIONS,
    RETRY_TIERS,
    SERVICES,
    dead_letter_topic,
    retry_topic,
)
from services.common.codec import summarize
from services.common.errors import InvalidRecord
from services.recorder.batcher import Batcher
from services.recorder.metrics import SKIPPED
from services.store import rows
from services.store.rows import Rows, Source
from services.store.writer import horizon

RECORDED_SERVICES = (*SERVICES, "recorder")
DEAD_LETTER_TOPICS = {dead_letter_topic(s): s for s in RECORDED_SERVICES}
NEXT_RETRY_TOPICS = tuple(retry_topic("dispatcher", tier) for tier in range(1, RETRY_TIERS["dispatcher"] + 1))
MAIN_TOPICS = (CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS, ACTION_RESULTS)
TOPICS = (*MAIN_TOPICS, *DEAD_LETTER_TOPICS, *NEXT_RETRY_TOPICS)


@dataclass(frozen=True)
class Record:
    """One Kafka record as the recorder sees it: where it was, and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: bytes | None
    headers: Mapping[str, str]

    @property
    def source(self) -> Source:
        return Source(self.topic, self.partition, self.offset, self.timestamp_ms)


def _parse(model: type[BaseModel], record: Record) -> Any:
    if record.value is None:
        raise InvalidRecord("record has no value (tombstone)")
    try:
        return model.model_validate_json(record.value)
    except ValidationError as exc:
        raise InvalidRecord(summarize(exc)) from None


def _ended(r: Record) -> Rows:
    return rows.ended(_parse(ConversationEnded, r), r.source)


def _extracted(r: Record) -> Rows:
    return rows.extracted(_parse(ConversationExtracted, r), r.source, r.headers)


def _decided(r: Record) -> Rows:
    return rows.decided(_parse(DecisionTrace, r), r.source)


def _completed(r: Record) -> Rows:
    return rows.completed(_parse(ActionCompleted, r), r.source)


BUILDERS: dict[str, Callable[[Record], Rows]] = {
    CONVERSATION_ENDED: _ended,
    CONVERSATION_EXTRACTED: _extracted,
    DECISIONS: _decided,
    ACTION_RESULTS: _completed,
}


def rows_for(record: Record) -> Rows:
    """The rows one record adds; InvalidRecord when a main-topic record does not fit its schema."""
    build = BUILDERS.get(record.topic)
    if build is not None:
        return build(record)
    service = DEAD_LETTER_TOPICS.get(record.topic)
    if service is not None:
        if h.DLQ_REPLAYED in record.headers:
            return rows.replay_marker(record.headers, record.source.at)
        return rows.dead_letter(record.source, service, record.key, record.value, record.headers)
    if record.topic in NEXT_RETRY_TOPICS:
        return rows.retry_scheduled(_json_object(record.value), record.headers)
    raise InvalidRecord(f"the recorder does not read {record.topic!r}")


def _json_object(value: bytes | None) -> Mapping[str, Any]:
    try:
        found = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


class Recorder:
    """Builds a record's rows (a bad record fails alone) and hands them to the batcher; returns once
    they are committed, so the runtime commits the offset only then."""

    def __init__(self, batcher: Batcher, retention_days: float) -> None:
        self._batcher = batcher
        self._retention_days = retention_days
        self._old = SKIPPED.labels("older_than_retention")

    async def record(self, record: Record) -> Sequence[BaseModel]:
        if record.timestamp_ms < horizon(self._retention_days).timestamp() * 1000:
            self._old.inc()
            return []
        found = rows_for(record)
        if len(found):
            await self._batcher.add(found)
        return []
