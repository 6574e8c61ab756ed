"""`extraction.trust_platform`: fields and the summary the voice platform already extracted are taken
(when they fit the field's type), the provider fills only the rest, and is not asked when nothing is
left."""

from __future__ import annotations

from pathlib import Path

import httpx

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ConversationEnded, ConversationExtracted, PlatformAnalysis
from schemas.topics import CONVERSATION_EXTRACTED
from services.common.harness import Harness
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings
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
