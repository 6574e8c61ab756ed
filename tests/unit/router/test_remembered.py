"""Remembered condition trees give exactly what evaluating them afresh gives, for every record.

A tree's results are kept by what its leaves read from the record (services.router.conditions.Compiled
.states). A state that missed something a leaf reads would hand one conversation the trace of another,
so every condition of test_conditions' tables is run, remembered, over every record of the whole pool
(not only its own case's), twice, and compared with a fresh evaluation each time.
"""

from __future__ import annotations

import itertools
from typing import Any

from schemas.agents import trigger_id
from schemas.events import ConditionResult, ConversationExtracted, TriggerAnswer
from services.router.conditions import Outcome, Remembered, compile_condition
from tests.unit.router.support import event
from tests.unit.router.test_conditions import (
    BOOLEAN_CASES,
    CONDITION,
    CONFIDENCE_CASES,
    CONVERSATION_CASES,
    END_REASON_CASES,
    FIELD_CASES,
    FIELDS,
    QUESTION,
)

EXTRA_CONDITIONS: list[dict[str, Any]] = [
    {"ai": QUESTION},
    {"ai": QUESTION, "min_confidence": 0.8},
    {"not": {"ai": QUESTION}},
    {"all": [{"ai": QUESTION}, {"not": {"end_reason": ["BLIND_TRANSFER"]}}]},
    {"any": [{"end_reason": "CCAAS_TRANSFER"}, {"field": "interest_level", "op": "==", "value": "high"}]},
    {"needs_review": "interest_level"},
    {"field": "score", "op": ">=", "value": 0},
    {"field": "score", "op": "==", "value": 1},
    {"field": "follow_up_required", "op": "==", "value": True},
    {"field": "platform.score", "op": ">", "value": 0},
]


def _with_trigger(answer: bool, confidence: float | None, rationale: str) -> ConversationExtracted:
    ev = event()
    found = TriggerAnswer(question=QUESTION, answer=answer, confidence=confidence, rationale=rationale)
    extraction = ev.extraction.model_copy(update={"triggers": {trigger_id(QUESTION): found}})
    return ev.model_copy(update={"extraction": extraction})


def _pool() -> list[ConversationExtracted]:
    """Every case's record, and records that differ only where a careless key would not look."""
    records = [event(fields=fields) for _, _, fields, _ in FIELD_CASES]
    records += [event(status=status, **conv) for _, _, conv, _ in CONVERSATION_CASES for status in ("ok", "failed")]
    records += [event(end_reason={"canonical": reason, "raw": reason.lower()}) for _, _, reason, _ in END_REASON_CASES]
    records += [
        event(fields={"interest_level": "high"}, confidence={"interest_level": c}) for _, _, c, _ in CONFIDENCE_CASES
    ]
    records += [
        event(fields={"interest_level": "high"}, review={"interest_level"}),
        # values equal in Python that render differently: True/1/1.0, 0.0/-0.0
        *(event(fields={"score": v, "follow_up_required": v}) for v in (True, 1, 1.0, 0.0, -0.0, "1", None)),
        event(platform_analysis={"data": {"score": "8"}}),
        event(platform_analysis={"data": {"score": 8}}),
        # failed extractions that differ only in their reason; an unanswered trigger under two revisions
        event(status="failed", reason="LLM timeout", fields={"interest_level": "high"}),
        event(status="failed", reason="LLM returned invalid JSON", fields={"interest_level": "high"}),
        # long texts are not remembered: two that differ must not share an entry
        event(status="failed", reason="x" * 500),
        event(status="failed", reason="y" * 500),
        *(_with_trigger(True, 0.9, text * 200) for text in ("a", "b")),
        event(triggers={}),
        event(triggers={}).model_copy(
            update={"extraction": event().extraction.model_copy(update={"config_revision": "rev-other"})}
        ),
        *(
            _with_trigger(answer, confidence, rationale)
            for answer, confidence, rationale in itertools.product(
                (True, False), (None, 0.5, 0.9), ("", "they asked twice")
            )
        ),
    ]
    return records


def _fresh(cond: dict[str, Any], ev: ConversationExtracted) -> tuple[Outcome, list[ConditionResult]]:
    results: list[ConditionResult] = []
    outcome = compile_condition(CONDITION.validate_python(cond), "when", FIELDS)(ev, results)
    return outcome, results


def test_a_remembered_tree_gives_every_record_what_a_fresh_evaluation_gives() -> None:
    conditions = [c[1] for c in FIELD_CASES + CONVERSATION_CASES + END_REASON_CASES + CONFIDENCE_CASES]
    conditions += [c[1] for c in BOOLEAN_CASES] + EXTRA_CONDITIONS
    pool = _pool()
    remembered_some = 0
    for cond in conditions:
        tree = Remembered(compile_condition(CONDITION.validate_python(cond), "when", FIELDS))
        for _ in range(2):  # the second round is answered from what the first one kept
            for ev in pool:
                results: list[ConditionResult] = []
                outcome = tree(ev, results)
                expected_outcome, expected = _fresh(cond, ev)
                assert outcome == expected_outcome, (cond, ev.extraction)
                assert [r.model_dump() for r in results] == [r.model_dump() for r in expected], (cond, ev.extraction)
                assert [type(r.actual) for r in results] == [type(r.actual) for r in expected]
        remembered_some += len(tree._cache) > 0
    assert remembered_some == len(conditions)  # every kind of tree did remember
