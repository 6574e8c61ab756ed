"""The openai provider against a real OpenAI-compatible HTTP server, through the real `openai` client:
structured output, evidence and cost; 429, 5xx, timeouts and refused connections; the repair round;
refusals and context limits; the token budget; and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from schemas.agents import ExtractionSpec, FieldSpec, RecipientRoute, RecipientRule, TriggerSpec
from schemas.events import MAX_COUNT, ConversationEnded, ConversationExtracted, Message
from services.common import codec
from services.common.api import DependencyUnavailable, PermanentError, RetryableError
from services.common.harness import Harness, Outcome
from services.extractor.__main__ import open_http, open_provider
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings
from tests.integration.extractor.conftest import extractor, settings_for
from tests.support.fake_llm import LONE, FakeLLM
from tests.unit.extractor.conftest import conversation

CALLBACK = TriggerSpec(id="trg_callback", question="Did the customer ask to be called back?")
SPEC = ExtractionSpec(
    agent_id="support-line",
    config_revision="rev-7",
    fields=[
        FieldSpec(name="customer_name", type="string", description="Customer full name"),
        FieldSpec(name="callback_number", type="phone", description="Phone number to call back"),
        FieldSpec(name="callback_at", type="datetime", description="When to call back"),
        FieldSpec(name="team_size", type="integer", description="Number of technicians"),
        FieldSpec(name="plan", type="enum", values=["basic", "pro", "enterprise"]),
        FieldSpec(name="email", type="email"),
    ],
    dynamic_variables=["dyn_topic"],
    triggers=[CALLBACK],
    recipient_routes=[
        RecipientRoute(
            id="team",
            rules=[RecipientRule(when="billing", to=["billing@x.example"]),
                   RecipientRule(when="plan upgrades", to=["sales@x.example"])],
            fallback=["support@x.example"],
        )
    ],
)  # fmt: skip


def one_attempt(ex: Extractor) -> Harness[ConversationEnded]:
    """The extractor on the in-memory runtime, one attempt per record (retry copies are not taken)."""
    return Harness(ex.service(), burst=False)


def numbered(i: int) -> ConversationEnded:
    """Conversation 0005 as the i-th call of its own (another event id: not a copy of an earlier one)."""
    return conversation("0005").model_copy(update={"event_id": f"evt-0005-{i}"})


def script_callback_call(fake: FakeLLM) -> None:
    fake.script.fields = {
        "customer_name": ("Tom Becker", "It's Tom Becker, from Becker Roofing."),
        "callback_number": ("+1 312 555 0178", "It's 312 555 0178."),
        "callback_at": ("2026-03-13T15:00:00-05:00", "Could you call me back tomorrow at 3 pm?"),
        "team_size": ("15", "growing from six to about fifteen technicians"),
        "plan": ("Pro", "so we probably need the Pro plan"),
        "email": None,
    }
    fake.script.dynamic = {"dyn_topic": ("Pro plan pricing", "I'm making it up")}
    fake.script.triggers = {CALLBACK.id: (True, "Could you call me back tomorrow at 3 pm?")}
    fake.script.recipients = {"team": "rule_2"}
    fake.script.summary = "Tom Becker asked for a callback tomorrow at 3 pm about the Pro plan."


async def attempt(fake: FakeLLM, tmp_path: Path, spec: ExtractionSpec = SPEC, **overrides: Any) -> Outcome:
    async with extractor(fake, spec, tmp_path, **overrides) as ex:
        return await one_attempt(ex).send(conversation("0005"))


async def extract(
    fake: FakeLLM, tmp_path: Path, spec: ExtractionSpec = SPEC, **overrides: Any
) -> ConversationExtracted:
    """The extracted record of one attempt; the attempt's error is raised."""
    out = await attempt(fake, tmp_path, spec, **overrides)
    if out.error is not None:
        raise out.error
    [event] = out.events
    assert isinstance(event, ConversationExtracted)
    return event


