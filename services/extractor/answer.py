"""What the model must answer, built from an ExtractionSpec twice: as a strict JSON Schema for the
request (response_format json_schema, strict: true) and as a pydantic model that validates the reply.

Strict structured outputs need every property required and `additionalProperties: false`; a value the
transcript does not support is expressed as null. The schema uses only keywords every OpenAI-compatible
server understands (no `format`, no `pattern`): formats are said in descriptions and checked by the
pydantic model, whose errors are what the repair round shows the model.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ExtractedValue, TriggerAnswer
from services.extractor.values import EMAIL, normalize_phone

JsonSchema = dict[str, Any]
FORMATS = {
    "date": "An ISO 8601 date, YYYY-MM-DD; resolve relative dates against the conversation's end.",
    "datetime": "An ISO 8601 date-time with UTC offset, e.g. 2025-03-14T15:00:00-07:00.",
    "time": "A time of day, 24-hour HH:MM, e.g. 16:30.",
    "phone": "A phone number in E.164 form, e.g. +14155550132.",
    "email": "An email address, e.g. name@example.com.",
    "integer": "A whole number.",
}
JSON_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _confidence(v: Any) -> Any:
    return min(1.0, max(0.0, float(v))) if isinstance(v, int | float) and not isinstance(v, bool) else v


def _blank_to_none(v: Any) -> Any:
    return None if isinstance(v, str) and not v.strip() else v


Confidence = Annotated[float, BeforeValidator(_confidence)]


def _phone(country_code: str) -> Any:
    def check(v: Any) -> Any:
        if v is None:
            return None
        phone = normalize_phone(str(v), country_code)
        if phone is None:
            raise ValueError("not a phone number; use E.164, e.g. +14155550132")
        return phone

    return Annotated[str | None, BeforeValidator(_blank_to_none), BeforeValidator(check)]


def _email(v: Any) -> Any:
    if v is not None and not EMAIL.fullmatch(str(v).strip()):
        raise ValueError("not an email address")
    return None if v is None else str(v).strip().lower()


def _literal(values: list[str]) -> Any:
    return Literal[tuple(values)]


def _enum(values: list[str]) -> Any:
    by_lower = {v.lower(): v for v in values}

    def canonical(v: Any) -> Any:  # case is not worth a repair round
        return by_lower.get(v.strip().lower(), v) if isinstance(v, str) else v

    return Annotated[_literal(values) | None, BeforeValidator(_blank_to_none), BeforeValidator(canonical)]


def value_type(f: FieldSpec, country_code: str) -> Any:
    simple: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool, "date": date,
                              "datetime": datetime, "time": time}  # fmt: skip
    if f.type == "enum":
        return _enum(list(f.values or []))
    if f.type == "phone":
        return _phone(country_code)
    if f.type == "email":
        return Annotated[str | None, BeforeValidator(_blank_to_none), BeforeValidator(_email)]
    return Annotated[simple[f.type] | None, BeforeValidator(_blank_to_none)]


def value_schema(f: FieldSpec) -> JsonSchema:
    parts = [f.description.strip(), FORMATS.get(f.type, "")]
    if f.required:
        parts.append("Required: fill it whenever the transcript supports a value.")
    if f.examples:
        parts.append("Examples: " + "; ".join(f.examples))
    schema: JsonSchema = {"type": [JSON_TYPES.get(f.type, "string"), "null"]}
    if f.type == "enum":
        schema["enum"] = [*(f.values or []), None]
    if text := " ".join(p for p in parts if p):
        schema["description"] = text
    return schema


def _obj(properties: dict[str, JsonSchema], description: str | None = None) -> JsonSchema:
    out: JsonSchema = {"type": "object", "additionalProperties": False, "required": list(properties),
                       "properties": properties}  # fmt: skip
    if description:
        out["description"] = description
    return out


NULLABLE_STRING: JsonSchema = {"type": ["string", "null"]}
EVIDENCE: JsonSchema = {"type": ["string", "null"], "description": "Verbatim quote from the transcript; null if none."}
CONFIDENCE: JsonSchema = {"type": "number", "description": "0 to 1: how sure the transcript makes the value."}


def dyn_field(name: str) -> FieldSpec:
    words = name.removeprefix("dyn_").replace("_", " ")
    return FieldSpec(name=name, type="string", description=f"The {words} as stated in the conversation.")


def route_choices(n_rules: int) -> list[str]:
    return [*(f"rule_{i + 1}" for i in range(n_rules)), "fallback"]


def json_schema(spec: ExtractionSpec) -> JsonSchema:
    def slot(f: FieldSpec) -> JsonSchema:
        return _obj({"value": value_schema(f), "evidence": EVIDENCE, "confidence": CONFIDENCE})

    sections: dict[str, JsonSchema] = {}
    if spec.fields:
        sections["fields"] = _obj({f.name: slot(f) for f in spec.fields})
    if spec.dynamic_variables:
        sections["dynamic"] = _obj({n: slot(dyn_field(n)) for n in spec.dynamic_variables})
    if spec.triggers:
        sections["triggers"] = _obj({t.id: _obj(
            {"answer": {"type": "boolean"}, "rationale": {"type": "string", "description": "One short sentence."},
             "evidence": EVIDENCE, "confidence": CONFIDENCE}, t.question) for t in spec.triggers})  # fmt: skip
    if spec.recipient_routes:
        sections["recipients"] = _obj({r.id: _obj(
            {"choice": {"type": "string", "enum": route_choices(len(r.rules))},
             "rationale": {"type": "string"}}, "; ".join(f"rule_{i + 1}: {rule.when}" for i, rule in enumerate(r.rules))
            + "; fallback: none of the rules clearly applies") for r in spec.recipient_routes})  # fmt: skip
    if spec.summary:
        sections["summary"] = {"type": ["string", "null"], "description": "Two or three sentences."}
    return _obj(sections)


def _safe(name: str) -> str:
    return "k_" + re.sub(r"\W", "_", name)


def _section(name: str, slots: dict[str, Any]) -> type[BaseModel]:
    definitions: dict[str, Any] = {_safe(k): (t, Field(alias=k)) for k, t in slots.items()}
    model: type[BaseModel] = create_model(name, __base__=Strict, **definitions)
    return model


def _slot_model(name: str, vtype: Any) -> type[BaseModel]:
    return create_model(name, __base__=Strict, value=(vtype, ...), evidence=(str | None, None),
                        confidence=(Confidence, 0.5))  # fmt: skip


class TriggerSlot(Strict):
    answer: bool
    rationale: str = ""
    evidence: str | None = None
    confidence: Confidence = 0.5


def answer_model(spec: ExtractionSpec, country_code: str) -> type[BaseModel]:
    """The pydantic twin of json_schema(spec); keys are aliases, so any field name or trigger id works."""
    sections: dict[str, Any] = {}
    if spec.fields:
        sections["fields"] = _section("Fields", {f.name: _slot_model(f"F_{f.name}", value_type(f, country_code))
                                                 for f in spec.fields})  # fmt: skip
    if spec.dynamic_variables:
        str_slot = _slot_model("Dyn", value_type(dyn_field("dyn_x"), country_code))
        sections["dynamic"] = _section("Dynamic", dict.fromkeys(spec.dynamic_variables, str_slot))
    if spec.triggers:
        sections["triggers"] = _section("Triggers", {t.id: TriggerSlot for t in spec.triggers})
    if spec.recipient_routes:
        sections["recipients"] = _section("Recipients", {r.id: create_model(
            f"Route_{_safe(r.id)}", __base__=Strict, choice=(_literal(route_choices(len(r.rules))), ...),
            rationale=(str, "")) for r in spec.recipient_routes})  # fmt: skip
    if spec.summary:
        sections["summary"] = str | None
    return _section("Answer", sections)


def _plain(v: Any) -> Any:
    if isinstance(v, time):
        return v.isoformat("minutes")
    return v.isoformat() if isinstance(v, date | datetime) else v


def _values(section: BaseModel | None) -> dict[str, ExtractedValue]:
    if section is None:
        return {}
    out = {}
    for key, slot in section.model_dump(by_alias=True).items():
        out[key] = ExtractedValue(value=_plain(slot["value"]), evidence=slot["evidence"] if slot["value"] is not None
                                  else None, confidence=slot["confidence"])  # fmt: skip
    return out


def read_answer(answer: BaseModel, spec: ExtractionSpec) -> dict[str, Any]:
    """The validated answer as Extraction keyword arguments (recipients resolved to addresses)."""
    fields = _values(getattr(answer, "k_fields", None))
    dynamic = _values(getattr(answer, "k_dynamic", None))
    triggers_section = getattr(answer, "k_triggers", None)
    triggers = {}
    for t in spec.triggers:
        slot: TriggerSlot = getattr(triggers_section, _safe(t.id))
        triggers[t.id] = TriggerAnswer(question=t.question, answer=slot.answer, rationale=slot.rationale,
                                       evidence=slot.evidence, confidence=slot.confidence)  # fmt: skip
    routes_section = getattr(answer, "k_recipients", None)
    recipients = {}
    for r in spec.recipient_routes:
        choice = getattr(routes_section, _safe(r.id)).choice
        recipients[r.id] = list(r.fallback if choice == "fallback" else r.rules[int(choice[5:]) - 1].to)
    summary = getattr(answer, "k_summary", None) if spec.summary else None
    return {"fields": fields, "dynamic": dynamic, "triggers": triggers, "recipients": recipients,
            "summary": summary}  # fmt: skip
