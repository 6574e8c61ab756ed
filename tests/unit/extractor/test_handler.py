"""The handler with the heuristic provider (no network): outputs, fates, and long transcripts off the loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas.events import Agent, ConversationExtracted
from schemas.topics import CONVERSATION_EXTRACTED
from services.common.errors import DependencyUnavailable, PermanentError, RetryableError
from services.common.runtime import RecordContext
from services.extractor import heuristic
from services.extractor.handler import REEXTRACT_OF, Extractor, UnknownAgent
from services.extractor.settings import ExtractorSettings
from tests.unit.extractor.conftest import CALLBACK, SUPPORT_FIELDS, conversation, spec

SPEC = spec(*SUPPORT_FIELDS, triggers=(CALLBACK,))


def ctx(**headers: str) -> RecordContext:
    return RecordContext("extractor", "t", "t", 0, 7, "k", 0, {"ce_id": "ce-1", **headers})


def extractor(tmp_path: Path, transport: httpx.MockTransport | None = None, **settings: Any) -> Extractor:
    s = ExtractorSettings(config_dir=tmp_path, **settings)
    http = httpx.AsyncClient(transport=transport or httpx.MockTransport(lambda r: httpx.Response(404)))
    return Extractor(s, lambda e: SPEC if e.agent.id == "support-line" else None, http, llm=None)


async def test_a_conversation_becomes_one_extracted_record_keyed_by_conversation(tmp_path: Path) -> None:
    event = conversation("0005")
    [emit] = await extractor(tmp_path)(event, ctx())
    assert emit.topic == CONVERSATION_EXTRACTED and emit.key == event.conversation_id
    out = emit.value
    assert isinstance(out, ConversationExtracted)
    assert out.conversation == event
    assert out.extraction.status == "ok" and out.extraction.provider == "heuristic"
    assert out.extraction.config_revision == "rev-test"
    assert out.extraction.fields["callback_number"].value == "+13125550178"
    assert out.extraction.latency_ms is not None
    again = await extractor(tmp_path)(event, ctx())
    assert again[0].value.event_id == out.event_id  # type: ignore[attr-defined]
    other = await extractor(tmp_path)(event, ctx(ce_id="ce-2", **{REEXTRACT_OF: event.event_id}))
    assert other[0].value.event_id != out.event_id  # type: ignore[attr-defined]
    assert other[0].headers == {REEXTRACT_OF: event.event_id}


async def test_an_agent_without_configuration_is_permanent_and_produces_nothing(tmp_path: Path) -> None:
    event = conversation("0005").model_copy(update={"agent": Agent(id="nobody", version="9")})
    with pytest.raises(UnknownAgent, match="no configuration for agent nobody version 9") as caught:
        await extractor(tmp_path)(event, ctx())
    assert caught.value.emit == ()


async def test_openai_asked_but_not_configured_falls_back_to_heuristic_and_says_so(tmp_path: Path) -> None:
    ex = extractor(tmp_path)
    ex._spec_for = lambda e: SPEC.model_copy(update={"provider": "openai"})
    [emit] = await ex(conversation("0005"), ctx())
    extraction = emit.value.extraction  # type: ignore[attr-defined]
    assert extraction.provider == "heuristic" and "no LLM endpoint" in extraction.reason


async def test_a_claim_check_transcript_is_fetched_and_extracted(tmp_path: Path) -> None:
    event = conversation("0005")
    body = orjson.dumps([m.model_dump() for m in event.messages or []])
    seen: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=body)

    claim = event.model_copy(update={"messages": None, "transcript_url": "https://platform.example/t/5"})
    [emit] = await extractor(tmp_path, httpx.MockTransport(serve))(claim, ctx())
    assert seen == ["https://platform.example/t/5"]
    assert emit.value.extraction.fields["customer_name"].value == "Tom Becker"  # type: ignore[attr-defined]


async def test_a_transcript_too_large_fails_permanently_but_still_says_failed(tmp_path: Path) -> None:
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * 5000))
    with pytest.raises(PermanentError, match="transcript too large") as caught:
        await extractor(tmp_path, transport, transcript_max_bytes=1024)(claim, ctx())
    [emit] = caught.value.emit
    assert emit.topic == CONVERSATION_EXTRACTED
    failed = emit.value.extraction  # type: ignore[attr-defined]
    assert failed.status == "failed" and "transcript too large" in failed.reason
    assert failed.fields == {} and failed.config_revision == "rev-test"


async def test_a_long_transcript_is_scanned_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = heuristic.extract

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(heuristic, "extract", spy)
    event = conversation("0005")
    await extractor(tmp_path, offload_chars=10**9)(event, ctx())
    big = event.model_copy(update={"messages": (event.messages or []) * 50})
    await extractor(tmp_path, offload_chars=1000)(big, ctx())
    assert threads[0] == threading.current_thread().name
    assert threads[1] != threading.current_thread().name


@pytest.mark.parametrize(
    "exc",
    [
        RetryableError("LLM server error (HTTP 500)"),
        ValueError("a bug the retry tiers could not fix"),
        PermanentError("cannot schedule a retry: record too large"),
        DependencyUnavailable("circuit open"),
    ],
    ids=["retries_exhausted", "unknown_exception", "permanent_without_output", "outage"],
)
def test_every_dead_letter_still_says_failed_so_end_reason_flows_run(tmp_path: Path, exc: Exception) -> None:
    event = conversation("0005")
    [emit] = extractor(tmp_path).dead_letter_emits(event, ctx(), exc)
    assert emit.topic == CONVERSATION_EXTRACTED and emit.key == event.conversation_id
    failed = emit.value.extraction  # type: ignore[attr-defined]
    assert failed.status == "failed" and failed.config_revision == "rev-test"
    assert str(exc) in failed.reason


def test_an_unknown_exception_names_its_class_in_the_failed_reason(tmp_path: Path) -> None:
    [emit] = extractor(tmp_path).dead_letter_emits(conversation("0005"), ctx(), KeyError("start"))
    assert emit.value.extraction.reason == "KeyError: 'start'"  # type: ignore[attr-defined]


async def test_no_second_failed_record_when_the_error_carries_one_and_none_for_an_unknown_agent(
    tmp_path: Path,
) -> None:
    ex = extractor(tmp_path)
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    with pytest.raises(PermanentError) as caught:
        await ex(claim, ctx())  # the 404 transcript: the error carries its `failed` record
    assert len(caught.value.emit) == 1
    assert ex.dead_letter_emits(claim, ctx(), caught.value) == []
    nobody = conversation("0005").model_copy(update={"agent": Agent(id="nobody")})
    with pytest.raises(UnknownAgent) as unknown:
        await ex(nobody, ctx())
    assert ex.dead_letter_emits(nobody, ctx(), unknown.value) == []


async def test_a_malformed_claim_check_transcript_fails_permanently_but_still_says_failed(tmp_path: Path) -> None:
    body = orjson.dumps([{"role": "user", "text": "Call me back.", "start_seconds": -1}])
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    with pytest.raises(PermanentError, match="message 0 is malformed: start_seconds") as caught:
        await extractor(tmp_path, transport)(claim, ctx())
    [emit] = caught.value.emit
    failed = emit.value.extraction  # type: ignore[attr-defined]
    assert failed.status == "failed" and "start_seconds" in failed.reason
