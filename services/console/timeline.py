"""One call as a timeline: received → extracted (every value, its confidence, review flag and evidence) →
each flow with each condition → each action with its payload and every attempt → the final outcome.

Built from the store's `ConversationDetail`; evidence quotes of every extraction are located in the
transcript once (services/console/evidence.py), numbered across extractions, so a value's button and
its marks in the transcript share one number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from schemas.events import ConditionResult, DecisionTrace, FlowDecision
from services.console.evidence import highlight, locate
from services.store.views import ActionView, ConversationDetail, ExtractionView

DONE = ("delivered", "published", "skipped_duplicate")


@dataclass(frozen=True)
class ValueRow:
    kind: str  # field, dynamic, trigger
    name: str
    value: Any
    confidence: float | None
    needs_review: bool
    evidence: str | None
    ev: int | None  # the evidence number, when the quote was found in the transcript


@dataclass(frozen=True)
class ExtractionStep:
    view: ExtractionView
    values: list[ValueRow]


@dataclass(frozen=True)
class ActionStep:
    result: ConditionResult  # the trace's `action` entry: planned or skipped, and why
    action: ActionView | None  # what the store knows of it (attempts), when planned


@dataclass(frozen=True)
class FlowStep:
    decision: FlowDecision
    state: str  # fired, not fired, held, disabled, draft
    conditions: list[ConditionResult]
    actions: list[ActionStep]


@dataclass(frozen=True)
class DecisionStep:
    trace: DecisionTrace
    flows: list[FlowStep]


@dataclass
class Timeline:
    detail: ConversationDetail
    transcript: list[tuple[str, Markup]] = field(default_factory=list)
    extractions: list[ExtractionStep] = field(default_factory=list)
    decisions: list[DecisionStep] = field(default_factory=list)
    unplanned: list[ActionView] = field(default_factory=list)  # results of actions no trace we hold planned
    held: list[FlowDecision] = field(default_factory=list)  # flows the latest decision holds (extraction failed)
    outcome: tuple[str, str] = ("pending", "")  # (css class, text)


def build(detail: ConversationDetail) -> Timeline:
    timeline = Timeline(detail)
    messages = list(detail.event.messages or []) if detail.event else []
    quotes: list[str | None] = []
    pending: list[tuple[ExtractionView, list[tuple[str, str, Any, Any]]]] = []
    for view in detail.extractions:
        items: list[tuple[str, str, Any, Any]] = [
            *(("field", n, v, len(quotes) + i) for i, (n, v) in enumerate(view.fields.items())),
        ]
        quotes += [v.evidence for v in view.fields.values()]
        items += [("dynamic", n, v, len(quotes) + i) for i, (n, v) in enumerate(view.dynamic.items())]
        quotes += [v.evidence for v in view.dynamic.values()]
        items += [("trigger", t.question, t, len(quotes) + i) for i, t in enumerate(view.triggers.values())]
        quotes += [t.evidence for t in view.triggers.values()]
        pending.append((view, items))
    texts = [m.text for m in messages]
    located = locate(quotes, texts)
    found = {f.index for f in located if f.spans}
    timeline.transcript = list(zip([m.role for m in messages], highlight(texts, located), strict=True))
    for view, items in pending:
        timeline.extractions.append(ExtractionStep(view, [_row(kind, name, v, i, found) for kind, name, v, i in items]))
    by_id = {a.action_id: a for a in detail.actions}
    planned: set[str] = set()
    for trace in detail.decisions:
        timeline.decisions.append(DecisionStep(trace, [_flow(f, by_id, planned) for f in trace.flows]))
    timeline.unplanned = [a for a in detail.actions if a.action_id not in planned]
    if timeline.decisions:  # a later decision (after a re-extraction) ran what an earlier one held
        timeline.held = [f.decision for f in timeline.decisions[-1].flows if f.state == "held"]
    timeline.outcome = outcome(detail, held=len(timeline.held))
    return timeline


def _row(kind: str, name: str, value: Any, index: int, found: set[int]) -> ValueRow:
    if kind == "trigger":
        return ValueRow(
            kind, name, value.answer, value.confidence, False, value.evidence, index if index in found else None
        )
    return ValueRow(
        kind, name, value.value, value.confidence, value.needs_review, value.evidence, index if index in found else None
    )


def _flow(decision: FlowDecision, by_id: dict[str, ActionView], planned: set[str]) -> FlowStep:
    conditions = [c for c in decision.conditions if c.kind != "action"]
    actions = []
    for result in (c for c in decision.conditions if c.kind == "action"):
        action_id = str(result.actual) if result.passed and result.actual else None
        if action_id:
            planned.add(action_id)
        actions.append(ActionStep(result, by_id.get(action_id) if action_id else None))
    return FlowStep(decision, flow_state(decision), conditions, actions)


def flow_state(decision: FlowDecision) -> str:
    if getattr(decision, "held", False):
        return "held"
    if not decision.enabled:
        return "draft" if decision.reason.startswith("flow is a draft") else "disabled"
    return "fired" if decision.fired else "not fired"


def outcome(detail: ConversationDetail, held: int = 0) -> tuple[str, str]:
    """The call's final outcome in one line, and a css class for it."""
    s = detail.summary
    if s is None:
        return "warn", "only later records arrived; the conversation itself was not recorded"
    counts = s.actions
    parts = [f"{counts.delivered} of {counts.total} action(s) done"] if counts.total else ["no action planned"]
    if counts.failed:
        parts.append(f"{counts.failed} failed (a retry may follow)")
    if counts.dead_lettered:
        parts.append(f"{counts.dead_lettered} dead-lettered")
    if s.dead_letters:
        parts.append(f"{s.dead_letters} record(s) in a dead-letter topic")
    if s.extraction_status == "failed":
        parts.append("extraction failed")
    if held:
        parts.append(f"{held} flow(s) held until an extraction succeeds")
    pending = counts.total - counts.delivered - counts.failed - counts.dead_lettered
    if pending > 0:
        parts.append(f"{pending} pending")
    css = "bad" if s.has_failure else ("warn" if pending > 0 or held or s.extraction_status is None else "ok")
    return css, "; ".join(parts)
