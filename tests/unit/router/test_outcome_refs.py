"""A remembered condition outcome is written once (a ConditionOutcome on postcall.condition-outcomes.v1) and
named by ref in every trace; an outcome computed for one record stays in its trace; readers put the named
outcomes back (schemas.outcomes.resolve) and see what the trace held before."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from schemas.events import ConditionOutcome, ConditionResult, ConversationExtracted, DecisionTrace
from schemas.outcomes import UNRECORDED, outcome_ref, resolve
from schemas.topics import CONDITION_OUTCOMES
from services.router.engine import REWRITE_OUTCOMES_EVERY, CompiledAgent
from tests.unit.router.support import NOW, config, event
from tests.unit.router.test_handler import Router

CONFIG = """
    agent: support-line
    extraction:
      fields:
        - {name: notes, type: string}
    flows:
      - id: crm
        when: {end_reason: CUSTOMER_HANGUP}
        actions:
          - {type: webhook, destination: crm}
          - {type: task, title: x, enabled: false}
      - id: never
        when: {any: [{end_reason: VOICEMAIL}, {field: notes, op: contains, value: refund}]}
        actions: [{type: task, title: x}]
      - id: always
        actions: [{type: task, title: y}]
"""


def fresh_conditions(compiled: CompiledAgent, flow: int, record: ConversationExtracted) -> list[ConditionResult]:
    """The flow's `when` evaluated afresh, nothing remembered."""
    when = compiled.flows[flow].when
    assert when is not None
    out: list[ConditionResult] = []
    when.condition(record, out)
    return out


async def test_a_remembered_outcome_is_written_once_and_every_trace_names_it(tmp_path: Path) -> None:
    router = Router(tmp_path, CONFIG)
    records = [event(conversation_id=f"conv-{i}") for i in range(4)]
    outs = [await router.harness.send(record) for record in records]
    written = [o for out in outs for o in out.outputs if o.topic == CONDITION_OUTCOMES]
    # one per flow with a `when`, with the first record only; keyed by its ref
    assert [type(o.event) for o in written] == [ConditionOutcome, ConditionOutcome]
    assert all(o in outs[0].outputs for o in written)
    outcomes = {o.event.ref: o.event for o in written if isinstance(o.event, ConditionOutcome)}
    assert [o.key for o in written] == [ref.encode() for ref in outcomes]
    compiled = router.catalog.lookup("support-line", "3")
    assert compiled is not None
    for record, out in zip(records, outs, strict=True):
        trace = out.events[0]
        assert isinstance(trace, DecisionTrace)
        crm, never, always = trace.flows
        assert crm.fired and crm.conditions_ref in outcomes
        assert [c.kind for c in crm.conditions] == ["action", "action"]  # what follows the named outcome
        assert not never.fired and never.conditions_ref in outcomes and never.conditions == []
        assert always.conditions_ref is None and [c.kind for c in always.conditions] == ["action"]
        whole = resolve(trace, outcomes)
        assert whole.flows[0].conditions == [*fresh_conditions(compiled, 0, record), *crm.conditions]
        assert whole.flows[1].conditions == fresh_conditions(compiled, 1, record)
        assert whole.flows[2] == always
        assert all(f.conditions_ref is None for f in whole.flows)


async def test_an_outcome_computed_for_one_record_stays_in_its_trace(tmp_path: Path) -> None:
    """A long text is not remembered (NO_STATE): its flow's conditions are written into the trace as before."""
    router = Router(tmp_path, CONFIG)
    record = event(fields={"notes": "the customer wants a refund, " * 10})
    out = await router.harness.send(record)
    trace = out.events[0]
    assert isinstance(trace, DecisionTrace)
    never = trace.flows[1]
    assert never.fired and never.conditions_ref is None
    compiled = router.catalog.lookup("support-line", "3")
    assert compiled is not None
    assert never.conditions[:3] == fresh_conditions(compiled, 1, record)
    # crm reads the end reason only: remembered, named
    written = [o.event for o in out.outputs if o.topic == CONDITION_OUTCOMES]
    assert [o.flow_id for o in written if isinstance(o, ConditionOutcome)] == ["crm"]


