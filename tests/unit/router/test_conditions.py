"""Every condition kind and operator, table-driven, including null handling and failed extractions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from schemas.agent_checks import regex_problem
from schemas.agents import Condition, FieldSpec
from schemas.events import ConditionResult, ConversationExtracted
from services.router.conditions import MATCH_INPUT_LIMIT, Outcome, compile_condition
from tests.unit.router.support import event

FIELDS = {
    f.name: f
    for f in [
        FieldSpec(name="interest_level", type="enum", values=["high", "medium", "low", "none"]),
        FieldSpec(name="follow_up_required", type="boolean"),
        FieldSpec(name="score", type="number"),
        FieldSpec(name="seats", type="integer"),
        FieldSpec(name="follow_up_date", type="date"),
        FieldSpec(name="callback_at", type="datetime"),
        FieldSpec(name="pickup_time", type="time"),
        FieldSpec(name="notes", type="string"),
    ]
}
CONDITION = TypeAdapter(Condition)


def evaluate(cond: dict[str, Any], ev: ConversationExtracted) -> tuple[Outcome, list[ConditionResult]]:
    results: list[ConditionResult] = []
    outcome = compile_condition(CONDITION.validate_python(cond), "when", FIELDS)(ev, results)
    return outcome, results


FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # ==, != with values and with null (a field the extractor did not fill is null)
    ("eq-match", {"field": "interest_level", "op": "==", "value": "high"}, {"interest_level": "high"}, True),
    ("eq-miss", {"field": "interest_level", "op": "==", "value": "high"}, {"interest_level": "low"}, False),
    ("eq-null-vs-value", {"field": "interest_level", "op": "==", "value": "high"}, {"interest_level": None}, False),
    ("eq-null-missing-field", {"field": "interest_level", "op": "==", "value": None}, {}, True),
    ("eq-null-explicit-null", {"field": "interest_level", "op": "==", "value": None}, {"interest_level": None}, True),
    (
        "eq-null-vs-value-present",
        {"field": "interest_level", "op": "==", "value": None},
        {"interest_level": "low"},
        False,
    ),
    ("ne-value", {"field": "interest_level", "op": "!=", "value": "high"}, {"interest_level": "low"}, True),
    ("ne-same", {"field": "interest_level", "op": "!=", "value": "high"}, {"interest_level": "high"}, False),
    ("ne-null-field-vs-value", {"field": "interest_level", "op": "!=", "value": "high"}, {}, True),
    ("ne-null-present", {"field": "interest_level", "op": "!=", "value": None}, {"interest_level": "low"}, True),
    ("ne-null-missing", {"field": "interest_level", "op": "!=", "value": None}, {}, False),
    (
        "ignore-case-eq",
        {"field": "notes", "op": "==", "value": "URGENT", "ignore_case": True},
        {"notes": "urgent"},
        True,
    ),
    ("case-sensitive-eq", {"field": "notes", "op": "==", "value": "URGENT"}, {"notes": "urgent"}, False),
    # booleans are not numbers: true never equals 1
    ("bool-true", {"field": "follow_up_required", "op": "==", "value": True}, {"follow_up_required": True}, True),
    ("bool-false", {"field": "follow_up_required", "op": "==", "value": True}, {"follow_up_required": False}, False),
    ("bool-is-not-one", {"field": "follow_up_required", "op": "==", "value": True}, {"follow_up_required": 1}, False),
    (
        "bool-text-coerced",
        {"field": "follow_up_required", "op": "==", "value": True},
        {"follow_up_required": "yes"},
        True,
    ),
    # in / not_in
    (
        "in-hit",
        {"field": "interest_level", "op": "in", "value": ["high", "medium"]},
        {"interest_level": "medium"},
        True,
    ),
    ("in-miss", {"field": "interest_level", "op": "in", "value": ["high", "medium"]}, {"interest_level": "low"}, False),
    ("in-null", {"field": "interest_level", "op": "in", "value": ["high"]}, {}, False),
    ("in-list-with-null", {"field": "interest_level", "op": "in", "value": ["high", None]}, {}, True),
    ("not-in-hit", {"field": "interest_level", "op": "not_in", "value": ["none"]}, {"interest_level": "low"}, True),
    ("not-in-miss", {"field": "interest_level", "op": "not_in", "value": ["low"]}, {"interest_level": "low"}, False),
    ("not-in-null", {"field": "interest_level", "op": "not_in", "value": ["low"]}, {}, True),
    ("not-in-null-listed", {"field": "interest_level", "op": "not_in", "value": ["low", None]}, {}, False),
    # ordering: numbers, integers, dates, datetimes; null never passes
    ("gt", {"field": "score", "op": ">", "value": 7}, {"score": 8.5}, True),
    ("gt-equal", {"field": "score", "op": ">", "value": 7}, {"score": 7}, False),
    ("ge-equal", {"field": "score", "op": ">=", "value": 7}, {"score": 7}, True),
    ("lt", {"field": "score", "op": "<", "value": 7}, {"score": 6.9}, True),
    ("le", {"field": "score", "op": "<=", "value": 7}, {"score": 7.1}, False),
    ("gt-null", {"field": "score", "op": ">", "value": 7}, {"score": None}, False),
    ("lt-null", {"field": "score", "op": "<", "value": 7}, {}, False),
    ("gt-text-coerced", {"field": "score", "op": ">", "value": 7}, {"score": "9"}, True),
    ("gt-text-unreadable", {"field": "score", "op": ">", "value": 7}, {"score": "lots"}, False),
    ("int-eq-float", {"field": "seats", "op": "==", "value": 3}, {"seats": 3.0}, True),
    ("date-gt", {"field": "follow_up_date", "op": ">", "value": "2026-03-01"}, {"follow_up_date": "2026-03-12"}, True),
    (
        "date-le",
        {"field": "follow_up_date", "op": "<=", "value": "2026-03-01"},
        {"follow_up_date": "2026-03-12"},
        False,
    ),
    ("date-eq", {"field": "follow_up_date", "op": "==", "value": "2026-03-12"}, {"follow_up_date": "2026-03-12"}, True),
    (
        "datetime-lt",
        {"field": "callback_at", "op": "<", "value": "2026-03-12T15:00:00+00:00"},
        {"callback_at": "2026-03-12T09:00:00-05:00"},
        True,
    ),
    # a time of day compares as a time, not as text ("9:05" is before "16:30")
    ("time-lt", {"field": "pickup_time", "op": "<", "value": "16:30"}, {"pickup_time": "09:05"}, True),
    ("time-ge", {"field": "pickup_time", "op": ">=", "value": "16:30"}, {"pickup_time": "16:30:00"}, True),
    ("time-ge-miss", {"field": "pickup_time", "op": ">=", "value": "16:30"}, {"pickup_time": "07:00"}, False),
    # exists
    ("exists-yes", {"field": "notes", "op": "exists"}, {"notes": "x"}, True),
    ("exists-null", {"field": "notes", "op": "exists"}, {"notes": None}, False),
    ("exists-missing", {"field": "notes", "op": "exists"}, {}, False),
    ("exists-false", {"field": "notes", "op": "exists", "value": False}, {}, True),
    # contains / matches
    ("contains", {"field": "notes", "op": "contains", "value": "refund"}, {"notes": "wants a refund now"}, True),
    ("contains-case", {"field": "notes", "op": "contains", "value": "REFUND"}, {"notes": "wants a refund"}, False),
    (
        "contains-ignore-case",
        {"field": "notes", "op": "contains", "value": "REFUND", "ignore_case": True},
        {"notes": "wants a refund"},
        True,
    ),
    ("contains-null", {"field": "notes", "op": "contains", "value": "x"}, {}, False),
    ("matches", {"field": "notes", "op": "matches", "value": r"CASE-\d{5}"}, {"notes": "see CASE-12345"}, True),
    ("matches-miss", {"field": "notes", "op": "matches", "value": r"^CASE-\d{5}$"}, {"notes": "see CASE-12345"}, False),
    (
        "matches-ignore-case",
        {"field": "notes", "op": "matches", "value": "case-", "ignore_case": True},
        {"notes": "CASE-1"},
        True,
    ),
    ("matches-null", {"field": "notes", "op": "matches", "value": "."}, {}, False),
    (
        "matches-input-capped",
        {"field": "notes", "op": "matches", "value": "needle"},
        {"notes": "x" * MATCH_INPUT_LIMIT + "needle"},
        False,
    ),
]


@pytest.mark.parametrize(("cond", "fields", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_field_operator(cond: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    outcome, results = evaluate(cond, event(fields=fields))
    assert outcome.passed is expected
    assert results[0].kind == "field" and results[0].passed is expected
    assert results[0].expected == {"op": cond["op"], "value": cond.get("value")}
    assert cond["field"] in results[0].reason


BACKTRACKING_PATTERNS = [r"(.|\s)*refund", r"(a|a)*b", r"(a+)+$", r"(\w+\s?)*:"]


@pytest.mark.timeout(20)  # a guard, not a measurement: a backtracking engine takes longer than the universe
@pytest.mark.parametrize("pattern", BACKTRACKING_PATTERNS)
def test_a_pattern_that_backtracks_exponentially_elsewhere_runs_in_linear_time(pattern: str) -> None:
    """`(.|\\s)*refund` is common and was accepted; on a backtracking engine each extra word doubled the
    time and the router's event loop froze. RE2 accepts it and answers at once on the longest input."""
    assert regex_problem(pattern) is None
    hostile = ("word " * (MATCH_INPUT_LIMIT // 5))[: MATCH_INPUT_LIMIT - 1] + "!"
    hostile_a = "a" * (MATCH_INPUT_LIMIT - 1) + "!"
    for text in (hostile, hostile_a):
        outcome, _ = evaluate({"field": "notes", "op": "matches", "value": pattern}, event(fields={"notes": text}))
        assert outcome.passed is False


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=refund)", "(?<!not )refund", "a{1001}"])
def test_a_pattern_re2_cannot_compile_is_refused(pattern: str) -> None:
    assert "RE2 cannot compile" in (regex_problem(pattern) or "")


def test_field_result_reports_the_actual_value() -> None:
    _, results = evaluate(
        {"field": "interest_level", "op": "==", "value": "high"}, event(fields={"interest_level": "low"})
    )
    assert results[0].actual == "low"
    assert results[0].reason == 'interest_level = "low"; == "high" is false'


CONVERSATION_CASES = [
    ("duration", {"field": "conversation.duration_seconds", "op": ">", "value": 60}, {}, True),
    ("direction", {"field": "conversation.direction", "op": "==", "value": "outbound"}, {}, False),
    (
        "dynamic-variable",
        {"field": "dynamic_variables.plan", "op": "==", "value": "pro"},
        {"dynamic_variables": {"plan": "pro"}},
        True,
    ),
    ("dynamic-variable-missing", {"field": "dynamic_variables.plan", "op": "exists"}, {}, False),
    (
        "platform-extracted-value",
        {"field": "platform.interest_level", "op": "==", "value": "high"},
        {"platform_analysis": {"data": {"interest_level": "high"}}},
        True,
    ),
    (
        "platform-verdict",
        {"field": "platform.successful", "op": "==", "value": False},
        {"platform_analysis": {"successful": False, "data": {"successful": "shadowed"}}},
        True,
    ),
    ("platform-no-analysis", {"field": "platform.summary", "op": "exists"}, {}, False),
    (
        "platform-number",
        {"field": "platform.lead_score", "op": ">", "value": 7},
        {"platform_analysis": {"data": {"lead_score": 8}}},
        True,
    ),
    (
        "platform-number-as-text",
        {"field": "platform.lead_score", "op": ">", "value": 7},
        {"platform_analysis": {"data": {"lead_score": " 8 "}}},
        True,
    ),
    (
        "platform-text-is-no-number",
        {"field": "platform.lead_score", "op": ">", "value": 7},
        {"platform_analysis": {"data": {"lead_score": "8 of 10"}}},
        False,
    ),
    (
        "platform-infinity-text-is-no-number",
        {"field": "platform.lead_score", "op": ">", "value": 7},
        {"platform_analysis": {"data": {"lead_score": "inf"}}},
        False,
    ),
    (
        "dynamic-variable-number-as-text",
        {"field": "dynamic_variables.seats", "op": "<=", "value": 10},
        {"dynamic_variables": {"seats": "-2.5"}},
        True,
    ),
    (
        "dynamic-variable-quoted-number-is-a-number-not-text",
        {"field": "dynamic_variables.age", "op": ">=", "value": "18"},
        {"dynamic_variables": {"age": "9"}},
        False,
    ),
    (
        "platform-number-against-a-quoted-number",
        {"field": "platform.lead_score", "op": ">", "value": "8"},
        {"platform_analysis": {"data": {"lead_score": 10}}},
        True,
    ),
    (
        "platform-number-below",
        {"field": "platform.lead_score", "op": ">=", "value": 7.5},
        {"platform_analysis": {"data": {"lead_score": 7}}},
        False,
    ),
    (
        "platform-in",
        {"field": "platform.issue_category", "op": "in", "value": ["billing", "technical"]},
        {"platform_analysis": {"data": {"issue_category": "technical"}}},
        True,
    ),
    (
        "platform-sentiment-any-case",
        {"field": "platform.sentiment", "op": "==", "value": "positive", "ignore_case": True},
        {"platform_analysis": {"sentiment": "Positive"}},
        True,
    ),
    (
        "platform-summary-matches",
        {"field": "platform.summary", "op": "matches", "value": "re(fund|turn)"},
        {"platform_analysis": {"summary": "Wants to return the unit."}},
        True,
    ),
    (
        "platform-list-as-json-text",
        {"field": "platform.items", "op": "contains", "value": '"filter"'},
        {"platform_analysis": {"data": {"items": ["filter", "pump"]}}},
        True,
    ),
    (
        "platform-false-verdict-exists",
        {"field": "platform.successful", "op": "exists"},
        {"platform_analysis": {"successful": False}},
        True,
    ),
    (
        "platform-no-verdict",
        {"field": "platform.successful", "op": "==", "value": True},
        {"platform_analysis": {"summary": "No evaluation configured."}},
        False,
    ),
    (
        "platform-boolean-is-not-text",
        {"field": "platform.resolved", "op": "==", "value": "true"},
        {"platform_analysis": {"data": {"resolved": True}}},
        False,
    ),
    (
        "platform-absent-value-is-null",
        {"field": "platform.resolved", "op": "!=", "value": True},
        {"platform_analysis": {"data": {}}},
        True,
    ),
]


@pytest.mark.parametrize(
    ("cond", "conv", "expected"), [c[1:] for c in CONVERSATION_CASES], ids=[c[0] for c in CONVERSATION_CASES]
)
def test_conversation_attributes_work_even_when_extraction_failed(
    cond: dict[str, Any], conv: dict[str, Any], expected: bool
) -> None:
    for status in ("ok", "failed"):
        outcome, _ = evaluate(cond, event(status=status, **conv))
        assert outcome.passed is expected


def test_dyn_variables_can_be_tested() -> None:
    cond = {"field": "dyn_severity", "op": "in", "value": ["high", "critical"]}
    assert evaluate(cond, event(dynamic={"dyn_severity": "critical"}))[0].passed
    assert not evaluate(cond, event(dynamic={"dyn_severity": "low"}))[0].passed


END_REASON_CASES = [
    ("single-name", {"end_reason": "CUSTOMER_HANGUP"}, "CUSTOMER_HANGUP", True),
    ("list-hit", {"end_reason": ["BLIND_TRANSFER", "CCAAS_TRANSFER"]}, "CCAAS_TRANSFER", True),
    ("list-miss", {"end_reason": ["BLIND_TRANSFER", "CCAAS_TRANSFER"]}, "CUSTOMER_HANGUP", False),
    ("in", {"end_reason": {"in": ["VOICEMAIL"]}}, "VOICEMAIL", True),
    ("not-in-hit", {"end_reason": {"not_in": ["VOICEMAIL"]}}, "CUSTOMER_HANGUP", True),
    ("not-in-miss", {"end_reason": {"not_in": ["VOICEMAIL"]}}, "VOICEMAIL", False),
]


@pytest.mark.parametrize(
    ("cond", "reason", "expected"), [c[1:] for c in END_REASON_CASES], ids=[c[0] for c in END_REASON_CASES]
)
def test_end_reason(cond: dict[str, Any], reason: str, expected: bool) -> None:
    ev = event(end_reason={"canonical": reason, "raw": reason.lower()})
    outcome, results = evaluate(cond, ev)
    assert outcome.passed is expected
    assert results[0].kind == "end_reason" and results[0].actual == reason


def test_end_reason_conditions_still_work_when_extraction_failed() -> None:
    outcome, _ = evaluate({"end_reason": "CUSTOMER_HANGUP"}, event(status="failed", reason="LLM timeout"))
    assert outcome.passed


QUESTION = "Did the customer ask to be called back?"


@pytest.mark.parametrize(("answer", "expected"), [(True, True), (False, False)])
def test_ai_trigger_uses_the_extractors_answer(answer: bool, expected: bool) -> None:
    outcome, results = evaluate({"ai": QUESTION}, event(triggers={QUESTION: answer}))
    assert outcome.passed is expected
    assert results[0].kind == "ai" and results[0].expected["question"] == QUESTION


def test_ai_trigger_id_ignores_case_and_whitespace_only() -> None:
    outcome, _ = evaluate({"ai": "did the customer  ask to be called back?"}, event(triggers={QUESTION: True}))
    assert outcome.passed
    outcome, _ = evaluate({"ai": "Did the customer ask to be called back today?"}, event(triggers={QUESTION: True}))
    assert not outcome.passed and outcome.unknown


def test_ai_trigger_not_answered_is_false_with_reason() -> None:
    outcome, results = evaluate({"ai": QUESTION}, event())
    assert not outcome.passed and outcome.unknown
    assert "was not answered by the extractor" in results[0].reason


def test_ai_trigger_min_confidence() -> None:
    outcome, results = evaluate({"ai": QUESTION, "min_confidence": 0.95}, event(triggers={QUESTION: True}))
    assert not outcome.passed and "under min_confidence" in results[0].reason


@pytest.mark.parametrize(
    "cond",
    [
        {"field": "interest_level", "op": "==", "value": "high"},
        {"field": "interest_level", "op": "!=", "value": "high"},
        {"field": "interest_level", "op": "==", "value": None},
        {"ai": QUESTION},
        {"confidence": {"field": "interest_level", "op": ">=", "value": 0.1}},
        {"needs_review": "interest_level"},
        {"field": "dyn_severity", "op": "exists", "value": False},
    ],
    ids=["eq", "ne", "eq-null", "ai", "confidence", "needs-review", "dyn"],
)
def test_failed_extraction_makes_extracted_value_conditions_false_and_says_why(cond: dict[str, Any]) -> None:
    ev = event(
        status="failed",
        reason="LLM returned invalid JSON",
        fields={"interest_level": "high"},
        triggers={QUESTION: True},
    )
    outcome, results = evaluate(cond, ev)
    assert not outcome.passed and outcome.unknown
    assert "extraction failed (LLM returned invalid JSON)" in results[0].reason


def test_not_of_an_unevaluable_condition_is_still_false() -> None:
    ev = event(status="failed", reason="timeout")
    outcome, results = evaluate({"not": {"ai": "Did the customer complain?"}}, ev)
    assert not outcome.passed
    assert results[0].kind == "not" and "could not be evaluated" in results[0].reason


def test_not_inverts_a_known_result() -> None:
    assert evaluate({"not": {"field": "score", "op": ">", "value": 5}}, event(fields={"score": 1}))[0].passed
    assert not evaluate({"not": {"field": "score", "op": ">", "value": 5}}, event(fields={"score": 9}))[0].passed


BOOLEAN_CASES = [
    ("all-true", {"all": [{"always": True}, {"end_reason": "CUSTOMER_HANGUP"}]}, True),
    ("all-one-false", {"all": [{"always": True}, {"end_reason": "VOICEMAIL"}]}, False),
    ("any-one-true", {"any": [{"end_reason": "VOICEMAIL"}, {"end_reason": "CUSTOMER_HANGUP"}]}, True),
    ("any-none-true", {"any": [{"end_reason": "VOICEMAIL"}, {"end_reason": "BUSY"}]}, False),
    ("nested", {"all": [{"any": [{"end_reason": "BUSY"}, {"always": True}]}, {"not": {"end_reason": "BUSY"}}]}, True),
    ("always", {"always": True}, True),
]


@pytest.mark.parametrize(("cond", "expected"), [c[1:] for c in BOOLEAN_CASES], ids=[c[0] for c in BOOLEAN_CASES])
def test_all_any_not_always(cond: dict[str, Any], expected: bool) -> None:
    assert evaluate(cond, event())[0].passed is expected


def test_composites_evaluate_every_child_and_list_them_in_order() -> None:
    cond = {"all": [{"end_reason": "VOICEMAIL"}, {"field": "score", "op": ">", "value": 1}]}
    outcome, results = evaluate(cond, event(fields={"score": 5}))
    assert not outcome.passed
    assert [(r.path, r.kind, r.passed) for r in results] == [
        ("when", "all", False),
        ("when.all[0]", "end_reason", False),
        ("when.all[1]", "field", True),
    ]
    assert results[0].actual == "1/2"


def test_all_with_a_known_false_child_is_known_false_so_not_of_it_passes() -> None:
    cond = {"not": {"all": [{"end_reason": "VOICEMAIL"}, {"ai": QUESTION}]}}
    assert evaluate(cond, event(status="failed"))[0].passed


def test_any_with_a_true_child_passes_despite_an_unknown_one() -> None:
    cond = {"any": [{"ai": QUESTION}, {"end_reason": "CUSTOMER_HANGUP"}]}
    assert evaluate(cond, event(status="failed"))[0].passed


CONFIDENCE_CASES = [
    ("high-enough", {"confidence": {"field": "interest_level", "op": ">=", "value": 0.8}}, 0.85, True),
    ("too-low", {"confidence": {"field": "interest_level", "op": ">=", "value": 0.8}}, 0.5, False),
    ("below", {"confidence": {"field": "interest_level", "op": "<", "value": 0.5}}, 0.3, True),
]


@pytest.mark.parametrize(
    ("cond", "confidence", "expected"), [c[1:] for c in CONFIDENCE_CASES], ids=[c[0] for c in CONFIDENCE_CASES]
)
def test_confidence(cond: dict[str, Any], confidence: float, expected: bool) -> None:
    ev = event(fields={"interest_level": "high"}, confidence={"interest_level": confidence})
    outcome, results = evaluate(cond, ev)
    assert outcome.passed is expected and results[0].actual == confidence


def test_confidence_of_a_field_without_one_is_false() -> None:
    ev = event(fields={"interest_level": "high"})
    assert not evaluate({"confidence": {"field": "interest_level", "op": ">=", "value": 0.1}}, ev)[0].passed
    assert not evaluate({"confidence": {"field": "interest_level", "op": ">=", "value": 0.1}}, event())[0].passed


def test_needs_review() -> None:
    flagged = event(fields={"interest_level": "high"}, review={"interest_level"})
    assert evaluate({"needs_review": "interest_level"}, flagged)[0].passed
    assert not evaluate({"needs_review": "interest_level"}, event(fields={"interest_level": "high"}))[0].passed
    assert evaluate({"not": {"needs_review": "interest_level"}}, event(fields={"interest_level": "high"}))[0].passed