async def test_structured_extraction_with_evidence_confidence_and_cost(llm: FakeLLM, tmp_path: Path) -> None:
    script_callback_call(llm)
    out = await extract(llm, tmp_path)
    e = out.extraction
    assert (e.status, e.provider, e.model, e.config_revision) == ("ok", "openai", "gpt-4o-mini", "rev-7")
    assert {k: v.value for k, v in e.fields.items()} == {
        "customer_name": "Tom Becker",
        "callback_number": "+13125550178",
        "callback_at": "2026-03-13T15:00:00-05:00",
        "team_size": 15,
        "plan": "pro",
        "email": None,
    }
    assert e.fields["customer_name"].evidence == "It's Tom Becker, from Becker Roofing."
    assert e.fields["customer_name"].confidence == 0.9 and not e.fields["customer_name"].needs_review
    # a quote that is not in the transcript: confidence halved, flagged for review
    assert e.dynamic["dyn_topic"].needs_review and e.dynamic["dyn_topic"].confidence == 0.45
    assert e.triggers[CALLBACK.id].answer is True and e.triggers[CALLBACK.id].question == CALLBACK.question
    assert e.recipients == {"team": ["sales@x.example"]}
    assert e.summary == "Tom Becker asked for a callback tomorrow at 3 pm about the Pro plan."
    assert e.usage.prompt_tokens > 0 and e.usage.completion_tokens > 0
    assert e.usage.cached_prompt_tokens == e.usage.prompt_tokens // 2
    expected = (
        (e.usage.prompt_tokens - e.usage.cached_prompt_tokens) * 0.15
        + e.usage.cached_prompt_tokens * 0.075
        + e.usage.completion_tokens * 0.60
    ) / 1e6
    assert e.usage.cost_usd == pytest.approx(expected, abs=1e-8)
    assert llm.count == 1


@pytest.mark.parametrize("arguments", ["string", "object"])
async def test_a_forced_tool_calls_arguments_are_the_answer_as_json_text_or_as_an_object(
    llm: FakeLLM, tmp_path: Path, arguments: str
) -> None:
    """OpenAI writes a tool call's `arguments` as JSON text; llama-server (builds of March 2026, until
    --tool-args-compat) and TGI write the object itself. The client keeps either as it came: an object was
    passed over, the empty content was 'not valid JSON', and every extraction failed after a repair round."""
    script_callback_call(llm)
    llm.tool_arguments = arguments
    out = await extract(llm, tmp_path, llm={"structured_output": "tools"})
    assert "tools" in llm.requests[0] and "response_format" not in llm.requests[0]
    e = out.extraction
    assert e.status == "ok" and e.fields["team_size"].value == 15 and e.recipients == {"team": ["sales@x.example"]}
    assert e.summary == "Tom Becker asked for a callback tomorrow at 3 pm about the Pro plan."
    assert llm.count == 1


