"""Trusting the voice platform's own analysis (`extraction.trust_platform: true` in the agent file).

A declared field the platform already extracted under the same name (Vapi structured data or outputs,
Retell custom analysis data, ElevenLabs data collection results: `ConversationEnded.platform_analysis`)
is taken as the platform sent it, once it fits the field's type (an enum value outside the field's
values, a text where a number is wanted, a text over TEXT_CHARS ... is left to the provider); so is the
platform's summary (up to TEXT_CHARS).
The provider is asked only for the rest, and not at all when nothing is left: no LLM call is billed
twice for what the platform already paid for.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ExtractedValue, Extraction, PlatformAnalysis
from services.extractor.answer import plain, value_type

PROVIDER = "platform"
#: a page: a longer text of the platform's is left to the provider. The extracted record carries the
#: conversation, its analysis included, so a taken text is in it twice: a megabyte summary made an event
#: the extractor read into a record over the size the router reads (max_record_bytes), dead-lettered there.
TEXT_CHARS = 10_000


def taken(spec: ExtractionSpec, analysis: PlatformAnalysis, country_code: str) -> dict[str, ExtractedValue]:
    """The declared fields the platform filled with a value of the field's type."""
    out: dict[str, ExtractedValue] = {}
    for field in spec.fields:
        sent = analysis.data.get(field.name)
        if sent is None or (isinstance(sent, str) and len(sent) > TEXT_CHARS):
            continue
        try:
            value: Any = _adapter(field, country_code).validate_python(sent)
        except ValidationError:
            continue
        if value is not None:
            out[field.name] = ExtractedValue(value=plain(value))
    return out


_adapters: dict[tuple[str, tuple[str, ...], str], TypeAdapter[Any]] = {}


def _adapter(field: FieldSpec, country_code: str) -> TypeAdapter[Any]:
    """The validator of a field's type, built once per type, enum values and country (building one costs
    ~150 µs, validating a value with it ~6: built per field of every event, it was most of the work)."""
    key = (field.type, tuple(field.values or ()), country_code)
    found = _adapters.get(key)
    if found is None:
        if len(_adapters) >= 4096:  # bounded: enum values come from configuration that may change
            _adapters.clear()
        found = _adapters[key] = TypeAdapter(value_type(field, country_code))
    return found


def remaining(spec: ExtractionSpec, values: dict[str, ExtractedValue], summary: str | None) -> ExtractionSpec:
    """What the provider must still fill."""
    fields = [f for f in spec.fields if f.name not in values]
    return spec.model_copy(update={"fields": fields, "summary": spec.summary and summary is None})


def asks_nothing(spec: ExtractionSpec) -> bool:
    return not (spec.fields or spec.dynamic_variables or spec.triggers or spec.recipient_routes or spec.summary)


def summary_of(spec: ExtractionSpec, analysis: PlatformAnalysis) -> str | None:
    summary = analysis.summary
    return summary if spec.summary and summary and summary.strip() and len(summary) <= TEXT_CHARS else None


def only(spec: ExtractionSpec, values: dict[str, ExtractedValue], summary: str | None) -> Extraction:
    """The extraction when the platform's analysis answered everything."""
    return Extraction(
        status="ok",
        reason="everything from the platform's analysis (trust_platform): the provider was not asked",
        provider=PROVIDER,
        config_revision=spec.config_revision,
        fields=values,
        summary=summary,
    )


def merged(extraction: Extraction, values: dict[str, ExtractedValue], summary: str | None) -> Extraction:
    """The provider's extraction with the platform's values and summary added (they win)."""
    if not values and summary is None:
        return extraction
    taken_from = [*sorted(values), *(["the summary"] if summary is not None else [])]
    note = f"from the platform's analysis: {', '.join(taken_from)}"
    return extraction.model_copy(
        update={
            "fields": {**extraction.fields, **values},
            "summary": summary if summary is not None else extraction.summary,
            "reason": f"{extraction.reason}; {note}" if extraction.reason else note,
        }
    )
