"""What one flow uses, and its revision: the part of an agent's configuration that decides what the flow
sends, and nothing else.

    action_id = uuid5(ACTION_NAMESPACE, "<conversation_id>/<agent>/<flow id>/<flow revision>/<action index>")
    flow revision = sha256 over (the flow's definition as loaded, library template expanded, without
                                 its description, nor an action option added later and not set
                                 (schemas.content.ADDED_LATER);
                                 the name, type and values of every extracted field it names;
                                 every recipient route it names; the agent's timezone and fallback text)

So editing another flow, adding a field no flow names, or rewording a field's description keeps every
id: re-processing a conversation repeats nothing. Editing this flow, its library template, or a field
or route it uses gives its actions new ids (and only its). A webhook without `body` sends every field,
so it names every field. docs/agent-config.md and docs/downstream.md describe the formula.

`uses_extraction` says why a flow depends on extraction (field, confidence and review conditions, `ai`
triggers, templates naming fields, `dyn_*` or the summary, a default webhook body, a schedule_call's
fields, dynamic email recipients): such a flow is held, not sent, when extraction failed, unless it
says `on_extraction_failure: run`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from schemas.agent_checks import action_templates, walk_conditions
from schemas.agent_config import (
    AgentFile,
    AiCondition,
    ConfidenceCondition,
    EmailAction,
    FieldCondition,
    Flow,
    ReviewCondition,
    ScheduleCallAction,
    WebhookAction,
    template_names,
)
from schemas.content import without_unset_later

REVISION_FORMAT = "flow-revision/1"  # changing how a revision is computed changes every id: bump it then
SUMMARY = "conversation_summary"


@dataclass(frozen=True)
class FlowUses:
    fields: frozenset[str]  # extracted fields the flow names
    routes: frozenset[str]  # recipient routes the flow names
    extraction: tuple[str, ...]  # why the flow depends on extraction (empty: it does not)


def flow_uses(flow: Flow, config: AgentFile) -> FlowUses:
    known = {f.name for f in config.extraction.fields}
    fields: set[str] = set()
    reasons: list[str] = []
    for kind, name in _references(flow, known):
        if name in known:
            fields.add(name)
        note = _why(kind, name, known)
        if note and note not in reasons:
            reasons.append(note)
    routes = {a.recipients for a in flow.actions if isinstance(a, EmailAction) and a.recipients}
    reasons += [f"dynamic recipients (route {r!r})" for r in sorted(routes)]
    return FlowUses(frozenset(fields), frozenset(routes), tuple(reasons))


def _references(flow: Flow, known: set[str]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every value the flow reads."""
    conditions = [*walk_conditions(flow.when), *(c for a in flow.actions for c in walk_conditions(a.when))]
    for cond in conditions:
        if isinstance(cond, FieldCondition):
            yield "condition", cond.field.removeprefix("fields.")
        elif isinstance(cond, AiCondition):
            yield "ai", cond.ai
        elif isinstance(cond, ConfidenceCondition):
            yield "confidence", cond.confidence.field
        elif isinstance(cond, ReviewCondition):
            yield "review", cond.needs_review
    for action in flow.actions:
        for _, text in action_templates(action):
            for name in template_names(text):
                yield "template", name.removeprefix("fields.")
        if isinstance(action, WebhookAction) and action.body is None:
            yield "default body", SUMMARY
            yield from (("default body", name) for name in sorted(known))
        if isinstance(action, ScheduleCallAction):
            yield from (("schedule", f) for f in (action.use_field, action.to_field) if f)


def _why(kind: str, name: str, known: set[str]) -> str | None:
    if kind == "ai":
        return f"ai trigger {name!r}"
    if kind in ("confidence", "review"):
        return f"{kind} condition on {name}"
    if kind == "default body":
        return "a webhook without `body` (it sends the extraction)"
    extracted = name in known or name.startswith("dyn_") or name == SUMMARY
    if not extracted:
        return None
    return {"condition": f"field condition on {name}", "template": f"template uses {{{{{name}}}}}"}.get(
        kind, f"schedule_call uses field {name}"
    )


def flow_revision(flow: Flow, config: AgentFile) -> str:
    """16 hex characters of sha256 over exactly what the flow uses (module docstring)."""
    uses = flow_uses(flow, config)
    dumped = flow.model_dump(mode="json", by_alias=True, exclude={"description"})
    for action in dumped["actions"]:
        without_unset_later(action)
    used = {
        "format": REVISION_FORMAT,
        "flow": dumped,
        "fields": [
            {"name": f.name, "type": f.type, "values": f.values}
            for f in config.extraction.fields
            if f.name in uses.fields
        ],
        "routes": [r.model_dump(mode="json") for r in config.recipient_routes if r.id in uses.routes],
        "timezone": config.timezone,
        "fallback_text": config.fallback_text,
    }
    return hashlib.sha256(orjson.dumps(used, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
