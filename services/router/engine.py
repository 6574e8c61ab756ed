"""One agent configuration compiled for routing, and the decision it makes for one conversation.

Compiled once per configuration revision (templates parsed, patterns compiled, evaluators built), so
a record costs only lookups and string joins. Every flow runs; a disabled flow, a draft flow (never on
live traffic: a dry run removes the mark first, `Catalog.trial()`), a flow whose conditions fail, and
every action (planned or skipped, and why) are all in the DecisionTrace.
Actions appear in the trace as entries of kind `action` at path `actions[i]` beside the conditions.

A flow that uses the extraction (schemas.flow_revision.flow_uses) is held when extraction failed: nothing
is sent, the trace says `held` and why; a later successful extraction of the conversation runs it (its
actions keep their ids, so what already ran is skipped by the dispatcher's ledger), and an operator can
release it as it is (`postcall held release`: the RUN_HELD header). `on_extraction_failure: run` opts out.
A flow whose `when` reads no extraction (an end reason) and is not met is not met, not held: no extraction
could make it fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel

from schemas.agent_config import AgentConfig, Flow, RecipientRoute
from schemas.events import (
    END_YEAR,
    FIRST_YEAR,
    ActionBase,
    ConditionResult,
    ConversationExtracted,
    DecisionTrace,
    FlowDecision,
    PlannedAction,
)
from schemas.flow_revision import flow_revision, flow_uses
from services.common import codec
from services.common.codec import pydantic_json, written_as_pydantic
from services.router.actions import (
    CONTENT_LIMIT,
    CompiledAction,
    built,
    checked_clock,
    time_json,
    uuid5,
    with_content,
)
from services.router.conditions import NO_STATE, Remembered, compile_condition
from services.router.metrics import FLOW_OUTCOME_NAMES
from services.router.variables import ConversationValues

_COMPOSITE = frozenset({"all", "any"})
# combinations of every flow's condition states kept per agent (then it starts again), each kept only once
# it has been seen twice: with a real model's trigger confidences and rationales nearly every record has
# its own combination, and keeping each would cost ~8 KB per record and agent for nothing
REMEMBERED_PER_AGENT = 256
SEEN_PER_AGENT = 4096  # hashes of combinations seen once (ints: ~0.2 MB at most per agent)
# how a record asks to be routed: a deliberate re-delivery, or held flows released as they are
RouteOptions = tuple[bool, bool]  # (redeliver, run_held)
#: what every action of a record shares: (conversation_id, agent_id, config revision, now, source event id)
Shared = tuple[str, str, str, datetime, str]
#: where route() counts outcomes (metrics.FLOWS.values, metrics.ACTIONS.values): flows by (outcome,),
#: actions by (type, "planned" or "skipped")
Counts = tuple[dict[tuple[str, ...], int], dict[tuple[str, ...], int]]
_FIRED, _NOT_FIRED, _DISABLED, _HELD = ((name,) for name in FLOW_OUTCOME_NAMES)  # the counters' keys
DRAFT_REASON = (
    "flow is a draft: it never runs on live traffic (try it with `postcall try`; publish it by removing `draft`)"
)

M = TypeVar("M", bound=BaseModel)
_TRUSTED = (ConditionResult, PlannedAction, FlowDecision, DecisionTrace)
# what `_built` leaves out of model_construct must not matter for these models
assert not any(
    m.__pydantic_post_init__ or m.__private_attributes__ or m.__new__ is not object.__new__ for m in _TRUSTED
)


# A trace entry from values this module typed itself (booleans, its own text, ids it made, entries already
# built, the validated record's ids), with every field given (actions.built). Actions are built by
# actions.make; tests/unit/router/test_emitted.py reads every emitted record back through its model and
# its JSON Schema.
_built = built


class CompiledFlow:
    def __init__(self, flow: Flow, agent: AgentConfig, routes: dict[str, RecipientRoute], tz: ZoneInfo) -> None:
        fields = {f.name: f for f in agent.extraction.fields}
        self.id, self.enabled, self.draft = flow.id, flow.enabled, flow.draft
        self.revision = flow_revision(flow, agent)
        uses = flow_uses(flow, agent)
        # why the flow would be held on a failed extraction; empty: it never is
        self.holds_for = uses.extraction if flow.on_extraction_failure == "hold" else ()
        # a `when` that reads no extraction decides as always: a flow it rules out is not met, not held
        self.when_decides = bool(
            self.holds_for and flow.when and not flow_uses(flow.model_copy(update={"actions": []}), agent).extraction
        )
        self.when = Remembered(compile_condition(flow.when, "when", fields, tz)) if flow.when else None
        self.actions = [CompiledAction(i, a, fields, routes, tz) for i, a in enumerate(flow.actions)]
        self._id_tails = [f"{self.id}/{self.revision}/{a.index}" for a in self.actions]  # action_id's name ends so
        # what never depends on the record, decided once (decisions are frozen: traces share them)
        self.disabled = FlowDecision(flow_id=self.id, enabled=False, fired=False, reason="flow is disabled")
        self.drafted = FlowDecision(
            flow_id=self.id, enabled=False, fired=False, reason=DRAFT_REASON, flow_revision=self.revision
        )

    def decide(
        self,
        event: ConversationExtracted,
        values: ConversationValues,
        shared: Shared,
        options: RouteOptions = (False, False),
        entry: list[Any] | None = None,
        counts: dict[tuple[str, ...], int] | None = None,
    ) -> tuple[FlowDecision, list[ActionBase]]:
        """`shared`: what every action of the record shares (CompiledAgent.route); `entry`: what
        `self.when.entry(event)` gives, when the caller looked it up already; `counts`: where each action's
        outcome is counted (by its type and "planned" or "skipped")."""
        if not self.enabled:
            return self.disabled, []
        if self.draft:
            return self.drafted, []
        redeliver, run_held = options
        if self.holds_for and not values.ok and not run_held:
            if not self.when_decides:
                return self._held(event), []
            assert self.when is not None
            if entry is None:
                entry = self.when.entry(event)
            if entry[0].passed:
                return self._held(event), []
        if self.when is None:
            results: list[ConditionResult] = []
            reason = "no `when`: runs for every conversation"
        else:
            # the conditions' results, and the decision when they fail, are remembered by what they read
            if entry is None:
                entry = self.when.entry(event)
            if not entry[0].passed:
                if entry[2] is None:
                    entry[2] = FlowDecision(
                        flow_id=self.id,
                        enabled=True,
                        fired=False,
                        reason=_why_not(entry[1]),
                        conditions=entry[1],
                        flow_revision=self.revision,
                    )
                return entry[2], []
            results, reason = list(entry[1]), "conditions passed"
        return self._fire(event, values, shared, redeliver, results, reason, counts)

    def _fire(
        self,
        event: ConversationExtracted,
        values: ConversationValues,
        shared: Shared,
        redeliver: bool,
        results: list[ConditionResult],
        reason: str,
        counts: dict[tuple[str, ...], int] | None,
    ) -> tuple[FlowDecision, list[ActionBase]]:
        """The decision of a flow whose conditions passed (`results`), and its actions."""
        built: list[ActionBase] = []
        planned: list[PlannedAction] = []
        for action in self.actions:
            model = self._run(action, event, values, shared, results, redeliver)
            if model is None:
                if counts is not None:
                    counts[action.skipped] += 1
                continue
            built.append(model)
            fields = model.__dict__
            planned.append(
                _built(
                    PlannedAction,
                    {
                        "action_id": fields["action_id"],
                        "type": fields["type"],  # every action model's `type` is text
                        "topic": action.topic,
                        "destination": fields["destination"],
                    },
                )
            )
            if counts is not None:
                counts[action.planned] += 1
        if self.holds_for and not values.ok:
            reason += "; extraction failed: released as it is by an operator"
        skipped = len(self.actions) - len(built)
        reason += f"; {len(built)} action(s) planned" + (f", {skipped} skipped" if skipped else "")
        decision = _built(
            FlowDecision,
            {
                "flow_id": self.id,
                "enabled": True,
                "fired": True,
                "held": False,
                "flow_revision": self.revision,
                "reason": reason,
                "conditions": results,
                "actions": planned,
            },
        )
        return decision, built

    def _held(self, event: ConversationExtracted) -> FlowDecision:
        why = event.extraction.reason or "no reason given"
        reason = (
            f"held: extraction failed ({why[:200]}) and this flow uses it ({'; '.join(self.holds_for[:4])}); "
            "nothing sent. It runs once a later extraction succeeds (postcall reextract), or as it is with "
            "postcall held release"
        )
        return FlowDecision(
            flow_id=self.id, enabled=True, fired=False, held=True, reason=reason, flow_revision=self.revision
        )

    def _run(
        self,
        action: CompiledAction,
        event: ConversationExtracted,
        values: ConversationValues,
        shared: Shared,
        results: list[ConditionResult],
        redeliver: bool,
    ) -> ActionBase | None:
        """`shared`: (conversation_id, agent_id, config revision, now, source event id). The action is
        completed for a re-delivery (with_content), and skipped when its record is over CONTENT_LIMIT."""
        model: ActionBase | None = None
        if not action.enabled:
            note = "skipped: action is disabled"
        elif action.when is not None and not action.when(event, results).passed:
            note = f"skipped: its `when` did not pass ({_why_not(results)})"
        else:
            conversation_id, agent_id, revision, now, source_event_id = shared
            common = {
                # actions.action_id(conversation_id, agent_id, flow id, flow revision, index)
                "action_id": uuid5(f"{conversation_id}/{agent_id}/{self._id_tails[action.index]}"),
                "conversation_id": conversation_id,
                "agent_id": agent_id,
                "flow_id": self.id,
                "action_index": action.index,
                "config_revision": revision,
                "requested_at": now,
                "source_event_id": source_event_id,
                "flow_revision": self.revision,
                "content_digest": None,  # with_content sets it on a re-delivery
                "supersedes": None,
                "destination": action.destination,
            }
            model, note = action.build(event, values, common)
        actual = None
        if model is not None:
            size = with_content(model, redeliver)
            # the id it goes out under: on a re-delivery the one that supersedes the action's own, as the
            # flow's PlannedAction says (explain, the console and `postcall try` find its record and outcome by it)
            actual = model.__dict__["action_id"]
            if size > CONTENT_LIMIT:
                model, actual = None, None
                note = (
                    f"skipped: the {action.type} would be {size:,} bytes, over the {CONTENT_LIMIT:,} an action may "
                    "hold (a long value, such as the transcript, rendered into it)"
                )
        results.append(
            _built(
                ConditionResult,
                {
                    "path": action.path,
                    "kind": "action",
                    "passed": model is not None,
                    "expected": action.type,
                    "actual": actual,
                    "reason": note or "planned",
                },
            )
        )
        return model


def _why_not(results: Sequence[ConditionResult]) -> str:
    failed = next((r for r in results if not r.passed and r.kind not in _COMPOSITE and r.kind != "action"), None)
    return f"not met: {failed.path}: {failed.reason}" if failed else "not met"


class CompiledAgent:
    def __init__(self, config: AgentConfig, default_fallback: str) -> None:
        self.config, self.revision = config, config.revision
        self.tz = ZoneInfo(config.timezone)
        self.fallback = config.fallback_text if config.fallback_text is not None else default_fallback
        routes = {r.id: r for r in config.recipient_routes}
        self.flows = [CompiledFlow(f, config, routes, self.tz) for f in config.flows]
        # the flows whose `when` is read on live traffic; one key made of all their leaves' states finds
        # every flow's remembered entry at once (Remembered.entry per tree when it is not remembered)
        self._live = [f.enabled and not f.draft and f.when is not None for f in self.flows]
        self._whens = [f.when for f, live in zip(self.flows, self._live, strict=True) if live and f.when]
        # what they read, each thing once (several leaves read the end reason, say)
        reads = {
            read: state
            for when in self._whens
            for state, read in zip(when.condition.states, when.condition.reads, strict=True)
        }
        self._states = tuple(reads.values())
        self._entries: dict[tuple[Any, ...], list[list[Any]]] = {}
        self._seen: set[int] = set()

    def _conditions(self, event: ConversationExtracted) -> list[list[Any]]:
        """Each live flow's `when` entry (Remembered.entry), in flow order: with one key for them all
        when every leaf's state can be remembered. The key holds each tree's own key in turn, so an
        equal key finds the entries each tree would find (the same lists; trees fill their slot)."""
        states: list[Any] = []  # a loop: a comprehension is a function call of its own
        for state in self._states:
            states.append(state(event))
        key = tuple(states)
        found = self._entries.get(key)
        if found is None:
            found = [when.entry(event) for when in self._whens]
            if NO_STATE not in key:  # identity test first: NO_STATE equals nothing else
                seen = hash(key)  # a colliding hash only keeps an entry early; the lookup is by the key
                if seen not in self._seen:
                    if len(self._seen) >= SEEN_PER_AGENT:
                        self._seen.clear()
                    self._seen.add(seen)
                else:
                    if len(self._entries) >= REMEMBERED_PER_AGENT:
                        self._entries.clear()
                    self._entries[key] = found
        return found

    def route(
        self,
        event: ConversationExtracted,
        now: datetime,
        options: RouteOptions = (False, False),
        counts: Counts | None = None,
    ) -> tuple[DecisionTrace, list[ActionBase]]:
        """options: (redeliver, run_held), from the record's REDELIVER and RUN_HELD headers; `counts`:
        where each flow's outcome and each fired flow's actions are counted (the handler's metrics)."""
        if now.utcoffset() is None or not FIRST_YEAR <= now.year < END_YEAR:  # what a Timestamp accepts
            raise ValueError(f"the clock's time {now!r} is naive or out of range")
        checked_clock(now)
        values = ConversationValues(event, self.tz, self.fallback)
        conv = values.conversation.__dict__
        agent = conv["agent"].__dict__
        # what every action of the record shares, read once: a pydantic model's attribute costs a lookup
        # through BaseModel's __getattr__ hook each time it is read
        shared = (conv["conversation_id"], agent["id"], self.revision, now, event.event_id)
        decisions: list[FlowDecision] = []
        actions: list[ActionBase] = []
        entries = iter(self._conditions(event))
        holding = not values.ok and not options[1]  # flows that use the extraction are held
        action_counts = counts[1] if counts is not None else None
        remembered = 0
        for flow, live in zip(self.flows, self._live, strict=True):
            entry = next(entries) if live else None
            if entry is not None and entry[2] is not None and not (holding and flow.holds_for):
                decisions.append(entry[2])  # did not fire: its decision is remembered with its conditions
                remembered += 1
                continue
            decision, built = flow.decide(event, values, shared, options, entry, action_counts)
            decisions.append(decision)
            if built:
                actions.extend(built)
            if counts is not None:
                fields = decision.__dict__
                outcome = (
                    _FIRED
                    if fields["fired"]
                    else _DISABLED
                    if not fields["enabled"]
                    else _HELD
                    if fields["held"]
                    else _NOT_FIRED
                )
                counts[0][outcome] += 1
        if remembered and counts is not None:
            counts[0][_NOT_FIRED] += remembered
        trace = _built(
            DecisionTrace,
            {
                "event_id": shared[4],
                "conversation_id": shared[0],
                "agent_id": shared[1],
                "agent_version": agent["version"],
                "config_revision": self.revision,
                "extraction_status": values.extraction.status,
                "decided_at": now,
                "flows": decisions,
            },
        )
        return trace, actions


# ── encoding a trace ───────────────────────────────────────────────────────────────────────────────

_FLOW_JSON = FlowDecision.__pydantic_serializer__.to_json
_SHARED_FLOWS = 4096  # JSON of flows that did not fire, kept by object (bounded; cleared when full)
_shared_flow_json: dict[int, tuple[FlowDecision, orjson.Fragment]] = {}


def encode_trace(trace: DecisionTrace) -> bytes:
    """The trace's JSON, the same bytes as pydantic's `to_json(trace)`, written by orjson from the models'
    fields (codec.WRITTEN_AS_PYDANTIC_DOES: pydantic serialised each nested model and inferred the type
    of each condition's `Any` values; anything orjson would write its own way makes the trace pydantic's
    JSON). A flow that did not fire is the same frozen object from record to record (built once per
    outcome: `Remembered`, disabled, draft), so its JSON is made once and kept by identity (the entry
    holds the object, so its id is not reused while the entry lives)."""
    fields = trace.__dict__.copy()
    decided_at = time_json(fields["decided_at"])
    if decided_at is None:
        return pydantic_json(trace)
    fields["decided_at"] = decided_at
    flows: list[Any] = []
    for flow in fields["flows"]:
        decision = flow.__dict__
        if decision["fired"]:  # its conditions and planned actions as their fields
            plain = decision.copy()
            plain["conditions"] = [c.__dict__ for c in plain["conditions"]]
            plain["actions"] = [a.__dict__ for a in plain["actions"]]
            flows.append(plain)
            continue
        kept = _shared_flow_json.get(id(flow))
        if kept is None or kept[0] is not flow:
            if len(_shared_flow_json) >= _SHARED_FLOWS:
                _shared_flow_json.clear()
            kept = _shared_flow_json[id(flow)] = (flow, orjson.Fragment(_FLOW_JSON(flow)))
        flows.append(kept[1])
    fields["flows"] = flows
    return written_as_pydantic(fields, trace)


codec.register_encoder(DecisionTrace, encode_trace)
