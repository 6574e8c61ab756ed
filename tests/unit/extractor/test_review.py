"""Evidence and confidence after any provider: unquoted or low-confidence values are flagged for review."""

from __future__ import annotations

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ExtractedValue, Extraction, TriggerAnswer
from services.extractor.review import normalize, review

SPEC = ExtractionSpec(
    agent_id="a",
    config_revision="r",
    min_confidence=0.6,
    fields=[FieldSpec(name="name", type="string"), FieldSpec(name="phone", type="phone", required=True),
            FieldSpec(name="budget", type="number"), FieldSpec(name="plan", type="string")],
)  # fmt: skip
TRANSCRIPT = normalize("[0] agent: Who am I speaking with?\n[1] customer: It's  Tom   Becker, from Becker Roofing.")


def run(**fields: ExtractedValue) -> Extraction:
    extraction = Extraction(status="ok", provider="openai", config_revision="r", fields=fields)
    return review(extraction, SPEC, TRANSCRIPT)


def test_a_quote_found_in_the_transcript_keeps_its_confidence() -> None:
    # case and whitespace do not matter; quotes around it and an ellipsis between parts do not either
    checked = run(
        name=ExtractedValue(value="Tom Becker", evidence="it's tom becker, FROM becker roofing", confidence=0.9),
        plan=ExtractedValue(value="x", evidence='"Who am I speaking with? … Tom Becker"', confidence=0.8),
    )
    assert checked.fields["name"].confidence == 0.9 and not checked.fields["name"].needs_review
    assert checked.fields["plan"].confidence == 0.8 and not checked.fields["plan"].needs_review


def test_a_quote_not_in_the_transcript_lowers_confidence_and_needs_review() -> None:
    checked = run(name=ExtractedValue(value="Tom Baker", evidence="My name is Tom Baker", confidence=0.9))
    assert checked.fields["name"].confidence == 0.45
    assert checked.fields["name"].needs_review


def test_a_value_without_any_quote_needs_review() -> None:
    checked = run(budget=ExtractedValue(value=5000, evidence=None, confidence=0.95))
    assert checked.fields["budget"].needs_review


def test_confidence_under_the_agent_threshold_needs_review() -> None:
    checked = run(name=ExtractedValue(value="Tom Becker", evidence="Tom Becker", confidence=0.55))
    assert checked.fields["name"].needs_review


def test_a_required_field_left_null_needs_review_and_an_optional_one_does_not() -> None:
    checked = run(
        phone=ExtractedValue(value=None, evidence="stray", confidence=0.2),
        budget=ExtractedValue(value=None, confidence=0.2),
    )
    assert checked.fields["phone"].needs_review and checked.fields["phone"].evidence is None
    assert not checked.fields["budget"].needs_review


def test_trigger_evidence_not_in_the_transcript_lowers_its_confidence() -> None:
    extraction = Extraction(
        status="ok", provider="openai", config_revision="r",
        triggers={"t": TriggerAnswer(question="q", answer=True, evidence="please call me back", confidence=0.8)},
    )  # fmt: skip
    assert review(extraction, SPEC, TRANSCRIPT).triggers["t"].confidence == 0.4
