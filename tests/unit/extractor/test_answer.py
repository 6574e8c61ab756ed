"""The strict JSON schema sent to the model and the pydantic model that validates its answer."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from schemas.agents import ExtractionSpec, FieldSpec, RecipientRoute, RecipientRule, TriggerSpec
from services.extractor import answer

SPEC = ExtractionSpec(
    agent_id="support-line",
    config_revision="rev-1",
    fields=[
        FieldSpec(name="interest_level", type="enum", values=["high", "medium", "low", "none"]),
        FieldSpec(name="callback_number", type="phone", description="Number to call back", required=True),
        FieldSpec(name="follow_up_date", type="date"),
        FieldSpec(name="callback_at", type="datetime"),
        FieldSpec(name="seats", type="integer"),
        FieldSpec(name="budget", type="number", examples=["2000"]),
        FieldSpec(name="email", type="email"),
        FieldSpec(name="json", type="boolean"),  # a name that shadows a BaseModel method
    ],
    dynamic_variables=["dyn_severity"],
    triggers=[TriggerSpec(id="trg_ab12", question="Did the customer ask to be called back?")],
    recipient_routes=[
        RecipientRoute(
            id="severity",
            rules=[
                RecipientRule(when="outages", to=["oncall@x.example"]),
                RecipientRule(when="bugs", to=["dev@x.example"]),
            ],
            fallback=["support@x.example"],
        )
    ],
)


def slot(v: Any, evidence: str | None = "quote", confidence: float = 0.9) -> dict[str, Any]:
    return {"value": v, "evidence": evidence, "confidence": confidence}


def good() -> dict[str, Any]:
    return {
        "fields": {
            "interest_level": slot("High"), "callback_number": slot("(312) 555-0178"),
            "follow_up_date": slot("2026-03-17"), "callback_at": slot("2026-03-13T15:00:00-05:00"),
            "seats": slot(12), "budget": slot(2000.5), "email": slot("Greg@Example.com"), "json": slot(True),
        },
        "dynamic": {"dyn_severity": slot(None, None)},
        "triggers": {"trg_ab12": {"answer": True, "rationale": "asked", "evidence": "call me back", "confidence": 1.4}},
        "recipients": {"severity": {"choice": "rule_2", "rationale": "a bug"}},
        "summary": "The customer asked for a callback.",
    }  # fmt: skip


def walk(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = [schema]
    for child in schema.get("properties", {}).values():
        out.extend(walk(child))
    return out


def test_schema_is_strict_every_object_closed_and_fully_required() -> None:
    schema = answer.json_schema(SPEC)
    objects = [s for s in walk(schema) if s.get("type") == "object"]
    assert objects
    for s in objects:
        assert s["additionalProperties"] is False
        assert s["required"] == list(s["properties"])
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_carries_types_enum_values_nulls_and_the_meaning() -> None:
    fields = answer.json_schema(SPEC)["properties"]["fields"]["properties"]
    # anyOf, not an enum under `type: [string, null]`, which llama-cpp-python's grammar drops
    enum = fields["interest_level"]["properties"]["value"]["anyOf"]
    assert enum == [{"type": "string", "enum": ["high", "medium", "low", "none"]}, {"type": "null"}]
    assert fields["seats"]["properties"]["value"]["type"] == ["integer", "null"]
    phone = fields["callback_number"]["properties"]["value"]
    assert "E.164" in phone["description"] and "Required" in phone["description"]
    assert "Examples: 2000" in fields["budget"]["properties"]["value"]["description"]
    choice = answer.json_schema(SPEC)["properties"]["recipients"]["properties"]["severity"]["properties"]["choice"]
    assert choice["enum"] == ["rule_1", "rule_2", "fallback"]


def test_a_good_answer_validates_against_both_schema_and_model() -> None:
    data = good()
    data["triggers"]["trg_ab12"]["confidence"] = 1.0
    data["fields"]["interest_level"]["value"] = "high"
    jsonschema.validate(data, answer.json_schema(SPEC))
    read = answer.read_answer(answer.answer_model(SPEC, "1").model_validate(good()), SPEC)
    fields = {k: v.value for k, v in read["fields"].items()}
    assert fields == {
        "interest_level": "high",  # case is not worth a repair round
        "callback_number": "+13125550178",
        "follow_up_date": "2026-03-17",
        "callback_at": "2026-03-13T15:00:00-05:00",
        "seats": 12,
        "budget": 2000.5,
        "email": "greg@example.com",
        "json": True,
    }
    assert read["triggers"]["trg_ab12"].confidence == 1.0  # clamped
    assert read["recipients"] == {"severity": ["dev@x.example"]}
    assert read["dynamic"]["dyn_severity"].value is None


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("interest_level", "lukewarm", "Input should be"),
        ("callback_number", "extension 42", "not a phone number"),
        ("follow_up_date", "next Tuesday", "date"),
        ("seats", 12.5, "integer"),
        ("email", "greg at example", "not an email"),
        ("budget", {"amount": 1}, "number"),
    ],
)
def test_the_model_rejects_what_the_schema_forbids(field: str, bad: Any, message: str) -> None:
    data = good()
    data["fields"][field]["value"] = bad
    with pytest.raises(ValidationError) as caught:
        answer.answer_model(SPEC, "1").model_validate(data)
    assert caught.value.errors()[0]["loc"][:2] == ("fields", field)
    assert message in str(caught.value)


def test_a_missing_section_or_an_unknown_choice_is_invalid() -> None:
    model = answer.answer_model(SPEC, "1")
    data = good()
    del data["triggers"]
    with pytest.raises(ValidationError):
        model.model_validate(data)
    data = good()
    data["recipients"]["severity"]["choice"] = "someone@else.example"
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_a_time_field_is_a_24_hour_time_of_day() -> None:
    spec = ExtractionSpec(
        agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="pickup", type="time")]
    )
    model = answer.answer_model(spec, "1")
    parsed = model.model_validate(
        {"fields": {"pickup": {"value": "16:30", "evidence": "half past four", "confidence": 0.9}}}
    )
    assert answer.read_answer(parsed, spec)["fields"]["pickup"].value == "16:30"
    assert (
        "HH:MM"
        in answer.json_schema(spec)["properties"]["fields"]["properties"]["pickup"]["properties"]["value"][
            "description"
        ]
    )


def test_grammar_keywords_only_for_servers_that_compile_them() -> None:
    plain = answer.json_schema(SPEC)["properties"]["fields"]["properties"]
    assert "pattern" not in plain["callback_number"]["properties"]["value"]
    assert "maxLength" not in plain["callback_number"]["properties"]["evidence"]
    grammar = answer.json_schema(SPEC, keywords=True)["properties"]["fields"]["properties"]
    assert grammar["callback_number"]["properties"]["value"]["pattern"] == "^\\+[1-9][0-9]{6,14}$"
    assert grammar["callback_number"]["properties"]["evidence"]["maxLength"] == 160
    dated = ExtractionSpec(agent_id="a", config_revision="r", summary=False,
                           fields=[FieldSpec(name="d", type="date"), FieldSpec(name="e", type="email")])  # fmt: skip
    values = answer.json_schema(dated, keywords=True)["properties"]["fields"]["properties"]
    assert values["d"]["properties"]["value"]["format"] == "date"
    assert values["e"]["properties"]["value"]["pattern"].startswith("^[A-Za-z0-9")


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("phone", "+14155550132"),
        ("phone", "+6831234"),  # Niue: a 4-digit number after +683, seven digits in all
        ("phone", "+123456"),
        ("phone", "+1234567890123456"),
        ("email", "ann@example.com"),
        ("email", ".ann@example.com"),
        ("email", "ann@example.abcdefghijklmnopqrstuvwxyz"),  # a 26-letter top-level domain
        ("email", "ann@" + "a." * 12 + "com"),  # thirteen labels
        ("email", "a" * 65 + "@example.com"),
    ],
)
def test_the_grammar_allows_exactly_what_the_validator_accepts(kind: str, value: str) -> None:
    """A phone or email field's pattern (what llama.cpp's grammar lets the model write) and the answer's
    validation are one definition: the grammar allowed +6831234 and a 26-letter top-level domain, the
    validation then refused them, and the repair round's grammar allowed the same again."""
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type=kind)])
    schema = answer.json_schema(spec, keywords=True)["properties"]["fields"]["properties"]["x"]["properties"]
    allowed = re.search(schema["value"]["pattern"], value) is not None
    data = {"fields": {"x": {"value": value, "evidence": "q", "confidence": 0.9}}}
    try:
        answer.answer_model(spec, "1").model_validate(data)
        accepted = True
    except ValidationError:
        accepted = False
    assert allowed == accepted


