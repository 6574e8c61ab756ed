"""The integration suite's contract net (tests/support/contract.py) catches a broken record and only that."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas import headers as h
from schemas.topics import CONVERSATION_ENDED, CONVERSATIONS_ENDED
from tests.support.contract import violation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "conversations" / "0001-support-resolved-hangup.json"
SERVICE = [(h.CE_SOURCE, b"/postcall/extractor"), (h.CE_TYPE, CONVERSATIONS_ENDED.ce_type.encode())]


def test_a_valid_record_passes() -> None:
    assert violation(CONVERSATION_ENDED, 0, EXAMPLE.read_bytes(), SERVICE) is None


def test_a_naive_time_produced_by_a_service_is_named_with_its_place() -> None:
    record = orjson.loads(EXAMPLE.read_bytes()) | {"started_at": "2026-11-22T10:00:00"}
    found = violation(CONVERSATION_ENDED, 7, orjson.dumps(record), SERVICE)
    assert found is not None
    assert found.startswith(f"{CONVERSATION_ENDED}@7 from /postcall/extractor") and "started_at" in found


def test_a_test_topic_record_is_checked_by_its_model_name() -> None:
    headers = [(h.CE_SOURCE, b"/postcall/router"), (h.CE_TYPE, b"dev.postcall.DecisionTrace.v1")]
    assert violation("t-123", 0, b'{"event_id": "x"}', headers) is not None


def test_copies_foreign_records_and_unknown_types_are_not_a_services_product() -> None:
    broken = b'{"not": "a conversation"}'
    assert violation(CONVERSATION_ENDED, 0, broken, [(h.CE_TYPE, SERVICE[1][1])]) is None  # a platform's record
    assert violation(CONVERSATION_ENDED, 0, broken, [*SERVICE, (h.ORIGINAL_TOPIC, b"x")]) is None
    assert violation(CONVERSATION_ENDED, 0, broken, [*SERVICE, (h.RETRY_DUE_AT, b"2")]) is None
    assert violation("t", 0, broken, [(h.CE_SOURCE, b"/postcall/worker"), (h.CE_TYPE, b"dev.postcall.Job.v1")]) is None
