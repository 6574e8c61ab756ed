"""The example conversations are valid ConversationEnded events and cover the cases the demo relies on."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from schemas.end_reasons import EndReason, canonical_end_reason
from schemas.events import ConversationEnded

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "conversations").glob("*.json"))
SCHEMA = orjson.loads((ROOT / "schemas" / "json" / "ConversationEnded.v1.schema.json").read_bytes())
FICTIONAL_PHONE = re.compile(r"^\+1\d{3}55501\d{2}$")  # E.164 in the reserved 555-01xx range


def _load(path: Path) -> ConversationEnded:
    return ConversationEnded.model_validate_json(path.read_bytes())


def _all() -> list[ConversationEnded]:
    return [_load(path) for path in EXAMPLES]


def test_there_are_at_least_ten_examples() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_against_model_and_committed_json_schema(path: Path) -> None:
    _load(path)
    errors = list(
        Draft202012Validator(SCHEMA, format_checker=FormatChecker()).iter_errors(orjson.loads(path.read_bytes()))
    )
    assert errors == []


def test_ids_are_unique() -> None:
    events = _all()
    assert len({e.conversation_id for e in events}) == len(events)
    assert len({e.event_id for e in events}) == len(events)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_internally_consistent(path: Path) -> None:
    event = _load(path)
    info = event.end_reason
    assert canonical_end_reason(info.source_platform, info.raw) is info.canonical
    assert event.agent.id in {"support-line", "sales-line"}
    assert event.started_at.year == 2026 and event.started_at < event.ended_at <= event.occurred_at
    assert event.duration == (event.ended_at - event.started_at).total_seconds()
    for number in (event.customer.phone_number, event.to_number):
        assert number and FICTIONAL_PHONE.match(number), number


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_transcript_is_a_realistic_dialogue(path: Path) -> None:
    event = _load(path)
    messages = event.messages or []
    if event.end_reason.canonical is not EndReason.VOICEMAIL:
        assert 10 <= len(messages) <= 25
    assert {m.role for m in messages} >= {"agent", "customer"}
    ends = [0.0]
    for m in messages:
        assert m.start_seconds is not None and m.end_seconds is not None
        assert ends[-1] <= m.start_seconds < m.end_seconds <= event.duration
        ends.append(m.end_seconds)


def test_examples_cover_the_seed_end_reasons_and_raw_platform_values() -> None:
    events = _all()
    canonical = {e.end_reason.canonical for e in events}
    assert canonical >= {
        EndReason.CUSTOMER_HANGUP,
        EndReason.BLIND_TRANSFER,
        EndReason.CCAAS_TRANSFER,
        EndReason.VOICEMAIL,
    }
    assert {e.end_reason.source_platform for e in events} >= {"copilot", "vapi", "retell", "elevenlabs"}
    assert any(e.end_reason.raw == "user_hangup" for e in events)


def test_some_conversations_are_not_linked_to_a_contact() -> None:
    unlinked = [e for e in _all() if e.customer.name is None and e.customer.email is None]
    assert unlinked and all(e.customer.contact_id is None for e in unlinked)


@pytest.mark.parametrize(
    "pattern",
    [
        r"call me back",
        r"tomorrow at \d{1,2} ?pm",
        r"March \d{1,2}(st|nd|rd|th)",
        r"\bcancel\b",
        r"\bdemo\b",
        r"\bbudget\b",
        r"[\w.+-]+@[\w-]+(\.[\w-]+)+",
        r"\b\d{3} \d{3} \d{4}\b",
    ],
)
def test_transcripts_contain_what_a_keyword_extractor_looks_for(pattern: str) -> None:
    texts = [m.text for e in _all() for m in e.messages or []]
    assert any(re.search(pattern, text, re.IGNORECASE) for text in texts), pattern