def test_the_answer_cap_grows_with_the_schema_and_stays_small() -> None:
    small = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="d", type="date")])
    assert 100 < answer.output_tokens(small) < 250
    assert answer.output_tokens(SPEC) > answer.output_tokens(small)
    assert answer.output_tokens(SPEC) < 4000


@pytest.mark.parametrize(
    ("kind", "said", "value"),
    [
        ("date", "2026-03-17T00:00:00", "2026-03-17"),
        ("date", "2026-03-17T00:00:00Z", "2026-03-17"),
        ("time", "4:30 PM", "16:30"),
        ("time", "16:30:00", "16:30"),
        ("phone", "(312) 555-0178", "+13125550178"),
        ("email", "mailto:Ann@Example.com", "ann@example.com"),
    ],
)
def test_unambiguous_values_are_normalised_and_the_raw_answer_kept(kind: str, said: str, value: str) -> None:
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type=kind)])
    data = {"fields": {"x": {"value": said, "evidence": "q", "confidence": 0.9}}}
    got = answer.read_answer(answer.answer_model(spec, "1").model_validate(data), spec, data)["fields"]["x"]
    assert (got.value, got.raw) == (value, said)


def test_a_date_time_that_is_not_midnight_is_not_a_date() -> None:
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type="date")])
    with pytest.raises(ValidationError):
        answer.answer_model(spec, "1").model_validate({"fields": {"x": {"value": "2026-03-17T15:00:00"}}})


