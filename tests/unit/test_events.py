"""Contract behaviour of the v1 events that is not just a field list."""

from __future__ import annotations

import orjson
import pytest

from schemas.end_reasons import EndReason
from schemas.events import ConversationEnded, EndReasonInfo
from services.common.codec import decode, decoder
from services.common.errors import InvalidRecord
from services.devkit.publish import EXAMPLES

BASE = orjson.loads((EXAMPLES / "0001-support-resolved-hangup.json").read_bytes())


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"canonical": "CUSTOMER_HANGUP"}, EndReason.CUSTOMER_HANGUP),
        ({"canonical": "ALIEN_ABDUCTION", "raw": "x"}, EndReason.UNKNOWN),
        ({"raw": "user_hangup", "source_platform": "retell"}, EndReason.CUSTOMER_HANGUP),
        ({"raw": "customer-ended-call", "source_platform": "vapi"}, EndReason.CUSTOMER_HANGUP),
        ({"canonical": "customer-ended-call", "source_platform": "vapi"}, EndReason.CUSTOMER_HANGUP),
        ({"raw": "never-heard-of-it", "source_platform": "vapi"}, EndReason.UNKNOWN),
        ({}, EndReason.UNKNOWN),
    ],
)
def test_an_unknown_end_reason_becomes_unknown_never_an_error(payload: dict[str, str], expected: EndReason) -> None:
    assert EndReasonInfo.model_validate(payload).canonical == expected


def test_the_raw_value_and_platform_are_kept_verbatim() -> None:
    info = EndReasonInfo.model_validate({"raw": "user_hangup", "source_platform": "retell"})
    assert (info.raw, info.source_platform) == ("user_hangup", "retell")


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
    {"started_at": "0001-01-01T00:00Z"},
    {"started_at": "0001-01-01T00:00+14:00"},
    {"ended_at": "9999-12-31T23:50-14:00"},
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
        {**BASE, "started_at": "1970-01-01T00:00Z", "ended_at": "2999-12-31T23:59Z"}
    )
    assert event.started_at.year == 1970 and event.ended_at.year == 2999
