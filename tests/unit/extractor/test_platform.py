"""`extraction.trust_platform`: fields and the summary the voice platform already extracted are taken
(when they fit the field's type), the provider fills only the rest, and is not asked when nothing is
left."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ConversationEnded, ConversationExtracted, Extraction, PlatformAnalysis
from schemas.topics import CONVERSATION_EXTRACTED
from services.common import codec
from services.common.harness import Harness
from services.extractor import heuristic, llm, platform
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings
from services.router.settings import RouterSettings
from tests.unit.extractor.conftest import SUPPORT_FIELDS, conversation

ISSUE = next(f for f in SUPPORT_FIELDS if f.name == "issue_category")
TEAM = next(f for f in SUPPORT_FIELDS if f.name == "team_size")
CALLBACK_NUMBER = next(f for f in SUPPORT_FIELDS if f.name == "callback_number")


def spec(*fields: FieldSpec, trust: bool = True, summary: bool = True) -> ExtractionSpec:
    return ExtractionSpec(
        agent_id="support-line", config_revision="rev-test", fields=list(fields), summary=summary, trust_platform=trust
    )


async def extracted(tmp_path: Path, s: ExtractionSpec, event: ConversationEnded) -> ConversationExtracted:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    ex = Extractor(ExtractorSettings(config_dir=tmp_path), lambda e: s, http, llm=None)
    [out] = (await Harness(ex.service()).send(event)).on(CONVERSATION_EXTRACTED)
    assert isinstance(out, ConversationExtracted)
    return out


def with_analysis(**analysis: object) -> ConversationEnded:
    return conversation("0005").model_copy(update={"platform_analysis": PlatformAnalysis.model_validate(analysis)})


async def test_fields_and_summary_the_platform_extracted_are_taken_and_the_provider_fills_the_rest(
    tmp_path: Path,
) -> None:
    event = with_analysis(summary="Wants a callback about a sync problem.", data={"issue_category": "Technical"})
    out = (await extracted(tmp_path, spec(ISSUE, CALLBACK_NUMBER), event)).extraction
    assert out.fields["issue_category"].value == "technical"  # the field's own spelling of the enum value
    assert out.summary == "Wants a callback about a sync problem."
    assert out.fields["callback_number"].value == "+13125550178"  # the heuristic provider's
    assert out.provider == "heuristic" and out.reason is not None and "issue_category, the summary" in out.reason


async def test_nothing_left_to_ask_means_the_provider_is_not_asked(tmp_path: Path) -> None:
    event = with_analysis(summary="Short call.", data={"issue_category": "billing", "team_size": "12"})
    out = (await extracted(tmp_path, spec(ISSUE, TEAM), event)).extraction
    assert out.provider == "platform" and out.status == "ok"
    assert {k: v.value for k, v in out.fields.items()} == {"issue_category": "billing", "team_size": 12}


async def test_a_value_that_does_not_fit_the_field_is_left_to_the_provider(tmp_path: Path) -> None:
    event = with_analysis(data={"issue_category": "weather", "team_size": "a dozen-ish"})
    out = (await extracted(tmp_path, spec(ISSUE, TEAM, summary=False), event)).extraction
    assert out.provider == "heuristic" and out.reason is None


async def test_without_trust_or_without_analysis_the_platform_is_ignored(tmp_path: Path) -> None:
    event = with_analysis(summary="The platform's words.", data={"issue_category": "billing"})
    out = (await extracted(tmp_path, spec(ISSUE, trust=False), event)).extraction
    assert out.summary != "The platform's words." and out.provider == "heuristic"
    plain = (await extracted(tmp_path, spec(ISSUE), conversation("0005"))).extraction
    assert plain.provider == "heuristic" and plain.reason is None


async def test_a_platform_number_that_is_not_finite_is_left_to_the_provider(tmp_path: Path) -> None:
    budget = FieldSpec(name="budget", type="number")
    out = (await extracted(tmp_path, spec(budget, summary=False), with_analysis(data={"budget": "NaN"}))).extraction
    # taken, it made ExtractedValue (which refuses NaN) raise: a failed extraction, dead-lettered
    assert out.status == "ok", out.reason
    assert out.reason is None or "budget" not in out.reason


@pytest.mark.parametrize(
    ("kind", "sent"),
    [("integer", True), ("number", False), ("date", 1767225600), ("datetime", 15), ("time", 3600)],
    ids=["true as an integer", "false as a number", "a number as a date", "a number as a datetime", "as a time"],
)
async def test_a_platform_value_of_another_json_type_is_left_to_the_provider(
    tmp_path: Path, kind: str, sent: object
) -> None:
    """`true` is no count and 15 no date: pydantic's lax mode took them as 1 and 1970-01-01T00:00:15Z
    (seconds since the epoch), values the platform never meant, used by flows as if it had."""
    field = FieldSpec(name="f", type=kind)
    out = (await extracted(tmp_path, spec(field, summary=False), with_analysis(data={"f": sent}))).extraction
    assert out.provider == "heuristic" and out.reason is None, out  # nothing taken from the platform


@pytest.mark.parametrize(
    ("kind", "sent", "taken"),
    [("integer", "12", 12), ("integer", 12.0, 12), ("number", "2.5", 2.5), ("boolean", "yes", True),
     ("boolean", 1, True), ("date", "2026-03-17", "2026-03-17"), ("time", "4:30 PM", "16:30")],
)  # fmt: skip
async def test_platform_text_and_numbers_of_the_fields_type_are_still_taken(
    tmp_path: Path, kind: str, sent: object, taken: object
) -> None:
    field = FieldSpec(name="f", type=kind)
    out = (await extracted(tmp_path, spec(field, summary=False), with_analysis(data={"f": sent}))).extraction
    assert out.provider == "platform" and out.fields["f"].value == taken


async def test_a_platform_text_too_long_to_copy_is_left_to_the_provider(tmp_path: Path) -> None:
    """The extracted record carries the conversation, the platform's analysis included: taking a
    megabyte summary and note copied them, and an event the extractor read (under max_record_bytes)
    became a record over it, which the router dead-letters unread: no flow ran, not even the end-reason
    ones, where without trust_platform the same event routed."""
    notes = FieldSpec(name="notes", type="string")
    event = with_analysis(summary="s" * 1_500_000, data={"notes": "n" * 1_000_000, "issue_category": "billing"})
    out = await extracted(tmp_path, spec(notes, ISSUE), event)
    assert len(codec.encode(out)) < RouterSettings(config_dir=tmp_path).runtime.max_record_bytes
    assert out.extraction.fields["issue_category"].value == "billing"  # a short value is still taken
    assert out.extraction.fields["notes"].value != event.platform_analysis.data["notes"]  # type: ignore[union-attr]
    assert out.extraction.summary != event.platform_analysis.summary  # type: ignore[union-attr]
    assert out.extraction.provider == "heuristic"


@pytest.mark.parametrize("sent", ["16:30:00+02:00", "16:30Z", "4:30 PM"])
async def test_a_platform_time_is_a_time_of_day_without_an_offset(tmp_path: Path, sent: str) -> None:
    """A time field is HH:MM, a time of day: "16:30:00+02:00" was taken as "16:30+02:00", a value the
    router's conditions could not even print (orjson refuses a time with a zone), so the conversation
    was dead-lettered by the router after its retries, no flow run. It is left to the provider now."""
    field = FieldSpec(name="f", type="time")
    out = (await extracted(tmp_path, spec(field, summary=False), with_analysis(data={"f": sent}))).extraction
    value = out.fields["f"].value
    assert value is None or (isinstance(value, str) and len(value) == 5), value
    assert (out.provider == "platform") == (sent == "4:30 PM")


@pytest.mark.parametrize("sent", ["100000000000000000000", "-9223372036854775809"])
async def test_a_platform_integer_outside_64_bits_is_left_to_the_provider(tmp_path: Path, sent: str) -> None:
    """Platforms send their analysis as text, and pydantic reads any number of digits: "1" and twenty
    zeros was taken, a number the router's traces cannot write (orjson: "Integer exceeds 64-bit range"),
    so the router dead-lettered the conversation after its retries, no flow run."""
    field = FieldSpec(name="n", type="integer")
    out = (await extracted(tmp_path, spec(field, summary=False), with_analysis(data={"n": sent}))).extraction
    assert out.provider == "heuristic" and out.reason is None, out
    ok = await extracted(tmp_path, spec(field, summary=False), with_analysis(data={"n": str(2**63 - 1)}))
    assert ok.extraction.fields["n"].value == 2**63 - 1


async def test_a_blank_platform_summary_is_left_to_the_provider(tmp_path: Path) -> None:
    """A summary of spaces was taken: the provider was not asked for one, the record said the summary
    came from the platform, and every {{conversation_summary}} rendered the fallback text."""
    out = await extracted(tmp_path, spec(ISSUE), with_analysis(summary=" \n ", data={"issue_category": "billing"}))
    assert out.extraction.summary is not None and out.extraction.summary.strip(), out.extraction
    assert out.extraction.reason is not None and "the summary" not in out.extraction.reason


def test_the_contract_names_every_provider_an_extraction_can_say() -> None:
    """A downstream team reads ConversationExtracted's JSON Schema: "platform" was missing from it."""
    described = Extraction.model_fields["provider"].description or ""
    for provider in (heuristic.PROVIDER, llm.PROVIDER, platform.PROVIDER):
        assert provider in described, provider
