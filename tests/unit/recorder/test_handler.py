"""Which rows each topic's records become."""

from __future__ import annotations

import orjson
import pytest

from schemas import headers as h
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS
from services.common.errors import InvalidRecord
from services.recorder.handler import Record, rows_for
from tests.support.calls import T0, ended, story

MS = int(T0.timestamp() * 1000)


def record(topic: str, value: bytes | None, headers: dict[str, str] | None = None, key: str = "c1") -> Record:
    return Record(topic, 1, 7, MS, key, value, headers or {})


def test_each_main_topic_becomes_its_rows() -> None:
    built = {topic: rows_for(record(topic, value.model_dump_json().encode())) for topic, value in story("c1")}
    assert len(built[CONVERSATION_ENDED].conversations) == 1
    assert len(built[CONVERSATION_EXTRACTED].extractions) == 1
    assert built[CONVERSATION_EXTRACTED].extractions[0]["kafka_offset"] == 7
    assert {a["flow_id"] for a in built[DECISIONS].actions} == {"crm-sync"}
    assert built[ACTION_RESULTS].attempts[0]["outcome"] == "published"  # the last result of the story


def test_a_record_that_does_not_fit_its_schema_is_poison() -> None:
    with pytest.raises(InvalidRecord, match="not valid JSON"):
        rows_for(record(CONVERSATION_ENDED, b"{nope"))
    with pytest.raises(InvalidRecord, match="tombstone"):
        rows_for(record(DECISIONS, None))
    with pytest.raises(InvalidRecord, match="does not read"):
        rows_for(record("postcall.something-else.v1", b"{}"))


def test_a_dead_letter_is_stored_whatever_its_value() -> None:
    headers = {h.DLQ_EXCEPTION_MESSAGE: "InvalidRecord: not valid JSON", h.DLQ_VALUE_DROPPED: "too large"}
    for value in (b"\xff\xfe", None, ended("c9").model_dump_json().encode()):
        (row,) = rows_for(record("postcall.extractor.dlq.v1", value, headers)).dead_letters
        assert row["service"] == "extractor" and row["value"] == value and row["kafka_offset"] == 7


def test_a_replay_marker_marks_instead_of_adding_a_dead_letter() -> None:
    marker = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:1:3", h.REPLAYED_BY: "ops@box"}
    built = rows_for(record("postcall.router.dlq.v1", b'{"replayed": "postcall.router.dlq.v1:1:3"}', marker))
    assert not built.dead_letters and built.replays[0]["kafka_offset"] == 3


def test_a_dispatcher_retry_copy_says_when_the_next_attempt_is_due() -> None:
    action = {"action_id": "a1", "conversation_id": "c1", "type": "webhook"}
    headers = {h.RETRY_ATTEMPT: "3", h.RETRY_DUE_AT: f"{T0.timestamp() + 60:.3f}"}
    (row,) = rows_for(record("postcall.dispatcher.retry-2.v1", orjson.dumps(action), headers)).retries
    assert (row["action_id"], row["attempt"], (row["due_at"] - T0).total_seconds()) == ("a1", 3, 60)
    assert not rows_for(record("postcall.dispatcher.retry-1.v1", b"[]", headers)).retries
