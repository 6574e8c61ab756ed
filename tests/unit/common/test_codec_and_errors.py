"""Decoding gives clear reasons; HTTP statuses map to the error tree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import BaseModel

from schemas import headers as h
from schemas.topics import CE_TYPES, CONVERSATION_EXTRACTED
from services.common import codec
from services.common.errors import (
    InvalidRecord,
    PermanentError,
    RetryableError,
    classify_http_status,
    parse_retry_after,
    redact,
)


class Thing(BaseModel):
    id: str
    n: int = 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "tombstone"),
        (b"{oops", "not valid JSON"),
        (b'{"n": 1}', "schema violation: id: Field required"),
        (b'{"id": "a", "n": "many"}', "schema violation: n: Input should be a valid integer"),
        (b"x" * 101, "over the 100-byte limit"),
    ],
)
def test_a_bad_record_is_invalid_with_a_clear_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        codec.decode(codec.decoder(Thing), raw, max_bytes=100)


def test_cloudevent_headers_use_the_registry_type_and_the_event_id() -> None:
    class Extracted(BaseModel):
        event_id: str

    out = codec.cloudevent_headers(Extracted(event_id="e-1"), CE_TYPES[CONVERSATION_EXTRACTED], "extractor", "conv-1")
    assert out[h.CE_ID] == "e-1" and out[h.CE_SUBJECT] == "conv-1"
    assert out[h.CE_TYPE] == CE_TYPES[CONVERSATION_EXTRACTED] and out[h.CE_SPECVERSION] == "1.0"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (204, None),
        (302, PermanentError),
        (400, PermanentError),
        (404, PermanentError),
        (408, RetryableError),
        (425, RetryableError),
        (429, RetryableError),
        (500, RetryableError),
        (503, RetryableError),
    ],
)
def test_http_statuses_map_to_the_error_tree(status: int, kind: type[Exception] | None) -> None:
    result = classify_http_status(status, retry_after=7.0)
    assert (result is None) if kind is None else type(result) is kind
    if isinstance(result, RetryableError):
        assert result.retry_after == 7.0


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "120"}, 120.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}, 90.0),
        ({"retry-after": "Sun, 01 Mar 2026 11:00:00 GMT"}, 0.0),  # in the past: no wait
        ({"retry-after": "86400"}, 600.0),  # the cap
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 -1400"}, 600.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # OpenAI-compatible servers
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "1e9"}, None),
        ({"retry-after": "²"}, None),  # str.isdigit() says yes; int() raised
        ({"retry-after": "\u0663"}, None),  # ARABIC-INDIC DIGIT THREE
        ({"retry-after": "9" * 400}, None),  # float(int(...)) overflowed
        ({"retry-after": "Fri, 31 Dec 2026 23:59:59 GMT" + " x" * 100}, None),
        ({"retry-after": "Mon, 99 Foo 2026 99:99:99 GMT"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_retry_after_is_ascii_seconds_or_an_http_date_bounded_by_the_cap(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert parse_retry_after(429, headers, cap=600, now=NOW) == seconds
    assert parse_retry_after(503, headers, cap=600, now=NOW) == seconds


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 408, 500, 502, 504])
def test_retry_after_means_nothing_on_other_statuses(status: int) -> None:
    assert parse_retry_after(status, {"retry-after": "120"}, cap=600, now=NOW) is None
    assert parse_retry_after(status, {"retry-after": "²"}, cap=600, now=NOW) is None


def test_the_cloudevents_sdk_reads_the_headers_we_write_as_the_event_we_meant() -> None:
    """Our codec writes the Kafka binding (docs/adr/0004); the reference SDK must read it back."""
    from cloudevents.core.bindings import kafka
    from cloudevents.core.formats.json import JSONFormat

    from schemas.events import DecisionTrace
    from schemas.topics import DECISIONS

    trace = DecisionTrace(
        event_id="evt-9", conversation_id="conv-1", agent_id="a", config_revision="r", extraction_status="ok",
        decided_at=datetime(2026, 3, 1, 12, tzinfo=UTC), flows=[],
    )  # fmt: skip
    headers = codec.cloudevent_headers(trace, CE_TYPES[DECISIONS], "router", "conv-1")
    message = kafka.KafkaMessage(dict(codec.header_list(headers)), b"conv-1", codec.encode(trace))
    event = kafka.from_binary(message, JSONFormat())
    assert (event.get_id(), event.get_type(), event.get_source()) == ("evt-9", CE_TYPES[DECISIONS], "/postcall/router")
    assert (event.get_specversion(), event.get_subject(), event.get_datacontenttype()) == (
        "1.0",
        "conv-1",
        "application/json",
    )
    when = event.get_time()
    assert when is not None and abs((datetime.now(UTC) - when).total_seconds()) < 5
    assert event.get_data() == trace.model_dump(mode="json")


@pytest.mark.parametrize("limit", [4, 9, 10, 11, 200])
def test_a_redacted_cut_is_never_longer_than_its_limit(limit: int) -> None:
    secrets = ["Bearer tok-CANARY-0123456789", "tok-CANARY-0123456789", "key1"]
    for size in range(limit + 12):
        for tail in ("Bearer tokens expire", "tok-CANA", "key", "Bearkey1tok-"):
            text = redact("x" * size + tail, secrets, limit)
            assert len(text) <= limit, (size, tail, text)
            cut = len(redact("x" * size + tail, secrets)) > limit
            started = any(text.endswith(s[:k]) for s in secrets for k in range(4, len(s)))
            assert not (cut and started), (size, tail, text)