def test_equal_outcomes_have_the_same_ref_on_every_replica_and_no_other(tmp_path: Path) -> None:
    loaded = config(tmp_path, CONFIG)
    one, other = CompiledAgent(loaded, "-"), CompiledAgent(loaded, "-")
    first, _ = one.route(event(), NOW)
    assert [f.conditions_ref for f in first.flows] == [f.conditions_ref for f in other.route(event(), NOW)[0].flows]
    # another outcome of the flow, another ref
    voicemail, _ = one.route(event(end_reason={"canonical": "VOICEMAIL", "raw": "vm"}), NOW)
    assert voicemail.flows[0].conditions_ref not in (None, first.flows[0].conditions_ref)
    ref = first.flows[1].conditions_ref
    named = one.written[ref or ""]
    assert ref == outcome_ref("support-line", loaded.revision, "never", named.flow_revision, named.conditions)
    assert ref != outcome_ref("support-line", "another revision", "never", named.flow_revision, named.conditions)


def test_a_ref_not_yet_recorded_is_shown_as_such_and_resolving_twice_changes_nothing(tmp_path: Path) -> None:
    compiled = CompiledAgent(config(tmp_path, CONFIG), "-")
    trace, _ = compiled.route(event(), NOW)
    unknown = resolve(trace, {})
    [shown] = unknown.flows[1].conditions
    assert (shown.kind, shown.passed, shown.actual) == (UNRECORDED, False, trace.flows[1].conditions_ref)
    assert shown.reason.startswith("not yet recorded")
    assert unknown.flows[0].conditions[0].kind == UNRECORDED and unknown.flows[0].conditions[0].passed
    whole = resolve(trace, compiled.written)
    assert resolve(whole, {}) == whole
    assert resolve(whole, compiled.written) == whole


def test_every_outcome_handed_out_is_handed_out_again_after_the_rewrite_interval(tmp_path: Path) -> None:
    """An outcome whose first record's outputs were never produced (dead-lettered, a revocation) would
    leave every trace naming it unresolved until a restart: each is written again every interval."""
    compiled = CompiledAgent(config(tmp_path, CONFIG), "-")
    first: list[ConditionOutcome] = []
    compiled.route(event(), NOW, outcomes=first)
    assert len(first) == 2  # then lost with that record's outputs
    later: list[ConditionOutcome] = []
    compiled.route(event(), NOW + REWRITE_OUTCOMES_EVERY - timedelta(seconds=1), outcomes=later)
    assert later == []
    voicemail: list[ConditionOutcome] = []
    compiled.route(
        event(end_reason={"canonical": "VOICEMAIL", "raw": "vm"}), NOW + REWRITE_OUTCOMES_EVERY, outcomes=voicemail
    )
    # the new outcomes of this record, then every other one handed out so far, each once
    assert {o.ref for o in voicemail} == set(compiled.written) and len(voicemail) == len(compiled.written) == 4
    again: list[ConditionOutcome] = []
    compiled.route(event(), NOW + REWRITE_OUTCOMES_EVERY + timedelta(minutes=1), outcomes=again)
    assert again == []


def test_a_clock_set_back_does_not_put_off_the_rewrite(tmp_path: Path) -> None:
    """The interval is read from the host's clock: set back an hour (a corrected clock, a VM restored),
    the rewrite due "10 minutes after the last one" would otherwise wait for the clock to catch up first."""
    compiled = CompiledAgent(config(tmp_path, CONFIG), "-")
    first: list[ConditionOutcome] = []
    compiled.route(event(), NOW, outcomes=first)
    assert len(first) == 2  # then lost with that record's outputs
    back = NOW - timedelta(hours=1)
    set_back: list[ConditionOutcome] = []
    compiled.route(event(), back, outcomes=set_back)  # earlier than the last rewrite: how long since is unknown
    assert {o.ref for o in set_back} == set(compiled.written)
    within: list[ConditionOutcome] = []
    compiled.route(event(), back + REWRITE_OUTCOMES_EVERY - timedelta(seconds=1), outcomes=within)
    assert within == []
    due: list[ConditionOutcome] = []
    compiled.route(event(), back + REWRITE_OUTCOMES_EVERY, outcomes=due)
    assert {o.ref for o in due} == set(compiled.written) and len(due) == 2
