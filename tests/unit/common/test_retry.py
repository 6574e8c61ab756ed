"""Retry tiers: which tier, how long, and what the hop headers say."""

from __future__ import annotations

import pytest

from schemas import headers as h
from services.common.errors import InvalidRecord, PermanentError, RetryableError
from services.common.retry import Failure, category, choose_tier, dead_letter_headers, retry_headers, tier_delay

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
