"""The ingress writes a record's value with orjson (publisher.encode_event): the bytes pydantic writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.events import Account, ConversationEnded
from services.common import codec
from services.devkit.webhooks import WEBHOOK_EXAMPLES
from services.ingress.platforms import MAPPINGS
from services.ingress.publisher import encode_event
from tests.unit.ingress.test_mapped_bytes import CONTEXTS, FIXTURES

CONVERSATIONS = Path(__file__).resolve().parents[3] / "examples" / "conversations"


def pydantic_json(event: ConversationEnded) -> bytes:
    encoded: bytes = event.__pydantic_serializer__.to_json(event)
    return encoded


def mapped_events() -> list[ConversationEnded]:
    events = []
    for fixture in FIXTURES:
        payload = orjson.loads((WEBHOOK_EXAMPLES / fixture).read_bytes())
        for context in CONTEXTS.values():
            out = MAPPINGS[fixture.split("/", 1)[0]](payload, context)
            if isinstance(out, ConversationEnded):
                events.append(out)
    return events


def test_every_mapped_fixture_and_example_conversation_is_written_as_pydantic_writes_it() -> None:
    events = mapped_events()
    events += [ConversationEnded.model_validate_json(p.read_bytes()) for p in sorted(CONVERSATIONS.glob("*.json"))]
    assert len(events) >= 20
    for event in events:
        assert encode_event(event) == pydantic_json(event)


def test_an_ordinary_event_is_written_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast way is the one taken (else this change is a no-op that still passes the other tests)."""

    def refused(_: Any) -> bytes:
        raise AssertionError("written by pydantic")

    monkeypatch.setattr(codec, "pydantic_json", refused)  # codec.encode and written_as_pydantic both end there
    for event in mapped_events():
        encode_event(event)


def base(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "conversation_id": "conv-1",
        "occurred_at": "2026-03-10T12:00:00.5Z",
        "account": {"id": "acct-1", "name": "Acme"},
        "agent": {"id": "agent-1", "version": "3"},
        "direction": "inbound",
        "started_at": "2026-03-10T11:58:00+02:00",
        "ended_at": "2026-03-10T11:59:59.000001-05:30",
        "duration_seconds": 119.25,
        "end_reason": {"raw": "customer-ended-call", "source_platform": "vapi"},
        "messages": [{"role": "agent", "text": 'Hé \u2028 "quoted" \\ \x00\x1f', "start_seconds": 0.1}],
        "dynamic_variables": {"n": 1, "f": 1e16, "t": True, "s": "x", "none": None},
        "metadata": {"nested": {"list": [1, 2.5, -0.0, 1e-7, "😀", None, {"k": []}]}, "big": 2**63 - 1},
        "platform_analysis": {"summary": "s", "successful": False, "data": {"a": [1]}, "details": {"b": {}}},
    }
    fields.update(changes)
    return fields


class Text(str):
    pass


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"messages": None, "platform_analysis": None, "customer": {"phone_number": "+1555"}},
        {"messages": [], "metadata": {}, "dynamic_variables": {}},
        {"occurred_at": datetime(2026, 3, 10, 12, tzinfo=timezone(timedelta(0)))},  # a zero offset, not UTC
        {"ended_at": datetime(2026, 3, 10, 12, 0, 0, 999999, tzinfo=timezone(timedelta(hours=-11, minutes=-59)))},
        {"end_reason": {"canonical": "CUSTOMER_HANGUP"}},
        # what orjson writes its own way or refuses: the event is pydantic's JSON
        {"metadata": {"big": 2**64}},
        {"metadata": {"negative": -(2**63) - 1}},
        {"metadata": {"at": datetime(2026, 1, 1, tzinfo=UTC)}},
        {"metadata": {"text": Text("sub")}},
        {"metadata": {"set": {1}}},
        {"metadata": {"bytes": b"x"}},
        {"metadata": {"inner": {1: "not a text key"}}},
        {"metadata": {"t": (1, 2)}},
        {"metadata": {"lone": "\ud800 surrogate"}},  # (a text field refuses it: only free-form values hold one)
        {"platform_analysis": {"details": {"deep": [[[[{"x": 1.5}]]]]}}},
    ],
)
def test_values_either_writer_writes_its_own_way_give_pydantics_bytes(changes: dict[str, Any]) -> None:
    event = ConversationEnded.model_validate(base(**changes))
    assert outcome(encode_event, event) == outcome(pydantic_json, event)


def outcome(encode: Any, event: ConversationEnded) -> bytes | str:
    """The bytes, or the error that writing them raised (pydantic refuses a lone surrogate)."""
    try:
        written: bytes = encode(event)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return written


def test_a_sub_model_of_another_class_is_written_by_pydantic() -> None:
    class Wider(Account):
        region: str = "eu"

    event = ConversationEnded.model_validate(base())
    wider = event.model_copy(update={"account": Wider(id="acct-1")})
    assert encode_event(wider) == pydantic_json(wider)
    assert b"region" not in encode_event(wider)

    class Event(ConversationEnded):
        pass

    subclass = Event.model_validate(base())
    assert encode_event(subclass) == pydantic_json(subclass)
