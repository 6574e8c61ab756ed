"""Edges of the openai provider that need no server: answer parsing (Retry-After: tests/unit/common)."""

from __future__ import annotations

import pytest

from schemas.agents import ExtractionSpec, FieldSpec
from services.extractor import answer
from services.extractor.llm import _parse

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
