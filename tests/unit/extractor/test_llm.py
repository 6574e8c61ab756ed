"""Edges of the openai provider that need no server: answer parsing (Retry-After: tests/unit/common)."""

from __future__ import annotations

import openai
import pytest
from pydantic import ValidationError

from schemas.agents import ExtractionSpec, FieldSpec, TriggerSpec
from schemas.events import Message
from services.extractor import answer, prompt
from services.extractor.capabilities import Capabilities, request_invalid
from services.extractor.llm import _TOKEN_COUNTS, OpenAIProvider, _drop_loops, _loop, _parse, _runaway
from services.extractor.settings import CHARS_PER_TOKEN, CircuitSettings, LlmSettings

SPEC = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="n", type="integer")])


def test_a_code_fence_around_the_json_is_tolerated() -> None:
    model = answer.answer_model(SPEC, "1")
    parsed, data = _parse(
        '```json\n{"fields": {"n": {"value": 3, "evidence": "three", "confidence": 0.8}}}\n```', model
    )
    assert answer.read_answer(parsed, SPEC, data)["fields"]["n"].value == 3


def test_invalid_output_names_the_path_for_the_repair_round() -> None:
    model = answer.answer_model(SPEC, "1")
    with pytest.raises(ValueError, match=r"fields\.n\.value"):
        _parse('{"fields": {"n": {"value": "many", "evidence": null, "confidence": 0.8}}}', model)
    with pytest.raises(ValueError, match="not valid JSON"):
        _parse('{"fields": {"n": ', model)


def test_raw_control_characters_inside_strings_are_dropped_not_fatal() -> None:
    model = answer.answer_model(SPEC, "1")
    parsed, _ = _parse('{"fields": {"n": {"value": 3, "evidence": "th\x01ree\nlines", "confidence": 0.8}}}', model)
    assert parsed.model_dump(by_alias=True)["fields"]["n"]["evidence"] == "three lines"


def test_a_looping_answer_is_recognised_with_what_it_repeats() -> None:
    looping = '{"fields": {"n": {"value": 3, "evidence": "' + "ha " * 200
    assert _loop(looping) == "ha "
    assert _loop('{"fields": {"n": {"value": 3, "evidence": "three", "confidence": 0.8}}}') is None
    assert "cut off at the 120-token cap" in (_runaway(looping, "length", 120) or "")
    assert _runaway(looping, "stop", 120) is None


def test_the_token_counts_of_a_context_overflow_are_read() -> None:
    m = _TOKEN_COUNTS.search("request (8224 tokens) exceeds the available context size (8192 tokens), try increasing")
    assert m is not None and (m.group(1), m.group(2)) == ("8224", "8192")


@pytest.mark.parametrize(
    ("status", "body", "invalid"),
    [
        (400, "bad request", True),
        (422, "Unprocessable", True),
        (401, "no key", False),
        (404, "model not found", False),
        (429, "slow down", False),
        (500, "1 validation error for CreateChatCompletionRequest response_format.type Input should be 'text'", True),
        (500, "tools param requires --jinja flag", True),  # llama-server started without --jinja
        (500, "internal server error", False),
        (503, "loading model", False),
        # a gateway or load balancer in front of the server, down or busy, in words that read like a refusal:
        # the endpoint is unavailable (retried, probed again), not wrongly asked (a configuration error that
        # failed every record until a restart when the probe met it)
        (502, "upstream answered with an unsupported protocol version", False),
        (503, "model gpt-4o is not supported on this replica right now", False),
        (504, "invalid response from upstream", False),
    ],
)
def test_which_answers_say_the_request_itself_is_invalid(status: int, body: str, invalid: bool) -> None:
    assert request_invalid(status, body) is invalid


def test_strings_that_loop_are_dropped_with_their_values() -> None:
    data = {
        "fields": {
            "n": {"value": 3, "evidence": "the bill, the bill, the bill, the bill", "confidence": 0.9},
            "m": {"value": 4, "evidence": "four seats", "confidence": 0.9},
        },
        "triggers": {
            "t": {"answer": True, "rationale": "of the bill of the bill of the bill of the bill", "evidence": None}
        },
    }
    cleaned, looped = _drop_loops(data)
    assert looped == ["fields.n.evidence", "triggers.t.rationale"]
    assert cleaned["fields"]["n"] == {"value": None, "evidence": None, "confidence": 0.9}
    assert cleaned["fields"]["m"]["value"] == 4 and cleaned["triggers"]["t"]["rationale"] == ""
    assert _drop_loops({"summary": "Ann booked a table for two at seven."}) == (
        {"summary": "Ann booked a table for two at seven."},
        [],
    )


