"""Contract behaviour of the v1 events that is not just a field list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.end_reasons import EndReason
from schemas.events import ConversationEnded, EndReasonInfo, ExtractedValue, Usage
from services.common.codec import decode, decoder
from services.common.errors import InvalidRecord
from services.devkit.publish import EXAMPLES

BASE = orjson.loads((EXAMPLES / "0001-support-resolved-hangup.json").read_bytes())

VALID: dict[str, Any] = {
    "event_id": "e1",
    "conversation_id": "c1",
    "occurred_at": "2026-11-22T10:05:00Z",
    "account": {"id": "acme"},
    "agent": {"id": "support-line"},
    "direction": "inbound",
    "started_at": "2026-11-22T10:00:00+01:00",
    "ended_at": "2026-11-22T10:04:30.250+01:00",
    "duration_seconds": 270,
    "end_reason": {"raw": "customer-ended-call", "source_platform": "vapi"},
}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"canonical": "CUSTOMER_HANGUP"}, EndReason.CUSTOMER_HANGUP),
        ({"raw": "user_hangup", "source_platform": "retell"}, EndReason.CUSTOMER_HANGUP),
        ({"raw": "customer-ended-call", "source_platform": "vapi"}, EndReason.CUSTOMER_HANGUP),
        ({"raw": "never-heard-of-it", "source_platform": "vapi"}, EndReason.UNKNOWN),
        ({}, EndReason.UNKNOWN),
    ],
)
def test_an_absent_canonical_is_mapped_from_raw_and_unknown_raw_values_are_unknown(
    payload: dict[str, str], expected: EndReason
) -> None:
    assert EndReasonInfo.model_validate(payload).canonical == expected


@pytest.mark.parametrize("canonical", [None, "customer-ended-call", "ALIEN_ABDUCTION", "customer_hangup", 3])
def test_a_canonical_outside_the_vocabulary_is_refused_as_the_schema_refuses_it(canonical: Any) -> None:
    with pytest.raises(ValidationError, match="canonical"):
        EndReasonInfo.model_validate_json(orjson.dumps({"canonical": canonical, "raw": "x"}))


def test_the_raw_value_and_platform_are_kept_verbatim() -> None:
    info = EndReasonInfo.model_validate({"raw": "user_hangup", "source_platform": "retell"})
    assert (info.raw, info.source_platform) == ("user_hangup", "retell")


def test_a_valid_event_parses_with_aware_times() -> None:
    event = ConversationEnded.model_validate_json(orjson.dumps(VALID))
    assert event.started_at.utcoffset() is not None
    assert event.duration == 270.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("started_at", "2026-11-22T10:00:00", "time zone"),
        ("started_at", "2026-11-22 10:00:00Z", "time zone"),
        ("started_at", 1795341600000, "RFC 3339"),
        ("occurred_at", "2026-11-22", "time zone"),
        ("duration_seconds", "12.5", "valid number"),
        ("duration_seconds", True, "valid number"),
        ("duration_seconds", -1, "greater than or equal"),
    ],
)
def test_what_the_schema_refuses_the_model_refuses_with_a_clear_message(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        ConversationEnded.model_validate_json(orjson.dumps({**VALID, field: value}))
    assert caught.value.errors()[0]["loc"][0] == field


def test_a_naive_python_datetime_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        ConversationEnded.model_validate({**VALID, "ended_at": datetime(2026, 11, 22, 10, 4)})
    aware = ConversationEnded.model_validate({**VALID, "ended_at": datetime(2026, 11, 22, 10, 4, tzinfo=UTC)})
    assert aware.ended_at.tzinfo is UTC


def test_integers_accept_integral_floats_as_json_schema_does_and_refuse_the_rest() -> None:
    assert Usage.model_validate_json(b'{"prompt_tokens": 12.0}').prompt_tokens == 12
    for bad in (b"12.5", b'"12"', b"true"):
        with pytest.raises(ValidationError, match="valid integer"):
            Usage.model_validate_json(b'{"prompt_tokens": ' + bad + b"}")


def test_booleans_are_only_true_or_false() -> None:
    for bad in (b'"true"', b"1", b'"yes"'):
        with pytest.raises(ValidationError):
            ExtractedValue.model_validate_json(b'{"value": 1, "needs_review": ' + bad + b"}")


def test_platform_analysis_and_estimated_times_are_optional_additions_older_events_still_validate() -> None:
    """A compatible change: an event written before these fields existed validates unchanged, and the
    published schema does not require them."""
    import json
    from pathlib import Path

    from schemas.events import ConversationEnded, PlatformAnalysis

    example = Path(__file__).resolve().parents[2] / "examples/conversations/0001-support-resolved-hangup.json"
    event = ConversationEnded.model_validate_json(example.read_bytes())
    assert event.times_estimated is False and event.platform_analysis is None
    schema = json.loads((example.parents[2] / "schemas/json/ConversationEnded.v1.schema.json").read_text())
    assert {"times_estimated", "platform_analysis"} <= set(schema["properties"])
    assert not {"times_estimated", "platform_analysis"} & set(schema["required"])
    with_analysis = event.model_copy(
        update={"platform_analysis": PlatformAnalysis(summary="Refund issued.", successful=True, data={"refund": 12.5})}
    )
    again = ConversationEnded.model_validate_json(with_analysis.model_dump_json())
    assert again.platform_analysis is not None and again.platform_analysis.data == {"refund": 12.5}


EXTREME_TIMES = [
    {"started_at": "0001-01-01T00:00:00Z"},
    {"started_at": "0001-01-01T00:00:00+14:00"},
    {"ended_at": "9999-12-31T23:50:00-14:00"},
    {"occurred_at": "9999-12-31T23:59:59Z"},
    {"started_at": "1969-12-31T23:59:59Z"},
    {"ended_at": "3000-01-01T00:00:00Z"},
]


@pytest.mark.parametrize("change", EXTREME_TIMES, ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))}")
def test_a_time_at_the_edge_of_the_calendar_is_poison_at_once(change: dict[str, str]) -> None:
    """A year-1 or year-9999 time overflows on a time-zone shift later on: the contract refuses it."""
    event = {**BASE, **change}
    with pytest.raises(InvalidRecord, match="time out of range"):
        decode(decoder(ConversationEnded), orjson.dumps(event), 1 << 20)


def test_times_inside_the_range_are_kept() -> None:
    event = ConversationEnded.model_validate(
        {**BASE, "started_at": "1970-01-01T00:00:00Z", "ended_at": "2999-12-31T23:59:00-14:00"}
    )
    assert event.started_at.year == 1970 and event.ended_at.year == 2999


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 22, 10, 4, 5, 123456, tzinfo=UTC),
        datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(3000, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
    ],
    ids=str,
)
def test_a_python_time_in_utc_is_checked_as_its_text_is(moment: datetime) -> None:
    """A datetime in UTC itself takes a shorter way through the time check (the ingress's mappings build
    three per event): it is kept or refused as the same time written in RFC 3339, and as the same time in
    another zero-offset tzinfo, with the same message."""

    def outcome(value: Any) -> tuple[str, Any]:
        try:
            return "kept", ConversationEnded.model_validate({**BASE, "ended_at": value}).ended_at
        except ValidationError as exc:
            return "refused", [(e["loc"], e["msg"]) for e in exc.errors()]

    text = moment.isoformat().replace("+00:00", "Z")
    zero = moment.replace(tzinfo=timezone(timedelta(0), "zero"))  # (unnamed, it would be UTC itself)
    got, as_text, as_zero = outcome(moment), outcome(text), outcome(zero)
    assert got[0] == as_text[0] == as_zero[0]
    if got[0] == "kept":
        assert got[1] == as_text[1] == as_zero[1] == moment and got[1].tzinfo is UTC
    else:
        assert got[1] == as_text[1] == as_zero[1]
        assert "time out of range" in got[1][0][1]
