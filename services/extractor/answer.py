"""What the model must answer, built from an ExtractionSpec twice: as a strict JSON Schema for the
request (response_format json_schema, strict: true) and as a pydantic model that validates the reply.

Strict structured outputs need every property required and `additionalProperties: false`; a value the
transcript does not support is expressed as null. By default the schema uses only keywords every
OpenAI-compatible server understands: formats are said in descriptions and checked by the pydantic
model, whose errors are what the repair round shows the model. For a server whose grammar compiles
them (llama.cpp; `keywords=True`), the schema also carries `format` (date, date-time), `pattern` (time,
E.164, email) and `maxLength`, so a small model cannot write a malformed date or a runaway quote.

Before validation, unambiguous values are normalised (a date with a midnight time, "4:30 PM" for a
time, a national phone number with the agent's default country code, "mailto:"); the model's raw value
is kept on the record (ExtractedValue.raw) whenever it differs from the value used.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, create_model

from schemas.agent_config import E164, EMAIL_VALUE
from schemas.agents import ExtractionSpec, FieldSpec
from schemas.events import ExtractedValue, TriggerAnswer
from services.extractor.values import find_times, normalize_phone

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
# what a grammar-constraining server (llama.cpp) is told beyond the types; the validator checks the same
KEYWORDS: dict[str, JsonSchema] = {
    "date": {"format": "date"},
    "datetime": {"format": "date-time"},
    "time": {"pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
    "phone": {"pattern": f"^{E164.pattern}$"},
    "email": {"pattern": f"^{EMAIL_VALUE.pattern}$"},
    "string": {"maxLength": 120},
}
EVIDENCE_CHARS = 160  # a quote of a sentence or two; a small model otherwise fills every string to the bound
# answer tokens per value, by type: what max_tokens is sized from (JSON keys and punctuation included)
VALUE_TOKENS = {"boolean": 2, "integer": 6, "number": 8, "date": 8, "datetime": 14, "time": 5, "phone": 9,
                "email": 14, "string": 32}  # fmt: skip
# keys, indentation and a confidence (small models pretty-print), and an evidence quote at its bound
SLOT_TOKENS = 40 + 60
TRIGGER_TOKENS = 40 + 60 + 60  # answer and confidence; an evidence quote; a one-sentence rationale
ROUTE_TOKENS = 30 + 60
SUMMARY_TOKENS = 130


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _confidence(v: float) -> float:
    return min(1.0, max(0.0, v))


def _blank_to_none(v: Any) -> Any:
    return None if isinstance(v, str) and not v.strip() else v


# clamped once parsed: without a grammar a model may write "95" as well as 95 (a NaN is refused and repaired)
Confidence = Annotated[FiniteFloat, AfterValidator(_confidence)]


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
    if v is not None:
        v = str(v).strip().removeprefix("mailto:")
    if v is not None and not EMAIL_VALUE.fullmatch(v):
        raise ValueError("not an email address")
    return None if v is None else v.lower()


_DIGITS = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")  # what pydantic's lax mode reads as a Unix time


def _not_a_number(v: Any) -> Any:
    """A date or time is text: pydantic's lax mode would read 15, or "15", or "20260317" (ISO 8601's basic
    form), as that many seconds after the epoch, a time in 1970 nobody said."""
    if (isinstance(v, int | float) and not isinstance(v, bool)) or (isinstance(v, str) and _DIGITS.fullmatch(v)):
        raise ValueError("a number is not a date or time: write ISO 8601 text")
    return v


def _not_a_flag(v: Any) -> Any:
    if isinstance(v, bool):  # lax mode reads true as 1
        raise ValueError("a boolean is not a number")
    return v


def _int64(v: int | None) -> int | None:
    # pydantic reads any number of digits; JSON writers downstream (orjson: the router's traces) stop at 64 bits
    if v is not None and not -(2**63) <= v < 2**63:
        raise ValueError("a whole number of at most 64 bits")
    return v


_MIDNIGHT = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_CLOCK = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])(?::[0-5][0-9](?:\.\d+)?)?$")


def _date(v: Any) -> Any:
    """2026-03-17T00:00:00 is the date 2026-03-17: a date-time at midnight says nothing more."""
    if isinstance(v, str) and (m := _MIDNIGHT.match(v.strip())):
        return m.group(1)
    return _not_a_number(v)


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _datetime(v: Any) -> Any:
    """A date-time field answered with a date alone stays a date: read as a date-time it would be
    midnight, a time nobody said (a callback at 00:00); the router reads a date as its opening hour."""
    if isinstance(v, str) and _DATE_ONLY.match(v.strip()):
        return date.fromisoformat(v.strip())
    return _not_a_number(v)


def _time(v: Any) -> Any:
    """16:30, 16:30:00, 4:30 PM, half past four in the afternoon -> 16:30; anything else is left to fail."""
    if not isinstance(v, str):
        return _not_a_number(v)
    text = v.strip()
    if m := _CLOCK.match(text):
        return f"{int(m.group(1)):02d}:{m.group(2)}"
    found = find_times(text)
    if len(found) == 1 and found[0].end - found[0].start >= len(text) - 2:
        return found[0].value.isoformat("minutes")
    return v


def _time_of_day(v: time | None) -> time | None:
    if v is not None and v.tzinfo is not None:  # "16:30+02:00": HH:MM is a time of day, in no zone
        raise ValueError("a time of day has no UTC offset: HH:MM, 24-hour")
    return v


def _literal(values: list[str]) -> Any:
    return Literal[tuple(values)]


def _enum(values: list[str]) -> Any:
    exact, by_lower = frozenset(values), {v.lower(): v for v in values}

    def canonical(v: Any) -> Any:  # case is not worth a repair round; an exact value is itself (A beside a)
        return by_lower.get(v.strip().lower(), v) if isinstance(v, str) and v not in exact else v

    return Annotated[_literal(values) | None, BeforeValidator(_blank_to_none), BeforeValidator(canonical)]


def value_type(f: FieldSpec, country_code: str) -> Any:
    simple: dict[str, Any] = {"string": str, "boolean": bool}
    if f.type == "integer":
        return Annotated[
            int | None, BeforeValidator(_blank_to_none), BeforeValidator(_not_a_flag), AfterValidator(_int64)
        ]
    if f.type == "number":  # finite: "NaN" or "Infinity" is no value (and no event can carry it)
        return Annotated[FiniteFloat | None, BeforeValidator(_blank_to_none), BeforeValidator(_not_a_flag)]
    if f.type == "enum":
        return _enum(list(f.values or []))
    if f.type == "phone":
        return _phone(country_code)
    if f.type == "email":
        return Annotated[str | None, BeforeValidator(_blank_to_none), BeforeValidator(_email)]
    if f.type == "date":
        return Annotated[date | None, BeforeValidator(_blank_to_none), BeforeValidator(_date)]
    if f.type == "time":
        return Annotated[
            time | None, BeforeValidator(_blank_to_none), BeforeValidator(_time), AfterValidator(_time_of_day)
        ]
    if f.type == "datetime":
        return Annotated[datetime | date | None, BeforeValidator(_blank_to_none), BeforeValidator(_datetime)]
    return Annotated[simple[f.type] | None, BeforeValidator(_blank_to_none)]


def value_schema(f: FieldSpec, keywords: bool = False) -> JsonSchema:
    parts = [f.description.strip(), FORMATS.get(f.type, "")]
    if f.required:
        parts.append("Required: fill it whenever the transcript supports a value.")
    if f.examples:
        parts.append("Examples: " + "; ".join(f.examples))
    schema: JsonSchema
    if f.type == "enum":
        # anyOf, not `type: [string, null]` with `enum`: some grammar compilers (llama-cpp-python's) drop
        # an enum under a list type, and then any string passes
        schema = {"anyOf": [{"type": "string", "enum": list(f.values or [])}, {"type": "null"}]}
    else:
        schema = {"type": [JSON_TYPES.get(f.type, "string"), "null"]}
        if keywords:
            schema.update(KEYWORDS.get(f.type, {}))
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


def _bounded(schema: JsonSchema, chars: int, keywords: bool) -> JsonSchema:
    return {**schema, "maxLength": chars} if keywords else schema


def dyn_field(name: str) -> FieldSpec:
    words = name.removeprefix("dyn_").replace("_", " ")
    return FieldSpec(name=name, type="string", description=f"The {words} as stated in the conversation.")


def route_choices(n_rules: int) -> list[str]:
    return [*(f"rule_{i + 1}" for i in range(n_rules)), "fallback"]


def json_schema(spec: ExtractionSpec, keywords: bool = False) -> JsonSchema:
    evidence = _bounded(EVIDENCE, EVIDENCE_CHARS, keywords)
    rationale = _bounded({"type": "string", "description": "One short sentence."}, EVIDENCE_CHARS, keywords)

    def slot(f: FieldSpec) -> JsonSchema:
        return _obj({"value": value_schema(f, keywords), "evidence": evidence, "confidence": CONFIDENCE})

    sections: dict[str, JsonSchema] = {}
    if spec.fields:
        sections["fields"] = _obj({f.name: slot(f) for f in spec.fields})
    if spec.dynamic_variables:
        sections["dynamic"] = _obj({n: slot(dyn_field(n)) for n in spec.dynamic_variables})
    if spec.triggers:
        sections["triggers"] = _obj({t.id: _obj(
            {"answer": {"type": "boolean"}, "rationale": rationale,
             "evidence": evidence, "confidence": CONFIDENCE}, t.question) for t in spec.triggers})  # fmt: skip
    if spec.recipient_routes:
        sections["recipients"] = _obj({r.id: _obj(
            {"choice": {"type": "string", "enum": route_choices(len(r.rules))},
             "rationale": _bounded({"type": "string"}, EVIDENCE_CHARS, keywords)},
            "; ".join(f"rule_{i + 1}: {rule.when}" for i, rule in enumerate(r.rules))
            + "; fallback: none of the rules clearly applies") for r in spec.recipient_routes})  # fmt: skip
    if spec.summary:
        sections["summary"] = _bounded({"type": ["string", "null"], "description": "Two or three sentences."}, 480,
                                       keywords)  # fmt: skip
    return _obj(sections)


def output_tokens(spec: ExtractionSpec) -> int:
    """A cap on the answer's tokens that a complete answer never reaches (each value, evidence and
    rationale at a generous length, plus a quarter) and a looping one reaches soon."""

    def value(kind: str, values: list[str] | None) -> int:
        if kind == "enum":
            return 2 + max((len(v) // 3 + 1 for v in values or []), default=4)
        return VALUE_TOKENS.get(kind, 32)

    total = 16
    total += sum(SLOT_TOKENS + len(f.name) // 3 + value(f.type, f.values) for f in spec.fields)
    total += sum(SLOT_TOKENS + len(n) // 3 + VALUE_TOKENS["string"] for n in spec.dynamic_variables)
    total += len(spec.triggers) * TRIGGER_TOKENS + len(spec.recipient_routes) * ROUTE_TOKENS
    total += SUMMARY_TOKENS if spec.summary else 0
    return int(total * 1.25) + 32


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def _safe(name: str) -> str:
    """An attribute name for a key, one per key: a route id is any text, and 'sales-team' and 'sales.team'
    are two routes, so every other character (and _ itself) is written as its code point: _2d_, _2e_."""
    return "k_" + _NOT_ALNUM.sub(lambda m: f"_{ord(m.group()):x}_", name)


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


def plain(v: Any) -> Any:
    if isinstance(v, time):
        return v.isoformat("minutes")
    return v.isoformat() if isinstance(v, date | datetime) else v


def _values(section: BaseModel | None, raw: Any) -> dict[str, ExtractedValue]:
    if section is None:
        return {}
    out = {}
    for key, slot in section.model_dump(by_alias=True).items():
        value = plain(slot["value"])
        said = raw.get(key, {}).get("value") if isinstance(raw, dict) and isinstance(raw.get(key), dict) else None
        kept = said if said is not None and said != value and isinstance(said, str | int | float | bool) else None
        out[key] = ExtractedValue(value=value, evidence=slot["evidence"] if value is not None else None,
                                  confidence=slot["confidence"], raw=kept)  # fmt: skip
    return out


def read_answer(answer: BaseModel, spec: ExtractionSpec, raw: Any = None) -> dict[str, Any]:
    """The validated answer as Extraction keyword arguments (recipients resolved to addresses); `raw`,
    the answer's JSON as the model wrote it, gives each normalised value its raw form."""
    raw = raw if isinstance(raw, dict) else {}
    fields = _values(getattr(answer, "k_fields", None), raw.get("fields"))
    dynamic = _values(getattr(answer, "k_dynamic", None), raw.get("dynamic"))
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
