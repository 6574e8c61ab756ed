"""A decision trace's condition outcomes by reference: how a ref is made, and how a trace that holds refs
is read back whole. Every reader of traces (the store's queries, `postcall explain`, `postcall try`, the
console) resolves through `resolve`, so what an operator sees does not depend on how the trace was written.

The router remembers a flow's `when` outcome (the same objects record after record) and writes it once to
postcall.condition-outcomes.v1, a ConditionOutcome keyed by its ref; the trace then names it
(`FlowDecision.conditions_ref`) and keeps inline only what follows it (a fired flow's action entries).
`resolve` puts the outcome's conditions back in front. A ref whose outcome is not known (not yet read:
the topics are read independently; or lost) becomes one condition of kind UNRECORDED saying so: never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import orjson
from pydantic import TypeAdapter

from schemas.events import ConditionOutcome, ConditionResult, DecisionTrace, FlowDecision

#: the kind of the condition that stands for an outcome not (yet) recorded
UNRECORDED = "unrecorded"
REF_HEX = 32  # 128 bits of sha256: equal outcomes share a ref, distinct ones never meet in practice
_CONDITIONS_JSON = TypeAdapter(list[ConditionResult]).dump_json


def outcome_ref(
    agent_id: str, config_revision: str, flow_id: str, flow_revision: str | None, conditions: Sequence[ConditionResult]
) -> str:
    """Content-derived: the same outcome of the same flow has the same ref on every replica and after a restart."""
    head = orjson.dumps([agent_id, config_revision, flow_id, flow_revision])
    return hashlib.sha256(head + b"\n" + _CONDITIONS_JSON(list(conditions))).hexdigest()[:REF_HEX]


def condition_outcome(
    agent_id: str, config_revision: str, flow_id: str, flow_revision: str | None, conditions: Sequence[ConditionResult]
) -> ConditionOutcome:
    ref = outcome_ref(agent_id, config_revision, flow_id, flow_revision, conditions)
    return ConditionOutcome(
        ref=ref,
        agent_id=agent_id,
        config_revision=config_revision,
        flow_id=flow_id,
        flow_revision=flow_revision,
        conditions=list(conditions),
    )


def refs_of(traces: Iterable[DecisionTrace]) -> set[str]:
    """Every ref the traces name (what a reader has to look up)."""
    return {f.conditions_ref for trace in traces for f in trace.flows if f.conditions_ref is not None}


def resolve(trace: DecisionTrace, outcomes: Mapping[str, ConditionOutcome]) -> DecisionTrace:
    """The trace as if every outcome were written into it: each referenced outcome's conditions before the
    flow's own, `conditions_ref` cleared (so resolving twice changes nothing); an unknown ref shown as such."""
    if not any(f.conditions_ref is not None for f in trace.flows):
        return trace
    return trace.model_copy(update={"flows": [_resolved(f, outcomes) for f in trace.flows]})


def _resolved(flow: FlowDecision, outcomes: Mapping[str, ConditionOutcome]) -> FlowDecision:
    ref = flow.conditions_ref
    if ref is None:
        return flow
    found = outcomes.get(ref)
    head = list(found.conditions) if found is not None else [unrecorded(ref, flow.fired)]
    return flow.model_copy(update={"conditions": [*head, *flow.conditions], "conditions_ref": None})


def unrecorded(ref: str, passed: bool) -> ConditionResult:
    """What stands for an outcome a reader does not have: the flow's `when`, with its ref."""
    return ConditionResult(
        path="when",
        kind=UNRECORDED,
        passed=passed,
        expected=None,
        actual=ref,
        reason=f"not yet recorded: the conditions' outcome {ref} has not been read from postcall.condition-outcomes.v1",
    )
