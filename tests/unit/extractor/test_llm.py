"""Edges of the openai provider that need no server: Retry-After forms and answer parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import openai
import pytest

from schemas.agents import ExtractionSpec, FieldSpec
from services.extractor import answer
from services.extractor.llm import _parse, _retry_after


def rate_limited(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://llm.example/v1/chat/completions")
    return openai.RateLimitError(
        "slow down", response=httpx2.Response(429, headers=headers, request=request), body=None
    )


def test_retry_after_in_seconds_milliseconds_or_as_a_date() -> None:
    assert _retry_after(rate_limited({"retry-after": "12"})) == 12
    assert _retry_after(rate_limited({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_retry_after(rate_limited({"retry-after": soon})) or 0) <= 31
    assert _retry_after(rate_limited({"retry-after": "whenever"})) is None
    assert _retry_after(rate_limited({})) is None


SPEC = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="n", type="integer")])


def test_a_code_fence_around_the_json_is_tolerated() -> None:
    model = answer.answer_model(SPEC, "1")
    parsed = _parse('```json\n{"fields": {"n": {"value": 3, "evidence": "three", "confidence": 0.8}}}\n```', model)
    assert answer.read_answer(parsed, SPEC)["fields"]["n"].value == 3


def test_invalid_output_names_the_path_for_the_repair_round() -> None:
    model = answer.answer_model(SPEC, "1")
    with pytest.raises(ValueError, match=r"fields\.n\.value"):
        _parse('{"fields": {"n": {"value": "many", "evidence": null, "confidence": 0.8}}}', model)
    with pytest.raises(ValueError, match="not valid JSON"):
        _parse('{"fields": {"n": ', model)