@pytest.mark.parametrize("said", ["NaN", "Infinity", "-inf"])
def test_a_number_that_is_not_finite_is_invalid_so_the_repair_round_asks_again(said: str) -> None:
    # accepted here, it made ExtractedValue (which refuses NaN) raise outside the repair round
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type="number")])
    with pytest.raises(ValidationError, match=r"fields\.x\.value"):
        answer.answer_model(spec, "1").model_validate({"fields": {"x": {"value": said, "evidence": None}}})


@pytest.mark.parametrize(
    ("kind", "said"),
    [("datetime", "20260317"), ("datetime", "15"), ("datetime", "2026"), ("datetime", "1710691200"),
     ("datetime", "+1"), ("datetime", "12.5"), ("date", "0"), ("date", "-0"), ("date", "00000000000")],
)  # fmt: skip
def test_a_date_or_date_time_written_as_digits_is_invalid_not_seconds_after_the_epoch(kind: str, said: str) -> None:
    """pydantic's lax mode reads a numeric string as a Unix time, as it reads a number (which _not_a_number
    refused): a date-time answered "20260317" (ISO 8601's basic form) was 1970-08-23T11:51:57+00:00 and one
    answered "15" (the day) 1970-01-01T00:00:15+00:00, published as ok, a time nobody said."""
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type=kind)])
    with pytest.raises(ValidationError, match="a number is not a date or time"):
        answer.answer_model(spec, "1").model_validate({"fields": {"x": {"value": said, "evidence": None}}})


def test_a_date_time_answered_with_a_date_alone_stays_a_date_not_midnight() -> None:
    spec = ExtractionSpec(
        agent_id="a", config_revision="r", summary=False, fields=[FieldSpec(name="x", type="datetime")]
    )
    model = answer.answer_model(spec, "1")
    data = {"fields": {"x": {"value": "2026-03-17", "evidence": "on Tuesday", "confidence": 0.9}}}
    got = answer.read_answer(model.model_validate(data), spec, data)["fields"]["x"]
    assert (got.value, got.raw) == ("2026-03-17", None)  # not "2026-03-17T00:00:00": no one said midnight
    data = {"fields": {"x": {"value": "2026-03-17T15:00:00-05:00", "evidence": "at 3", "confidence": 0.9}}}
    timed = answer.read_answer(model.model_validate(data), spec, data)["fields"]["x"]
    assert timed.value == "2026-03-17T15:00:00-05:00"
    with pytest.raises(ValidationError):
        model.model_validate({"fields": {"x": {"value": "2026-02-30", "evidence": None}}})


def test_route_ids_that_differ_only_in_punctuation_keep_their_own_choices() -> None:
    """A route id is any text: 'sales-team', 'sales.team', 'sales team' and 'sales_team' are four routes
    (the loader takes them). Their attributes in the answer model were all 'k_sales_team', so one route
    read another's choice: the wrong recipients, or an IndexError past its own rules."""

    def route(rid: str, n: int) -> RecipientRoute:
        rules = [RecipientRule(when=f"case {k}", to=[f"{k}@{n}.example"]) for k in range(n)]
        return RecipientRoute(id=rid, rules=rules, fallback=[f"fallback@{n}.example"])

    ids = ["sales-team", "sales.team", "sales team", "sales_team", "sales_2d_team"]
    spec = ExtractionSpec(agent_id="a", config_revision="r", summary=False,
                          recipient_routes=[route(rid, n + 1) for n, rid in enumerate(ids)])  # fmt: skip
    chosen = {"sales-team": "fallback", "sales.team": "rule_2", "sales team": "rule_3", "sales_team": "rule_1",
              "sales_2d_team": "rule_5"}  # fmt: skip
    data = {"recipients": {rid: {"choice": c, "rationale": ""} for rid, c in chosen.items()}}
    read = answer.read_answer(answer.answer_model(spec, "1").model_validate(data), spec, data)
    assert read["recipients"] == {
        "sales-team": ["fallback@1.example"],
        "sales.team": ["1@2.example"],
        "sales team": ["2@3.example"],
        "sales_team": ["0@4.example"],
        "sales_2d_team": ["4@5.example"],
    }


def test_an_enum_value_answered_exactly_is_kept_when_another_differs_only_in_case() -> None:
    """Case is folded only for an answer that is none of the values: with values A and a (the loader takes
    both), a model's exact 'A' became 'a'."""
    spec_ = ExtractionSpec(agent_id="a", config_revision="r", summary=False,
                           fields=[FieldSpec(name="grade", type="enum", values=["A", "a", "B"])])  # fmt: skip
    model = answer.answer_model(spec_, "1")
    for said, kept in (("A", "A"), ("a", "a"), ("b", "B"), (" B ", "B")):
        data = {"fields": {"grade": {"value": said, "evidence": None, "confidence": 0.9}}}
        assert answer.read_answer(model.model_validate(data), spec_, data)["fields"]["grade"].value == kept
