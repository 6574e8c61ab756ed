"""The handler: outputs and their topics and keys; unknown and broken agents; live reload in the holder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from schemas.events import DecisionTrace, FlowDecision, WebhookRequested
from schemas.routes import ROUTER
from schemas.topics import DECISIONS, action_topic
from services.common.api import Context, PermanentError, RetryableError, Service
from services.common.harness import Harness
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from tests.unit.router.support import NOW, event, write
from tests.unit.router.test_emitted import DISABLED_AND_DRAFT, EVERY_ACTION, _records

CONFIG = """
    agent: support-line
    flows:
      - id: crm
        when: {end_reason: CUSTOMER_HANGUP}
        actions:
          - {type: webhook, destination: crm, body: {id: "{{conversation_uuid}}"}}
          - {type: schedule_call, fallback_delay_minutes: 10}
      - id: never
        when: {end_reason: VOICEMAIL}
        actions: [{type: task, title: x}]
"""


class Router:
    """The router's handler on the in-memory runtime, and its catalog to edit."""

    def __init__(self, tmp_path: Path, text: str = CONFIG, *, burst: bool = True) -> None:
        write(tmp_path, "support-line.yaml", text)
        self.catalog = CatalogHolder(tmp_path, "(n/a)")
        self.harness = Harness(Service(ROUTER, RouterHandler(self.catalog, clock=lambda: NOW).handle), burst=burst)


async def test_emits_one_decision_trace_and_one_command_per_action_keyed_by_conversation(tmp_path: Path) -> None:
    out = await Router(tmp_path).harness.send(event())
    assert out.status == "ok"
    assert [(o.topic, o.key) for o in out.outputs] == [
        (DECISIONS, b"conv-1"),
        (action_topic("webhook"), b"conv-1"),
        (action_topic("schedule_call"), b"conv-1"),
    ]
    trace, webhook, _ = out.events
    assert isinstance(trace, DecisionTrace) and [f.fired for f in trace.flows] == [True, False]
    assert [p.action_id for p in trace.flows[0].actions] == [e.action_id for e in out.events[1:]]  # type: ignore[attr-defined]
    assert isinstance(webhook, WebhookRequested)
    assert [o.headers["ce_type"] for o in out.outputs][:2] == [
        "dev.postcall.conversation.routed.v1",
        "dev.postcall.action.webhook.requested.v1",
    ]


async def test_agent_without_configuration_is_dead_lettered_at_once(tmp_path: Path) -> None:
    out = await Router(tmp_path).harness.send(event(agent={"id": "sales-line", "version": "7"}))
    assert (out.status, out.attempts, out.outputs, out.retries) == ("dead_lettered", 1, [], [])
    assert isinstance(out.error, PermanentError)
    assert "no configuration for agent 'sales-line' version '7'" in str(out.error)
    [letter] = out.dead_letters
    assert letter.headers["x-dlq-failure-category"] == "permanent"


async def test_agent_whose_only_file_is_invalid_is_retried_not_dead_lettered_at_once(tmp_path: Path) -> None:
    out = await Router(tmp_path, CONFIG.replace("webhook", "webhok")).harness.send(event())
    assert isinstance(out.error, RetryableError) and not isinstance(out.error, PermanentError)
    assert "is invalid and was never loaded" in str(out.error)
    assert (len(out.retries), out.attempts, out.status) == (ROUTER.tiers, ROUTER.tiers + 1, "dead_lettered")
    assert out.dead_letters[0].headers["x-dlq-failure-category"] == "retryable-exhausted"


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_reload_picks_up_a_change_and_outputs_carry_the_new_revision(tmp_path: Path) -> None:
    r = Router(tmp_path)
    [before] = (await r.harness.send(event())).on(DECISIONS)
    assert not r.catalog.reload_if_changed()  # nothing changed
    path = write(tmp_path, "support-line.yaml", CONFIG.replace("VOICEMAIL", "CUSTOMER_HANGUP"))
    _touch_later(path)
    assert r.catalog.reload_if_changed()
    after = (await r.harness.send(event())).events
    assert isinstance(before, DecisionTrace) and isinstance(after[0], DecisionTrace)
    assert after[0].config_revision != before.config_revision
    assert all(e.config_revision == after[0].config_revision for e in after[1:])  # type: ignore[attr-defined]
    assert [f.fired for f in after[0].flows] == [True, True]


async def test_a_bad_edit_keeps_the_last_good_revision(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = Router(tmp_path)
    revision = r.catalog.lookup("support-line", "3").revision  # type: ignore[union-attr]
    path = write(tmp_path, "support-line.yaml", CONFIG.replace("title: x", "title: '{{nope}}'"))
    _touch_later(path)
    assert r.catalog.reload_if_changed()
    assert r.catalog.lookup("support-line", "3").revision == revision  # type: ignore[union-attr]
    assert "template names undefined variable 'nope'" in caplog.text
    [trace] = (await r.harness.send(event())).on(DECISIONS)
    assert isinstance(trace, DecisionTrace) and trace.config_revision == revision


def test_flows_and_actions_are_counted_by_outcome(tmp_path: Path) -> None:
    """postcall_router_flows_total and postcall_router_actions_total grow by each trace's flows (fired,
    not fired, disabled, held) and its fired flows' actions (planned, skipped)."""

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    write(tmp_path, "agent.yaml", EVERY_ACTION + DISABLED_AND_DRAFT)
    handler = RouterHandler(CatalogHolder(tmp_path, "(n/a)"), clock=lambda: NOW)
    no_phone = {"phone_number": None, "contact_id": None}
    records = [*_records(), event(status="failed", reason="LLM timeout"), event(customer=no_phone)]
    outcomes = ("fired", "not_fired", "disabled", "held")
    types = {"webhook", "http", "append_row", "email", "slack", "teams", "schedule_call", "task", "team_alert"}
    flows_before = {o: sample("postcall_router_flows_total", outcome=o) for o in outcomes}
    actions_before = {
        (t, o): sample("postcall_router_actions_total", type=t, outcome=o)
        for t in types
        for o in ("planned", "skipped")
    }
    expected_flows = dict.fromkeys(outcomes, 0)
    expected_actions = dict.fromkeys(actions_before, 0)
    for record in records:
        trace = asyncio.run(handler.handle(record, Context("router", ROUTER.consumes[0].topic)))[0]
        assert isinstance(trace, DecisionTrace)
        for flow in trace.flows:
            expected_flows[flow_outcome(flow)] += 1
            for result in flow.conditions if flow.fired else ():
                if result.kind == "action":
                    expected_actions[(str(result.expected), "planned" if result.passed else "skipped")] += 1
    assert all(expected_flows.values())  # every outcome happened
    assert {o for (_, o), n in expected_actions.items() if n} == {"planned", "skipped"}
    for o in outcomes:
        assert sample("postcall_router_flows_total", outcome=o) - flows_before[o] == expected_flows[o], o
    for key, before in actions_before.items():
        assert sample("postcall_router_actions_total", type=key[0], outcome=key[1]) - before == expected_actions[key]


def flow_outcome(flow: FlowDecision) -> str:
    """The outcome a trace's flow is counted under, read from the trace (the engine counts as it routes)."""
    if not flow.enabled:
        return "disabled"
    return "fired" if flow.fired else "held" if flow.held else "not_fired"