async def test_content_written_as_content_parts_is_read_and_a_refusal_object_is_a_refusal(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """Mistral's reasoning models answer `content` as a list of parts ("thinking", then "text"); the client
    keeps whatever shape came. A list (or a refusal that is an object) was an AttributeError or TypeError:
    an unknown exception, retried through the tiers with a model call each, then dead-lettered."""
    script_callback_call(llm)
    llm.content_parts = True
    e = (await extract(llm, tmp_path)).extraction
    assert e.status == "ok" and e.fields["team_size"].value == 15 and llm.count == 1
    llm.mode = "refusal"
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "model refused" in str(out.error)
    assert llm.count == 2  # no repair round for a refusal


ODD_USAGE = [  # the usage object a server sent, and the (prompt, completion, cached) counts kept
    ({"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}, (0, 0, 0)),
    ({"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2}, (0, 3, 0)),
    ({"prompt_tokens": "120", "completion_tokens": 12.5, "total_tokens": 132}, (0, 0, 0)),
    ({"prompt_tokens": 120, "completion_tokens": 30.0, "prompt_tokens_details": {"cached_tokens": -40}}, (120, 30, 0)),
    ({"prompt_tokens": True, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": None}}, (0, 30, 0)),
    ({"prompt_tokens": 2**63, "completion_tokens": MAX_COUNT + 1}, (0, 0, 0)),  # what no store column holds
]


ODD_USAGE_IDS = ["nulls", "negative", "text-and-fraction", "negative-cached", "bool", "past-64-bits"]


@pytest.mark.parametrize(("usage", "counts"), ODD_USAGE, ids=ODD_USAGE_IDS)
async def test_token_counts_the_server_cannot_have_meant_are_not_counted_and_the_extraction_stands(
    llm: FakeLLM, tmp_path: Path, usage: dict[str, Any], counts: tuple[int, int, int]
) -> None:
    # the client does not validate the answer: a server's usage object reaches the extractor as sent. It
    # raised (TypeError, or prometheus' ValueError on a negative count) after the answer was paid for:
    # an unknown error, so the record went round the retry tiers, one paid call each, to a dead letter
    script_callback_call(llm)
    llm.usage = usage
    e = (await extract(llm, tmp_path)).extraction
    assert (e.status, e.fields["customer_name"].value) == ("ok", "Tom Becker")
    assert (e.usage.prompt_tokens, e.usage.completion_tokens, e.usage.cached_prompt_tokens) == counts
    assert llm.count == 1


async def test_the_request_is_strict_json_schema_with_the_static_prefix_first(llm: FakeLLM, tmp_path: Path) -> None:
    async with extractor(llm, SPEC, tmp_path) as ex:
        await one_attempt(ex).send(conversation("0005"))
        await one_attempt(ex).send(conversation("0006"))
    first, second = llm.requests
    fmt = first["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"fields", "dynamic", "triggers", "recipients", "summary"}
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    # instructions and the agent's schema are byte-identical across calls: the cacheable prefix
    assert first["messages"][:2] == second["messages"][:2]
    assert first["response_format"] == second["response_format"]
    assert "Transcript:" in first["messages"][2]["content"]
    assert "Tom Becker" in first["messages"][2]["content"] and "Tom Becker" not in first["messages"][1]["content"]
    assert first["temperature"] == 0


async def test_the_agent_can_choose_its_own_model(llm: FakeLLM, tmp_path: Path) -> None:
    out = await extract(llm, tmp_path, SPEC.model_copy(update={"model": "qwen2.5-7b-instruct"}))
    assert llm.requests[0]["model"] == "qwen2.5-7b-instruct"
    assert out.extraction.model == "qwen2.5-7b-instruct"
    assert out.extraction.usage.cost_usd == 0.0  # not in the price table


async def test_a_model_one_agent_names_that_the_endpoint_lacks_fails_that_agent_not_every_agent(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """One agent's own model the endpoint does not serve is that agent's configuration error: on its
    records (permanent, `failed`), never the circuit that pauses extraction for every agent."""
    llm.unknown_models = {"no-such-model"}
    own = SPEC.model_copy(update={"model": "no-such-model"})
    async with extractor(llm, SPEC, tmp_path, circuit={"failure_threshold": 2}) as ex:
        for i in range(3):
            with pytest.raises(PermanentError, match=r"configuration error.*no-such-model.*HTTP 404"):
                await ex.extract(numbered(i), own)
        assert (await ex.extract(numbered(3), SPEC)).status == "ok"  # the other agents go on


async def test_429_is_retryable_with_the_retry_after_header_and_no_hidden_retries(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode, llm.retry_after = "rate_limit", "7"
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, RetryableError) and out.error.retry_after == 7
    assert not isinstance(out.error, DependencyUnavailable)
    assert (out.status, out.outputs) == ("retrying", [])  # nothing produced while retries remain
    assert llm.count == 1  # max_retries=0: the runtime is the one layer that retries


async def test_a_retry_after_of_a_day_is_cut_to_the_configured_maximum(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode, llm.retry_after = "rate_limit", "86400"
    with pytest.raises(RetryableError) as caught:
        await extract(llm, tmp_path)
    assert caught.value.retry_after == 300  # the extractor's default runtime.retry_after_cap_seconds
    circuit = {"failure_threshold": 1, "cooldown_seconds": 15}
    with pytest.raises(DependencyUnavailable) as outage:
        await extract(llm, tmp_path, circuit=circuit, runtime={"retry_after_cap_seconds": 120})
    assert outage.value.retry_after == 120  # the pause the runtime takes, not a day
    with pytest.raises(DependencyUnavailable) as short:
        await extract(llm, tmp_path, circuit={"failure_threshold": 1, "cooldown_seconds": 200},
                      runtime={"retry_after_cap_seconds": 120})  # fmt: skip
    assert short.value.retry_after == 200  # never shorter than the circuit's own cool-down


async def test_500_is_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode = "error"
    with pytest.raises(RetryableError, match="HTTP 500"):
        await extract(llm, tmp_path)
    assert llm.count == 1


async def test_a_request_past_the_timeout_is_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode, llm.slow_seconds = "slow", 5
    with pytest.raises(RetryableError, match="timeout"):
        await extract(llm, tmp_path, llm={"request_timeout_seconds": 0.3})


async def test_a_request_whose_answer_trickles_in_past_the_timeout_is_a_timeout_counted_by_the_circuit(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # the client's timeout bounds each read: 30 spaces 0.1 s apart (3 s) never wait 0.5 s for a byte
    llm.mode, llm.trickle_seconds, llm.trickle_bytes = "trickle", 0.1, 30
    circuit = {"failure_threshold": 1, "window_seconds": 30, "cooldown_seconds": 30}
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="timeout"):  # the one failure the circuit allows opens it
        await extract(llm, tmp_path, llm={"request_timeout_seconds": 0.5}, circuit=circuit)
    assert time.monotonic() - started < 2.5


async def test_a_refused_connection_is_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.down()
    with pytest.raises(RetryableError, match="connection error"):
        await extract(llm, tmp_path)


@pytest.mark.parametrize("mode", ["error_body", "gateway_page"])
async def test_a_200_that_is_no_chat_completion_is_an_endpoint_failure_not_model_output(
    llm: FakeLLM, tmp_path: Path, mode: str
) -> None:
    """A gateway's error object or a proxy's HTML page with HTTP 200 says nothing about the conversation:
    retryable, counted by the circuit (an endpoint answering so pauses extraction), never a repair round
    and a permanent dead letter, nor an unknown exception that names no LLM."""
    llm.mode = mode
    with pytest.raises(RetryableError, match="not a chat completion") as caught:
        await extract(llm, tmp_path)
    assert not isinstance(caught.value, PermanentError)
    assert llm.count == 1
    with pytest.raises(DependencyUnavailable):
        await extract(llm, tmp_path, circuit={"failure_threshold": 1})


async def test_malformed_json_gets_one_repair_round(llm: FakeLLM, tmp_path: Path) -> None:
    script_callback_call(llm)
    llm.then("malformed")
    out = await extract(llm, tmp_path)
    assert out.extraction.status == "ok" and out.extraction.fields["customer_name"].value == "Tom Becker"
    assert llm.count == 2
    repair = llm.requests[1]["messages"]
    assert repair[:3] == llm.requests[0]["messages"]
    assert repair[3]["role"] == "assistant" and repair[4]["role"] == "user"
    assert "not valid JSON" in repair[4]["content"]
    # both calls are paid for: the usage adds them up
    assert out.extraction.usage.prompt_tokens == sum(len(orjson.dumps(r["messages"])) // 4 for r in llm.requests)


async def test_schema_breaking_json_is_repaired_with_the_validation_error(llm: FakeLLM, tmp_path: Path) -> None:
    script_callback_call(llm)
    llm.then("schema_break")
    out = await extract(llm, tmp_path)
    assert out.extraction.status == "ok"
    assert llm.count == 2
    assert "fields.customer_name.value" in llm.requests[1]["messages"][4]["content"]


async def test_output_still_invalid_after_the_repair_fails_permanently_but_says_failed(
    llm: FakeLLM, tmp_path: Path
) -> None:
    llm.then("schema_break", "schema_break")
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "invalid after one repair" in str(out.error)
    assert out.status == "dead_lettered"
    [record] = out.outputs
    assert isinstance(record.event, ConversationExtracted)
    assert record.key == record.event.conversation.conversation_id.encode()
    failed = record.event.extraction
    assert failed.status == "failed" and "invalid after one repair" in (failed.reason or "")
    assert failed.provider == "openai" and failed.model == "gpt-4o-mini" and failed.config_revision == "rev-7"
    assert failed.usage.prompt_tokens > 0  # the two calls were paid for
    assert llm.count == 2


async def test_an_answer_past_the_room_an_extracted_record_has_is_cut_off_not_published(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """The extracted record is the conversation plus its extraction, and the router reads up to 4 MiB: an
    event may take all but EXTRACTION_ROOM_BYTES (512 KiB), on the promise that max_tokens caps the answer.
    A server that ignores max_tokens (the fake does) answered a 600,000-character summary, published as
    `ok` in a record over what the router reads. Now it is an answer cut off: one repair round asking for a
    short answer, then a failed extraction the router can read."""
    script_callback_call(llm)
    llm.script.summary = " ".join(f"word{i}" for i in range(60_000))  # ~600,000 characters, no loop in it
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "cut off after one repair" in str(out.error)
    assert "characters, over the" in str(out.error)
    [record] = out.outputs
    assert isinstance(record.event, ConversationExtracted) and record.event.extraction.status == "failed"
    assert len(record.event.model_dump_json()) < 100_000
    assert llm.count == 2
    assert "Keep each evidence quote under 20 words" in llm.requests[1]["messages"][-1]["content"]


async def test_half_an_emoji_in_the_answer_or_a_refusal_is_dropped_not_a_record_no_one_can_write(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """A lone surrogate (the JSON escape of half an emoji, which a small model writes when it splits one) is
    read by Python's json and refused by every UTF-8 writer: the extracted record, or the failed one naming a
    refusal, could not be encoded. An unknown exception, retried through the tiers with a model call each."""
    script_callback_call(llm)
    llm.script.summary = f"Tom wants a callback {LONE}."
    e = (await extract(llm, tmp_path)).extraction
    assert e.status == "ok" and e.summary == "Tom wants a callback ." and llm.count == 1
    llm.mode, llm.refusal = "refusal", f"No {LONE} thanks"
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "model refused: No  thanks" in str(out.error)
    [record] = out.outputs
    assert isinstance(record.event, ConversationExtracted) and record.event.extraction.status == "failed"
    [letter] = out.dead_letters
    codec.header_list(letter.headers)  # what the producer writes (the harness does not)


async def test_a_refusal_fails_permanently_without_a_repair(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode = "refusal"
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "model refused" in str(out.error)
    assert out.events[0].extraction.status == "failed"  # type: ignore[attr-defined]
    assert llm.count == 1


async def test_context_length_exceeded_fails_permanently(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode = "context_length"
    out = await attempt(llm, tmp_path)
    assert isinstance(out.error, PermanentError) and "context too long" in str(out.error)
    assert "context too long" in (out.events[0].extraction.reason or "")  # type: ignore[attr-defined]


async def test_a_request_a_proxy_refuses_as_too_large_is_shrunk_and_sent_once_more(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """A proxy in front of the server with a body-size limit (ingress-nginx's default is 1m; a transcript of
    non-Latin text is sent as \\u escapes, 6 bytes a character) answers 413 before the model sees anything:
    the transcript was too long for this endpoint, as a context overflow says. Before: a ConfigurationError
    ('the LLM endpoint refuses the request (HTTP 413)'), every long transcript failed and dead-lettered."""
    event = conversation("0005")
    filler = [Message(role="customer", text=f"filler {i} " + "blah " * 40) for i in range(300)]
    long = event.model_copy(update={"messages": [*(event.messages or [])[:2], *filler, *(event.messages or [])[-2:]]})
    llm.max_body = 45_000
    async with extractor(llm, SPEC, tmp_path) as ex:
        out = await one_attempt(ex).send(long)
    assert out.error is None, out.error
    e = out.events[0].extraction  # type: ignore[attr-defined]
    assert e.status == "ok" and e.truncated and "HTTP 413" in e.reason and "transcript shrunk" in e.reason
    assert llm.count == 2


async def test_a_transcript_over_the_budget_keeps_beginning_and_end_and_says_so(llm: FakeLLM, tmp_path: Path) -> None:
    event = conversation("0005")
    filler = [Message(role="customer", text=f"filler {i} " + "blah " * 40) for i in range(300)]
    long = event.model_copy(update={"messages": [*(event.messages or [])[:2], *filler, *(event.messages or [])[-2:]]})
    async with extractor(llm, SPEC, tmp_path, llm={"token_budgets": {"gpt-4o-mini": 1_000}}) as ex:
        [event] = (await one_attempt(ex).send(long)).events
    e = event.extraction  # type: ignore[attr-defined]
    assert e.truncated and "1000-token budget of gpt-4o-mini" in e.reason
    sent = llm.requests[0]["messages"][2]["content"]
    assert "Thanks for calling Copperline support" in sent and "Thank you, Tom. Drive safely." in sent
    assert "cut here to fit the budget" in sent and "filler 150 " not in sent
    assert "middle of this transcript was cut" in sent
    assert REGISTRY.get_sample_value("postcall_transcripts_truncated_total", {"model": "gpt-4o-mini"})


async def test_an_empty_transcript_does_not_call_the_model(llm: FakeLLM, tmp_path: Path) -> None:
    async with extractor(llm, SPEC, tmp_path) as ex:
        [event] = (await one_attempt(ex).send(conversation("0005").model_copy(update={"messages": []}))).events
    assert llm.count == 0
    assert "model was not called" in (event.extraction.reason or "")  # type: ignore[attr-defined]


async def test_a_transcript_of_blank_turns_does_not_call_the_model(llm: FakeLLM, tmp_path: Path) -> None:
    """Turns with no words (a platform's untranscribed greeting on a call nobody answered; Vapi's mapping keeps
    an empty message) were sent to the model as a transcript: a billed call about nothing, whose summary
    then reached every {{conversation_summary}}."""
    blank = [Message(role="agent", text=""), Message(role="customer", text=" \n ")]
    async with extractor(llm, SPEC, tmp_path) as ex:
        [event] = (await one_attempt(ex).send(conversation("0005").model_copy(update={"messages": blank}))).events
    assert llm.count == 0
    assert "model was not called" in (event.extraction.reason or "")  # type: ignore[attr-defined]
    assert event.extraction.summary is None  # type: ignore[attr-defined]


async def test_a_configuration_that_asks_nothing_does_not_call_the_model(llm: FakeLLM, tmp_path: Path) -> None:
    """An agent whose live flows use no field, ai condition, dyn_* variable or recipient route, with
    `summary: false` (end-reason flows only; or its one ai flow still a draft): the model was asked to fill
    an empty object, a billed call for every conversation that answered nothing."""
    nothing = ExtractionSpec(agent_id="a", config_revision="r", summary=False)
    out = await attempt(llm, tmp_path, nothing)
    assert out.error is None and llm.count == 0
    e = out.events[0].extraction  # type: ignore[attr-defined]
    assert e.status == "ok" and "asks nothing" in (e.reason or "")


async def test_a_sustained_outage_opens_the_circuit_and_a_probe_closes_it(llm: FakeLLM, tmp_path: Path) -> None:
    llm.mode = "error"
    circuit = {"failure_threshold": 3, "window_seconds": 30, "cooldown_seconds": 0.5}
    async with extractor(llm, SPEC, tmp_path, circuit=circuit) as ex:
        run = one_attempt(ex)
        for i in range(2):
            out = await run.send(numbered(i))
            assert out.status == "retrying" and not isinstance(out.error, DependencyUnavailable)
        out = await run.send(numbered(2))  # the third failure opens it: the runtime pauses
        assert out.status == "unavailable" and isinstance(out.error, DependencyUnavailable)
        assert REGISTRY.get_sample_value("postcall_llm_circuit_open", {"provider": "openai"}) == 1
        assert (await run.send(numbered(3))).status == "unavailable"
        assert llm.count == 3  # while open, nothing reaches the server
        llm.mode = "ok"
        await asyncio.sleep(0.6)
        [event] = (await run.send(numbered(4))).events  # the half-open probe
        assert event.extraction.status == "ok"  # type: ignore[attr-defined]
        assert REGISTRY.get_sample_value("postcall_llm_circuit_open", {"provider": "openai"}) == 0
        await run.send(numbered(5))
    assert llm.count == 5


async def test_a_500_validation_error_is_a_configuration_error_on_the_record_not_an_outage(
    llm: FakeLLM, tmp_path: Path
) -> None:
    # llama-cpp-python's server refuses response_format json_schema with HTTP 500 and a validation error:
    # the request is wrong, the endpoint is up. Not probed here, so every record sends json_schema.
    llm.refuse_json_schema = True
    async with extractor(llm, SPEC, tmp_path) as ex:
        run = one_attempt(ex)
        for i in range(7):  # more than the circuit's threshold: it must stay closed
            out = await run.send(numbered(i))
            assert isinstance(out.error, PermanentError) and "configuration error" in str(out.error)
            assert out.status == "dead_lettered"
    failed = out.events[0].extraction  # type: ignore[attr-defined]
    assert failed.status == "failed" and "Input should be 'text' or 'json_object'" in (failed.reason or "")
    assert failed.endpoint == llm.base_url
    assert llm.count == 7  # one request per record: nothing retried, no circuit opened


async def test_a_server_that_refuses_json_schema_is_probed_into_json_object_with_the_schema(
    llm: FakeLLM, tmp_path: Path
) -> None:
    llm.refuse_json_schema = True
    script_callback_call(llm)
    settings = settings_for(llm, tmp_path)
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None and provider.capabilities.mode == "json_object"
        e = await Extractor(settings, lambda event: SPEC, http, provider).extract(conversation("0005"), SPEC)
    assert e.status == "ok" and e.fields["customer_name"].value == "Tom Becker"
    assert llm.requests[-1]["response_format"]["type"] == "json_object"
    assert llm.requests[-1]["response_format"]["schema"]["properties"]["fields"]


async def test_a_model_that_refuses_max_tokens_is_probed_into_max_completion_tokens(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """OpenAI's reasoning models, on Azure OpenAI or behind a gateway (a base URL set), refuse `max_tokens`
    with 400 unsupported_parameter. The probe was refused in every structured-output mode for it, so every
    extraction failed as a configuration error."""
    llm.refuse_max_tokens = True
    script_callback_call(llm)
    settings = settings_for(llm, tmp_path)
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None and provider.capabilities.problem is None
        assert provider.capabilities.mode == "json_schema"
        assert provider.capabilities.answer_cap == "max_completion_tokens"
        e = await Extractor(settings, lambda event: SPEC, http, provider).extract(conversation("0005"), SPEC)
    assert e.status == "ok" and e.fields["customer_name"].value == "Tom Becker"
    assert "max_tokens" not in llm.requests[-1] and llm.requests[-1]["max_completion_tokens"] > 0


@asynccontextmanager
async def refusing_max_tokens(llm: FakeLLM, tmp_path: Path) -> AsyncIterator[tuple[Extractor, ExtractorSettings]]:
    """An extractor in a configured structured-output mode (nothing probed) on an endpoint that refuses max_tokens."""
    llm.refuse_max_tokens = True
    script_callback_call(llm)
    settings = settings_for(llm, tmp_path, llm={"structured_output": "json_schema"})
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None
        yield Extractor(settings, lambda event: SPEC, http, provider), settings


async def test_a_configured_mode_learns_max_completion_tokens_from_the_first_refusal(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """With structured_output configured nothing is probed: the first request's refusal of max_tokens is
    sent again at once with max_completion_tokens (not a failed record), and every later one has it."""
    async with refusing_max_tokens(llm, tmp_path) as (ex, _):
        first = await ex.extract(conversation("0005"), SPEC)
        sent = len(llm.requests)
        second = await ex.extract(numbered(1), SPEC)
    assert first.status == "ok" and second.status == "ok"
    assert ["max_tokens" in r for r in llm.requests] == [True, False, False]
    assert sent == 2 and llm.requests[-1]["max_completion_tokens"] > 0


async def test_requests_in_flight_when_max_tokens_is_refused_are_all_sent_again_with_max_completion_tokens(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """Records extracted at once (the extractor's concurrency) all go out with max_tokens before the first
    refusal comes back: each refusal of a request that had it is sent again, not only the first. Before, the
    second and later saw max_completion_tokens already learnt and failed as a configuration error."""
    async with refusing_max_tokens(llm, tmp_path) as (ex, settings):
        refused = {"provider": "openai", "model": settings.llm.model, "outcome": "client_error"}
        before = REGISTRY.get_sample_value("postcall_llm_requests_total", refused) or 0
        found = await asyncio.gather(*(ex.extract(numbered(n), SPEC) for n in range(3)))
    assert [e.status for e in found] == ["ok"] * 3
    assert ["max_tokens" in r for r in llm.requests] == [True] * 3 + [False] * 3
    assert REGISTRY.get_sample_value("postcall_llm_requests_total", refused) == before + 3  # every attempt counted


@pytest.mark.parametrize("starting", ["down", "loading"])
async def test_an_endpoint_unreachable_at_start_is_probed_again_once_it_answers(
    llm: FakeLLM, tmp_path: Path, starting: str
) -> None:
    """The extractor started before its LLM server (a deployment's usual order), or while the server still
    loaded its model (llama-server answers 503): the start probe learnt nothing and assumed a mode. A
    server that refuses json_schema then failed every record as a configuration error (permanent:
    dead-lettered) until the extractor restarted."""
    llm.refuse_json_schema = True
    script_callback_call(llm)
    llm.down() if starting == "down" else setattr(llm, "mode", "loading")
    settings = settings_for(llm, tmp_path)
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None and provider.capabilities.mode == "json_schema"  # assumed
        ex = Extractor(settings, lambda event: SPEC, http, provider)
        with pytest.raises(RetryableError):  # still down or loading: retried, as before
            await ex.extract(conversation("0005"), SPEC)
        llm.up() if starting == "down" else setattr(llm, "mode", "ok")
        for _ in range(2):  # within the probe's interval the assumed mode may be refused: retried, then probed
            try:
                e = await ex.extract(conversation("0005"), SPEC)
                break
            except RetryableError as exc:
                assert "mode assumed at start" in str(exc)
        assert provider.capabilities.mode == "json_object" and provider.capabilities.reached
    assert e.status == "ok" and e.fields["customer_name"].value == "Tom Becker"
    assert llm.requests[-1]["response_format"]["type"] == "json_object"


KEY = "sk-proj-" + "Zq7" * 16


@pytest.mark.parametrize("status", [400, 200])
async def test_an_endpoint_error_that_echoes_the_api_key_never_puts_it_on_a_record(
    llm: FakeLLM, tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway that refuses the key may echo it ("Invalid API key provided. Authorization: Bearer
    sk-..."): the endpoint's message is kept for the operator (failed extraction, dead letter, store,
    console), redacted as the dispatcher redacts what a receiver echoes."""
    llm.mode, llm.echo_status = "echo_key", status
    async with extractor(llm, SPEC, tmp_path, llm={"api_key": KEY}) as ex:
        out = await one_attempt(ex).send(conversation("0005"))
    assert isinstance(out.error, PermanentError if status == 400 else RetryableError)
    texts = [str(out.error), *(e.extraction.reason or "" for e in out.events)]  # type: ignore[attr-defined]
    assert all(KEY[:12] not in text for text in texts), texts
    assert "Invalid API key provided. Authorization: [redacted]" in str(out.error)
    assert KEY[:12] not in caplog.text


async def test_a_probe_refused_with_the_api_key_echoed_keeps_it_out_of_the_configuration_error(
    llm: FakeLLM, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every structured-output mode refused at the start probe: the refusals become the configuration
    error every record then carries, and the start log line; neither holds the echoed key."""
    llm.mode = "echo_key"
    settings = settings_for(llm, tmp_path, llm={"api_key": KEY})
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None and provider.capabilities.problem
        with pytest.raises(PermanentError, match="configuration error") as caught:
            await Extractor(settings, lambda event: SPEC, http, provider).extract(conversation("0005"), SPEC)
    assert "Authorization: [redacted]" in str(caught.value)
    assert KEY[:12] not in str(caught.value) and KEY[:12] not in caplog.text


async def test_an_endpoint_that_refused_every_mode_is_probed_again_and_used_once_it_is_fixed(
    llm: FakeLLM, tmp_path: Path
) -> None:
    """Every structured-output mode refused at start (a gateway configured wrong): the start line says every
    extraction fails 'until the endpoint or POSTCALL_LLM__* settings are fixed', but the endpoint was never
    probed again: once it was fixed, every record still failed with the start's configuration error and was
    dead-lettered, until the extractor restarted."""
    llm.mode = "echo_key"  # 400 to every request, the probe's included
    script_callback_call(llm)
    settings = settings_for(llm, tmp_path)
    async with open_http(settings) as http, open_provider(settings) as provider:
        assert provider is not None and provider.capabilities.problem
        ex = Extractor(settings, lambda event: SPEC, http, provider)
        with pytest.raises(PermanentError, match="configuration error"):
            await ex.extract(conversation("0005"), SPEC)
        probes = llm.count
        with pytest.raises(PermanentError, match="configuration error"):  # within the interval: not probed
            await ex.extract(conversation("0005"), SPEC)
        assert llm.count == probes
        llm.mode = "ok"  # fixed
        await asyncio.sleep(5.1)  # REPROBE_SECONDS
        e = await ex.extract(conversation("0005"), SPEC)
        assert provider.capabilities.problem is None and provider.capabilities.mode == "json_schema"
    assert e.status == "ok" and e.fields["customer_name"].value == "Tom Becker"
