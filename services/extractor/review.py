"""Trust, after any provider: check each value's evidence against the transcript and flag what a human
should look at.

A value is flagged (needs_review=True) when its confidence is under the agent's min_confidence, when
its evidence quote is missing or not in the transcript (compared case- and whitespace-insensitively;
its confidence is then halved), or when a required field has no value.
"""

from __future__ import annotations

import re

from schemas.agents import ExtractionSpec
from schemas.events import ExtractedValue, Extraction, TriggerAnswer

UNSUPPORTED_FACTOR = 0.5
_ELLIPSIS = re.compile(r"\.\.\.|\u2026")
_QUOTES = "\"'\u201c\u201d\u2018\u2019 "


def normalize(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").lower().split())


def quoted(evidence: str | None, transcript: str) -> bool:
    """Every part of the quote (parts joined by an ellipsis) appears in the normalised transcript."""
    if not evidence:
        return False
    parts = [normalize(p).strip(_QUOTES) for p in _ELLIPSIS.split(evidence)]
    parts = [p for p in parts if p]
    return bool(parts) and all(p in transcript for p in parts)


def _value(v: ExtractedValue, transcript: str, threshold: float, required: bool) -> ExtractedValue:
    if v.value is None:
        return v.model_copy(update={"needs_review": required, "evidence": None})
    confidence = v.confidence if v.confidence is not None else 0.0
    supported = quoted(v.evidence, transcript)
    if not supported:
        confidence = round(confidence * UNSUPPORTED_FACTOR, 3)
    review = not supported or confidence < threshold
    return v.model_copy(update={"confidence": confidence, "needs_review": review})


def _trigger(t: TriggerAnswer, transcript: str) -> TriggerAnswer:
    if t.evidence is None or quoted(t.evidence, transcript):
        return t
    return t.model_copy(update={"confidence": round((t.confidence or 0.0) * UNSUPPORTED_FACTOR, 3)})


def review(extraction: Extraction, spec: ExtractionSpec, transcript: str) -> Extraction:
    """`transcript` is the text the provider saw, normalised with `normalize`."""
    required = {f.name for f in spec.fields if f.required}
    threshold = spec.min_confidence
    return extraction.model_copy(update={
        "fields": {k: _value(v, transcript, threshold, k in required) for k, v in extraction.fields.items()},
        "dynamic": {k: _value(v, transcript, threshold, False) for k, v in extraction.dynamic.items()},
        "triggers": {k: _trigger(t, transcript) for k, t in extraction.triggers.items()},
    })  # fmt: skip
