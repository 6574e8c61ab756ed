"""Remembered condition trees give exactly what evaluating them afresh gives, for every record.

A tree's results are kept by what its leaves read from the record (services.router.conditions.Compiled
.states). A state that missed something a leaf reads would hand one conversation the trace of another,
so every condition of test_conditions' tables is run, remembered, over every record of the whole pool
(not only its own case's), twice, and compared with a fresh evaluation each time.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from schemas.agents import trigger_id
from schemas.events import ConditionResult, ConversationExtracted, TriggerAnswer
from services.common.codec import encode
from services.router.conditions import Outcome, Remembered, compile_condition
from services.router.engine import CompiledAgent
from tests.unit.router.support import NOW, config, event
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
from tests.unit.router.test_emitted import DISABLED_AND_DRAFT, EVERY_ACTION
from tests.unit.router.test_emitted import _records as _emitted_records

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


def _agent_records() -> list[ConversationExtracted]:
    long_rationale = [_with_trigger(True, 0.9, text * 300) for text in ("a", "b")]
    failed = [event(status="failed", reason=text * 500) for text in ("x", "y")]
    # records that differ in one flow's state only (here the last flow's interest_level)
    levels = [event(fields={"interest_level": level}, triggers={QUESTION: False}) for level in ("high", "low", "high")]
    return [*_emitted_records(), *long_rationale, *failed, event(status="failed", reason="LLM timeout"), *levels]


def test_an_agent_remembers_what_each_flow_decides_afresh(tmp_path: Path) -> None:
    """CompiledAgent looks every flow's remembered conditions up with one key (all their leaves' states)
    and hands out the remembered decision of a flow that did not fire: each record, in two rounds, must
    be routed as an agent compiled afresh for it routes it (disabled, draft and held flows too; a first
    delivery, a re-delivery and a held release, in turns through the same agent)."""
    loaded = config(tmp_path, EVERY_ACTION + DISABLED_AND_DRAFT)
    remembering = CompiledAgent(loaded, "(n/a)")
    for _ in range(2):
        for options in ((False, True), (False, False), (True, False)):
            for record in _agent_records():
                trace, actions = remembering.route(record, NOW, options)
                fresh_trace, fresh_actions = CompiledAgent(loaded, "(n/a)").route(record, NOW, options)
                assert encode(trace) == encode(fresh_trace)
                assert [encode(a) for a in actions] == [encode(a) for a in fresh_actions]
    assert remembering._entries  # the agent did remember


def test_an_agent_keeps_a_combination_only_once_seen_twice_and_at_most_its_bound(tmp_path: Path) -> None:
    """A real model's trigger confidences and rationales give nearly every record its own combination of
    leaf states: those are not kept (only their hashes, bounded), so an agent's memory does not grow
    by a combination per record; a combination seen twice is kept, at most REMEMBERED_PER_AGENT."""
    from services.router.engine import REMEMBERED_PER_AGENT, SEEN_PER_AGENT

    loaded = config(tmp_path, EVERY_ACTION)
    remembering = CompiledAgent(loaded, "(n/a)")
    varied = [_with_trigger(i % 2 == 0, i / 1000, f"reason {i}") for i in range(REMEMBERED_PER_AGENT + 100)]
    for record in varied:
        remembering.route(record, NOW)
    assert remembering._entries == {}
    assert len(remembering._seen) == len(varied) <= SEEN_PER_AGENT
    for record in varied:  # each seen a second time: kept, up to the bound
        trace, _ = remembering.route(record, NOW)
        assert encode(trace) == encode(CompiledAgent(loaded, "(n/a)").route(record, NOW)[0])
    assert 0 < len(remembering._entries) <= REMEMBERED_PER_AGENT
