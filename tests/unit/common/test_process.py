"""Retry tiers: which tier, how long; the error class decides the dead-letter category; record contexts."""

from __future__ import annotations

import dataclasses

import pytest

from schemas import headers as h
from services.common import codec
from services.common.api import Context
from services.common.errors import InvalidRecord, PermanentError, RetryableError
from services.common.process import category, choose_tier, dead_letter_headers, describe, new_context, tier_delay

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


def test_new_context_is_the_frozen_context_the_dataclass_would_build() -> None:
    values = ("svc", "topic", 2, 41, "key", 1_700_000_000_000, 3, {"ce_id": "a"}, {"ce_id": "a", "x-attempts": "2"})
    built = new_context(*values)
    assert type(built) is Context
    assert built == Context(*values)
    assert [getattr(built, f.name) for f in dataclasses.fields(Context)] == list(values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.offset = 1  # type: ignore[misc]


def test_an_exception_message_with_a_lone_surrogate_still_makes_headers_a_producer_can_write() -> None:
    """Half an emoji in a remote's text (Python's json reads its escape as a lone surrogate) went into the
    exception-message header as it was: encoding the retry copy's or dead letter's headers raised, an
    internal error that stopped the service, and after the restart the record failed the same way."""
    exc = PermanentError("model refused: no \ud83d thanks")
    ctx = new_context("svc", "t", 0, 5, "k", 0, 1, {}, {})
    record = type("Record", (), {"headers": [], "topic": "t"})()
    codec.header_list(dead_letter_headers(record, ctx, exc, service="svc", version="1", group="g"))
    assert describe(exc) == "PermanentError: model refused: no \\ud83d thanks"
    assert describe(RetryableError("plain")) == "RetryableError: plain"
