"""Contract behaviour of the v1 events that is not just a field list."""

from __future__ import annotations

import pytest

from schemas.end_reasons import EndReason
from schemas.events import EndReasonInfo


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
