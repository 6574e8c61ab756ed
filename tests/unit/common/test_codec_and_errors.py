"""Decoding gives clear reasons; HTTP statuses map to the error tree."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from schemas import headers as h
from schemas.topics import CONVERSATION_EXTRACTED
from services.common import codec
from services.common.errors import InvalidRecord, PermanentError, RetryableError, classify_http_status


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
        codec.decode(codec.adapter(Thing), raw, max_bytes=100)


def test_cloudevent_headers_use_the_registry_type_and_the_event_id() -> None:
    class Extracted(BaseModel):
        event_id: str

    out = codec.cloudevent_headers(Extracted(event_id="e-1"), CONVERSATION_EXTRACTED, "extractor", "conv-1")
    assert out[h.CE_ID] == "e-1" and out[h.CE_SUBJECT] == "conv-1"
    assert out[h.CE_TYPE] == h.CE_TYPES[CONVERSATION_EXTRACTED] and out[h.CE_SPECVERSION] == "1.0"


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
