"""Retry tiers: which tier, how long, and what the hop headers say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from schemas import headers as h
from services.common.errors import InvalidRecord, PermanentError, RetryableError
from services.common.retry import (
    Failure,
    category,
    choose_tier,
    dead_letter_headers,
    parse_retry_after,
    retry_headers,
    tier_delay,
)

DELAYS = [5.0, 300.0, 1800.0, 7200.0]


@pytest.mark.parametrize(
    ("attempt", "retry_after", "tier"),
    [(1, None, 1), (2, None, 2), (1, 3.0, 1), (1, 60.0, 2), (1, 3600.0, 4), (2, 86_400.0, 4), (5, 10.0, 5)],
)
def test_a_long_retry_after_skips_to_a_tier_that_long(attempt: int, retry_after: float | None, tier: int) -> None:
    assert choose_tier(DELAYS, attempt, retry_after) == tier


def test_a_tier_delay_honours_retry_after_but_never_past_its_own_length() -> None:
    assert tier_delay(DELAYS, 1, 0, None, 3600) == 5.0
    assert tier_delay(DELAYS, 2, 0, 120.0, 3600) == 300.0
    assert tier_delay(DELAYS, 1, 0, 4.0, 3600) == 5.0
    assert tier_delay(DELAYS, 4, 0, 86_400.0, 3600) == 7200.0  # the tier, not the day asked for
    assert all(4.0 <= tier_delay(DELAYS, 1, 0.2, None, 3600) <= 6.0 for _ in range(100))


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


def failure(exc: BaseException, attempt: int = 1, headers: dict[str, str] | None = None) -> Failure:
    return Failure(exc, attempt, "main", 2, 40, 1_700_000_000_000, headers or {"ce_id": "e1"})


def test_retry_headers_replace_the_previous_hop_instead_of_stacking() -> None:
    first = retry_headers(failure(RetryableError("boom")), due_at=100.0)
    second = retry_headers(failure(RetryableError("again"), attempt=2, headers=first), due_at=200.0)
    assert second[h.RETRY_ATTEMPT] == "3" and second[h.RETRY_DUE_AT] == "200.000"
    assert second[h.RETRY_FIRST_FAILURE_AT] == first[h.RETRY_FIRST_FAILURE_AT]
    assert second[h.RETRY_LAST_ERROR] == "RetryableError: again"
    assert second["ce_id"] == "e1"


def test_dead_letter_headers_name_origin_reason_and_category() -> None:
    out = dead_letter_headers(failure(InvalidRecord("not valid JSON")), service="router", version="1", group="g")
    assert set(h.DLQ_HEADERS) <= set(out)
    assert out[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_POISON
    assert (out[h.DLQ_ORIGINAL_TOPIC], out[h.DLQ_ORIGINAL_PARTITION], out[h.DLQ_ORIGINAL_OFFSET]) == ("main", "2", "40")
    assert out[h.DLQ_EXCEPTION_MESSAGE] == "InvalidRecord: not valid JSON"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InvalidRecord("x"), h.CATEGORY_POISON),
        (PermanentError("x"), h.CATEGORY_PERMANENT),
        (RetryableError("x"), h.CATEGORY_RETRIES_EXHAUSTED),
        (KeyError("x"), h.CATEGORY_RETRIES_EXHAUSTED),
    ],
)
def test_the_error_class_decides_the_category(exc: BaseException, expected: str) -> None:
    assert category(exc) == expected