def test_a_loop_in_one_slot_empties_only_that_slot_even_beside_a_field_named_value() -> None:
    """`value` is a valid field name: a loop elsewhere must neither null its slot (the answer then fails
    validation, an unknown exception) nor empty its value."""
    fields = [FieldSpec(name="value", type="number"), FieldSpec(name="note", type="string")]
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=fields)
    data = {
        "fields": {
            "value": {"value": 12000, "evidence": "twelve thousand", "confidence": 0.9},
            "note": {"value": "ok", "evidence": "the bill, the bill, the bill, the bill", "confidence": 0.9},
        }
    }
    cleaned, looped = _drop_loops(data)
    assert looped == ["fields.note.evidence"]
    assert cleaned["fields"]["value"] == {"value": 12000, "evidence": "twelve thousand", "confidence": 0.9}
    assert cleaned["fields"]["note"] == {"value": None, "evidence": None, "confidence": 0.9}
    answer.answer_model(spec, "1").model_validate(cleaned)


def test_a_confidence_written_as_a_string_is_clamped_or_repaired_never_a_crash_after_validation() -> None:
    """Without a grammar (prompt mode) a model may write "95" or "NaN": the answer validated, then the
    record's own model refused it (ValidationError, an unknown exception retried through every tier)."""
    spec = SPEC.model_copy(update={"triggers": [TriggerSpec(id="t", question="Did they ask?")]})
    model = answer.answer_model(spec, "1")

    def said(confidence: str) -> str:
        slot = f'"value": 3, "evidence": "three", "confidence": {confidence}'
        trigger = f'"answer": true, "rationale": "", "evidence": null, "confidence": {confidence}'
        return f'{{"fields": {{"n": {{{slot}}}}}, "triggers": {{"t": {{{trigger}}}}}}}'

    parsed, data = _parse(said('"95"'), model)
    read = answer.read_answer(parsed, spec, data)
    assert read["fields"]["n"].confidence == 1.0 and read["triggers"]["t"].confidence == 1.0
    with pytest.raises(ValueError, match=r"fields\.n\.confidence"):  # shown to the model in the repair round
        _parse(said('"NaN"'), model)


@pytest.mark.parametrize(("opening", "closing", "depth"), [("[", "]", 1100), ('{"a":', "}", 1000), ("[", "]", 100)])
def test_an_answer_nested_past_any_schema_is_invalid_for_the_repair_round_not_a_crash(
    opening: str, closing: str, depth: int
) -> None:
    """A key the schema does not know, nested a thousand deep: json.loads (orjson stops at 1024) or
    _drop_loops ran out of stack, a RecursionError that spent the retry tiers with a model call each."""
    model = answer.answer_model(SPEC, "1")
    text = '{"fields": {"n": {"value": 3, "evidence": "three", "confidence": 0.8}}, "x": '
    with pytest.raises(ValueError, match=r"nested deeper than 64 levels|not valid JSON: depth limit exceeded"):
        _, data = _parse(text + opening * depth + "1" + closing * depth + "}", model)
        _drop_loops(data)  # what _answer does with a parsed answer


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://vllm:99999/v1", "the URL's port is not 1-65535"),
        ("http://ops:s3cret@vllm..local:8000/v1", "the URL's host is not a valid name"),
        ("http://vllm:8000/v1 ", "the URL has a space or control character"),
    ],
)
def test_an_llm_base_url_httpx_cannot_send_to_is_refused_at_start_without_quoting_it(url: str, problem: str) -> None:
    """Before: accepted (the settings' own check had neither rule), then every extraction failed at connect."""
    with pytest.raises(ValidationError) as refused:
        LlmSettings(base_url=url)
    said = str(refused.value.errors()[0]["msg"])
    assert said.startswith(f"Value error, {problem}") and "s3cret" not in said


@pytest.mark.parametrize("max_output_tokens", [None, 256, 4096])
async def test_a_transcript_fitted_to_a_known_window_leaves_room_for_the_answer_asked_for(
    max_output_tokens: int | None,
) -> None:
    """The budget kept room for twice the schema's answer cap, while the request asks for max_output_tokens
    when it is set: with 4096 in an 8192-token window, the prompt and the answer asked for came to 9,536
    tokens. A server that checks (vLLM) refuses such a request: a 400, then a shrink to half and a second
    request, for every long transcript."""
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=True,
                          fields=[FieldSpec(name=f"f{i}", type="string") for i in range(6)])  # fmt: skip
    settings = LlmSettings(base_url="http://127.0.0.1:1/v1", max_output_tokens=max_output_tokens)
    client = openai.AsyncOpenAI(api_key="unused", base_url=settings.base_url, max_retries=0)
    provider = OpenAIProvider(client, settings, CircuitSettings(), "1", Capabilities(context_tokens=8192),
                              retry_after_cap=60)  # fmt: skip
    messages = [Message(role="customer", text="word " * 40) for _ in range(2_000)]
    fitted = provider.fit(spec, messages)
    compiled = provider._compile(spec)
    sent = prompt.messages(compiled.text, "Conversation c: inbound phone, ended 2026-03-13T10:00.", fitted.text, True)
    asked = max_output_tokens or compiled.max_tokens
    assert fitted.truncated
    assert sum(len(m["content"]) for m in sent) // CHARS_PER_TOKEN + asked <= 8192
    await client.close()
