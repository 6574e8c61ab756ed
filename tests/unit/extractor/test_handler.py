"""The handler with the heuristic provider (no network): outputs, fates, and long transcripts off the loop."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas.events import Account, Agent, ConversationEnded, ConversationExtracted
from schemas.headers import REEXTRACT_OF, REPLAYED_FROM
from schemas.routes import EXTRACTOR
from schemas.topics import CONVERSATION_EXTRACTED
from services.common import codec
from services.common.api import Context, Event, PermanentError, RetryableError, Service
from services.common.harness import Harness, Incoming, Outcome
from services.extractor import heuristic
from services.extractor.duplicates import SeenEvents
from services.extractor.handler import Extractor, UnknownAgent, local_end_of
from services.extractor.settings import ExtractorSettings
from tests.support.calls import ended
from tests.unit.extractor.conftest import CALLBACK, SUPPORT_FIELDS, conversation, spec

SPEC = spec(*SUPPORT_FIELDS, triggers=(CALLBACK,))


def extractor(tmp_path: Path, transport: httpx.MockTransport | None = None, **settings: Any) -> Extractor:
    s = ExtractorSettings(config_dir=tmp_path, **settings)
    http = httpx.AsyncClient(transport=transport or httpx.MockTransport(lambda r: httpx.Response(404)))
    return Extractor(s, lambda e: SPEC if e.agent.id == "support-line" else None, http, llm=None)


def run(ex: Extractor) -> Harness[ConversationEnded]:
    return Harness(ex.service())


def extracted(out: Outcome) -> ConversationExtracted:
    [event] = out.on(CONVERSATION_EXTRACTED)
    assert isinstance(event, ConversationExtracted)
    return event


async def test_a_conversation_becomes_one_extracted_record_keyed_by_conversation(tmp_path: Path) -> None:
    event = conversation("0005")
    harness = run(extractor(tmp_path))
    first = await harness.send(event, headers={"ce_id": "ce-1"})
    [record] = first.outputs
    assert record.topic == CONVERSATION_EXTRACTED and record.key == event.conversation_id.encode()
    out = extracted(first)
    assert out.conversation == event
    assert out.extraction.status == "ok" and out.extraction.provider == "heuristic"
    assert out.extraction.config_revision == "rev-test"
    assert out.extraction.fields["callback_number"].value == "+13125550178"
    assert out.extraction.latency_ms is not None
    elsewhere = await run(extractor(tmp_path)).send(event, headers={"ce_id": "ce-1"})  # another process
    assert extracted(elsewhere).event_id == out.event_id  # the same input, the same output id
    other = await harness.send(event, headers={"ce_id": "ce-2", REEXTRACT_OF: event.event_id})
    assert extracted(other).event_id != out.event_id
    assert other.outputs[0].headers[REEXTRACT_OF] == event.event_id
    assert REEXTRACT_OF not in first.outputs[0].headers


async def test_an_agent_without_configuration_is_dead_lettered_at_once_and_produces_nothing(tmp_path: Path) -> None:
    event = conversation("0005").model_copy(update={"agent": Agent(id="nobody", version="9")})
    out = await run(extractor(tmp_path)).send(event)
    assert isinstance(out.error, UnknownAgent) and "no configuration for agent nobody version 9" in str(out.error)
    assert (out.status, out.attempts, out.outputs, len(out.dead_letters)) == ("dead_lettered", 1, [], 1)


async def test_an_event_dead_lettered_for_its_unknown_agent_published_again_for_a_configured_one_is_extracted(
    tmp_path: Path,
) -> None:
    """`postcall publish call.json --from vapi` without --agent keeps the vendor's agent id, which the extractor
    dead-letters ('no configuration for agent ...'); publishing it again with --agent support-line is the same
    event id (the vendor's natural key), and the extractor skipped it as a copy of the record it had dead-lettered,
    for an hour, without a word to the publisher. A record for an unknown agent is not taken, so not remembered;
    copies of an event taken are still skipped."""
    harness, event = run(extractor(tmp_path)), conversation("0005")
    vendor_agent = event.model_copy(update={"agent": Agent(id="5d0e3c2a-91f4-4b7e-a6d8-3c1f9e2b7a40")})
    first = await harness.send(vendor_agent, headers={"ce_id": "vapi:c-1:end-of-call-report"})
    assert isinstance(first.error, UnknownAgent) and first.status == "dead_lettered"
    again = await harness.send(event, headers={"ce_id": "vapi:c-1:end-of-call-report"})
    assert again.status == "ok" and len(again.on(CONVERSATION_EXTRACTED)) == 1
    copy = await harness.send(event, headers={"ce_id": "vapi:c-1:end-of-call-report"})
    assert (copy.status, copy.outputs) == ("ok", [])


async def test_openai_asked_but_not_configured_falls_back_to_heuristic_and_says_so(tmp_path: Path) -> None:
    ex = extractor(tmp_path)
    ex._spec_for = lambda e: SPEC.model_copy(update={"provider": "openai"})
    extraction = extracted(await run(ex).send(conversation("0005"))).extraction
    assert extraction.provider == "heuristic" and extraction.reason and "no LLM endpoint" in extraction.reason


async def test_a_claim_check_transcript_is_fetched_and_extracted(tmp_path: Path) -> None:
    event = conversation("0005")
    body = orjson.dumps([m.model_dump() for m in event.messages or []])
    seen: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=body)

    claim = event.model_copy(update={"messages": None, "transcript_url": "https://platform.example/t/5"})
    out = await run(extractor(tmp_path, httpx.MockTransport(serve))).send(claim)
    assert seen == ["https://platform.example/t/5"]
    assert extracted(out).extraction.fields["customer_name"].value == "Tom Becker"


async def test_an_empty_inline_transcript_beside_a_claim_check_fetches_the_claim_check(tmp_path: Path) -> None:
    """`messages: []` is how many serialisers write an empty list (Jackson, a Go slice that is not nil):
    with a transcript_url beside it, the URL was ignored and nothing extracted from an empty transcript."""
    event = conversation("0005")
    body = orjson.dumps([m.model_dump() for m in event.messages or []])
    claim = event.model_copy(update={"messages": [], "transcript_url": "https://platform.example/t/5"})
    out = await run(extractor(tmp_path, httpx.MockTransport(lambda r: httpx.Response(200, content=body)))).send(claim)
    assert extracted(out).extraction.fields["customer_name"].value == "Tom Becker"


async def test_a_transcript_too_large_fails_permanently_but_still_says_failed(tmp_path: Path) -> None:
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * 5000))
    out = await run(extractor(tmp_path, transport, transcript_max_bytes=1024)).send(claim)
    assert isinstance(out.error, PermanentError) and "transcript too large" in str(out.error)
    assert (out.status, out.attempts) == ("dead_lettered", 1)
    failed = extracted(out).extraction
    assert failed.status == "failed" and failed.reason and "transcript too large" in failed.reason
    assert failed.fields == {} and failed.config_revision == "rev-test"


async def test_a_long_transcript_is_scanned_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = heuristic.extract

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(heuristic, "extract", spy)
    event = conversation("0005")
    await run(extractor(tmp_path, offload_chars=10**9)).send(event)
    big = event.model_copy(update={"messages": (event.messages or []) * 50})
    await run(extractor(tmp_path, offload_chars=1000)).send(big)
    assert threads[0] == threading.current_thread().name
    assert threads[1] != threading.current_thread().name


def failing(ex: Extractor, exc: Exception) -> Harness[ConversationEnded]:
    """The extractor's route and failure hook around a handler that always raises `exc`."""

    async def handle(event: ConversationEnded, ctx: Context) -> list[Event]:
        raise exc

    return Harness(Service(EXTRACTOR, handle, ex.on_failure))


@pytest.mark.parametrize(
    "exc",
    [
        RetryableError("LLM server error (HTTP 500)"),
        ValueError("a bug the retry tiers could not fix"),
        PermanentError("cannot schedule a retry: record too large"),
    ],
    ids=["retries_exhausted", "unknown_exception", "permanent"],
)
async def test_every_dead_letter_still_says_failed_so_end_reason_flows_run(tmp_path: Path, exc: Exception) -> None:
    event = conversation("0005")
    out = await failing(extractor(tmp_path), exc).send(event)
    assert out.status == "dead_lettered" and len(out.dead_letters) == 1
    [record] = out.outputs  # nothing while retries remain: one `failed`, with the dead letter
    assert record.topic == CONVERSATION_EXTRACTED and record.key == event.conversation_id.encode()
    failed = extracted(out).extraction
    assert failed.status == "failed" and failed.config_revision == "rev-test"
    assert failed.reason and str(exc) in failed.reason


async def test_an_unknown_exception_names_its_class_in_the_failed_reason(tmp_path: Path) -> None:
    out = await failing(extractor(tmp_path), KeyError("start")).send(conversation("0005"))
    assert extracted(out).extraction.reason == "KeyError: 'start'"


async def test_one_failed_record_per_dead_letter_and_none_for_an_unknown_agent(tmp_path: Path) -> None:
    harness = run(extractor(tmp_path))
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    out = await harness.send(claim)  # the 404 transcript: permanent
    assert out.status == "dead_lettered" and len(out.outputs) == 1
    nobody = conversation("0005").model_copy(update={"agent": Agent(id="nobody"), "event_id": "evt-nobody"})
    out = await harness.send(nobody)
    assert out.status == "dead_lettered" and out.outputs == []


async def test_a_malformed_claim_check_transcript_fails_permanently_but_still_says_failed(tmp_path: Path) -> None:
    body = orjson.dumps([{"role": "user", "text": "Call me back.", "start_seconds": -1}])
    claim = conversation("0005").model_copy(update={"messages": None, "transcript_url": "https://p.example/t"})
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    out = await run(extractor(tmp_path, transport)).send(claim)
    assert isinstance(out.error, PermanentError) and "message 0 is malformed: start_seconds" in str(out.error)
    failed = extracted(out).extraction
    assert failed.status == "failed" and failed.reason and "start_seconds" in failed.reason


# ── copies of a record already taken (services/extractor/duplicates.py) ──────────────────────────


def counted(ex: Extractor) -> list[int]:
    """One entry per extraction run (the heuristic pass: where the model call would be)."""
    calls: list[int] = []
    heuristic_pass = ex._heuristic

    def counting(spec: Any, messages: Any, local_end: Any) -> Any:
        calls.append(len(messages))
        return heuristic_pass(spec, messages, local_end)

    ex._heuristic = counting  # type: ignore[method-assign]
    return calls


async def test_a_copy_of_a_record_already_taken_is_skipped_and_extracted_once(tmp_path: Path) -> None:
    """Two records with one event id (a vendor retry that reached another ingress replica): the second
    produces nothing and the extraction runs once; the first record seen again is extracted again."""
    from services.extractor.metrics import DUPLICATES

    ex = extractor(tmp_path)
    calls, harness, event = counted(ex), run(ex), conversation("0005")
    skipped = DUPLICATES._value.get()
    first = await harness.send(event, headers={"ce_id": "vapi:c-1:end-of-call-report"})
    copy = await harness.send(event, headers={"ce_id": "vapi:c-1:end-of-call-report"})
    assert len(first.on(CONVERSATION_EXTRACTED)) == 1 and (copy.status, copy.outputs) == ("ok", [])
    assert len(calls) == 1 and DUPLICATES._value.get() == skipped + 1
    # the same record again (a redelivery after a restart of the consumer): not a copy, extracted again
    [incoming] = [harness.record(event, headers={"ce_id": "vapi:c-1:end-of-call-report"})]
    again = await harness.run(dataclasses.replace(incoming, offset=first.contexts[0].offset))
    assert len(again.on(CONVERSATION_EXTRACTED)) == 1 and len(calls) == 2


async def test_two_accounts_events_with_the_same_event_id_are_each_extracted(tmp_path: Path) -> None:
    """An event id is unique within its account's source (CloudEvents: source + id): another account's
    bridge may send its own evt-1, on the same partition, and that conversation is not a copy."""
    ex = extractor(tmp_path)
    calls, harness, event = counted(ex), run(ex), conversation("0005")
    acme = event.model_copy(update={"event_id": "evt-1", "conversation_id": "acme-conv-1"})
    globex = acme.model_copy(update={"conversation_id": "globex-conv-1", "account": Account(id="globex")})
    outs = [await harness.send(e, headers={"ce_id": "evt-1"}) for e in (acme, globex, globex)]
    assert [[o.conversation.conversation_id for o in out.on(CONVERSATION_EXTRACTED)] for out in outs] == [  # type: ignore[attr-defined]
        ["acme-conv-1"],
        ["globex-conv-1"],
        [],  # globex's own copy
    ]
    assert len(calls) == 2


async def test_two_accounts_events_with_the_same_event_id_get_extracted_records_of_their_own_ids(
    tmp_path: Path,
) -> None:
    """The extracted record's id named neither the account nor where one part ended: two accounts' evt-1
    (ce_id evt-1, one agent file) were one id, and the recorder keeps one row per (event id, status), so
    the second conversation's extraction and decision trace were dropped as copies of the first's; so
    were event 'a|b' with ce_id 'c' and event 'a' with ce_id 'b|c'."""
    harness, event = run(extractor(tmp_path)), conversation("0005")
    acme = event.model_copy(update={"event_id": "evt-1", "conversation_id": "acme-conv-1"})
    globex = acme.model_copy(update={"conversation_id": "globex-conv-1", "account": Account(id="globex")})
    ids = [extracted(await harness.send(e, headers={"ce_id": "evt-1"})).event_id for e in (acme, globex)]
    first = event.model_copy(update={"event_id": "a|b", "conversation_id": "conv-x"})
    second = event.model_copy(update={"event_id": "a", "conversation_id": "conv-y"})
    ids.append(extracted(await harness.send(first, headers={"ce_id": "c"})).event_id)
    ids.append(extracted(await harness.send(second, headers={"ce_id": "b|c"})).event_id)
    assert len(set(ids)) == 4


async def test_replays_re_extractions_and_copies_outside_the_window_are_extracted(tmp_path: Path) -> None:
    event = conversation("0005")
    ex = extractor(tmp_path)
    calls, harness = counted(ex), run(ex)
    await harness.send(event, headers={"ce_id": "e-1"})
    replayed = await harness.send(event, headers={"ce_id": "e-1", REPLAYED_FROM: "postcall.dlq:0:7"})
    reextracted = await harness.send(event, headers={"ce_id": "e-2", REEXTRACT_OF: "e-1"})
    assert len(replayed.outputs) == len(reextracted.outputs) == 1 and len(calls) == 3
    # the key is the event id, the contract's idempotency key: a bridge's retry with a fresh ce_id is a copy
    assert (await harness.send(event, headers={"ce_id": "e-9"})).outputs == [] and len(calls) == 3

    now, later = [0.0], event.model_copy(update={"event_id": "evt-later"})
    ex._seen = SeenEvents(60.0, 100, clock=lambda: now[0])
    assert len((await harness.send(later)).outputs) == 1
    now[0] = 59.0
    assert (await harness.send(later)).outputs == []
    now[0] = 121.0  # the first was taken at 0 s: after the 60 s window, a copy is taken again
    assert len((await harness.send(later)).outputs) == 1

    off = run(extractor(tmp_path, duplicates={"window_seconds": 0}))
    for _ in range(2):
        assert len((await off.send(event)).outputs) == 1


def test_the_memory_of_event_ids_is_bounded_in_count() -> None:
    seen = SeenEvents(3600.0, 2)
    assert seen.first_place("a", (0, 1)) is None and seen.first_place("b", (0, 2)) is None
    assert seen.first_place("a", (1, 9)) == (0, 1) and seen.first_place("a", (0, 1)) is None
    assert seen.first_place("c", (0, 3)) is None  # "a" (the oldest) is forgotten
    assert seen.first_place("a", (1, 9)) is None and seen.first_place("b", (1, 8)) is None


def test_a_record_not_taken_forgets_its_event_only_where_it_was_the_one_remembered() -> None:
    seen = SeenEvents(3600.0, 10)
    assert seen.first_place("a", (0, 1)) is None
    seen.not_taken("a", (1, 9))  # a replay elsewhere that was not taken: the first record's memory stays
    assert seen.first_place("a", (0, 2)) == (0, 1)
    seen.not_taken("a", (0, 1))
    assert seen.first_place("a", (0, 2)) is None


async def test_a_retry_tier_copy_is_never_skipped_even_where_another_copy_was_taken(tmp_path: Path) -> None:
    """Two extractor processes each took one copy of an event (a rebalance between the copies) and
    both attempts failed; the retry tiers' partitions are assigned apart from the main topic's, so each
    retry copy can reach the other process. A retry copy continues a record that was taken: skipping it
    there (another record's place is remembered) would leave the event with no extraction at all."""
    event, ce = conversation("0005"), {"ce_id": "vapi:c-7:end-of-call-report"}
    processes = []
    for _ in range(2):
        ex = extractor(tmp_path)
        extract, failures = ex._heuristic, [RetryableError("LLM 503")]  # its one attempt fails

        def flaky(spec: Any, messages: Any, end: Any, failures: list[Any] = failures, extract: Any = extract) -> Any:
            if failures:
                raise failures.pop()
            return extract(spec, messages, end)

        ex._heuristic = flaky  # type: ignore[method-assign]
        processes.append(Harness(ex.service(), burst=False))
    one, other = processes
    first = one.record(event, headers=ce)
    copy = dataclasses.replace(first, offset=first.offset + 1)  # the vendor's retry, next on the partition
    retries = [(await one.run(first)).retries, (await other.run(copy)).retries]
    assert [len(r) for r in retries] == [1, 1]
    crossed = [(other, retries[0][0]), (one, retries[1][0])]
    for process, r in crossed:
        out = await process.run(Incoming(r.topic, 0, 0, 0, r.key, r.value, tuple(codec.header_list(r.headers))))
        assert out.contexts[0].attempt == 2 and len(out.on(CONVERSATION_EXTRACTED)) == 1, out


@pytest.mark.parametrize("zone", ["America", "Etc", "Europe/" + "x" * 300])
def test_a_metadata_time_zone_that_is_a_folder_of_the_zone_database_is_unknown_not_a_crash(zone: str) -> None:
    """ZoneInfo raises OSError for a folder of the zone database (IsADirectoryError) or a name too long for
    a file, beside ZoneInfoNotFoundError and ValueError: a platform's metadata.timezone "America" made
    local_end_of raise, an unknown error for the call, instead of using the event's own offset."""
    event = ended("c-zone", at=datetime(2026, 3, 12, 19, 3, tzinfo=UTC))
    event = event.model_copy(update={"metadata": {"timezone": zone}})
    assert local_end_of(event) == event.ended_at
