"""`postcall explain` rendering, without a broker: flows, conditions, skips and outcomes as text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from schemas.events import ActionCompleted
from services.cli.explain import Story, render
from tests.unit.router.support import NOW, agent, event

CONFIG = """
    agent: support-line
    flows:
      - id: crm
        when: {end_reason: CUSTOMER_HANGUP}
        actions:
          - {type: webhook, destination: crm}
          - {type: email, to: ["{{customer_email}}"], subject: s, body: "{{conversation_summary}}"}
      - id: off
        enabled: false
        actions: [{type: task, title: t}]
"""


def text(story: Story) -> str:
    console = Console(record=True, width=200)
    render(story, console)
    return console.export_text()


def test_explain_shows_outcomes_skips_and_disabled_flows(tmp_path: Path) -> None:
    ev = event(customer={"contact_id": None})
    trace, [webhook] = agent(tmp_path, CONFIG).route(ev, NOW)
    failed = ActionCompleted(
        action_id=webhook.action_id,
        conversation_id="conv-1",
        type="webhook",
        destination="crm",
        outcome="failed",
        attempts=7,
        status_code=503,
        error="HTTP 503",
        completed_at=datetime(2026, 3, 10, 12, 5, tzinfo=UTC),
    )
    out = text(Story("conv-1", [trace], {webhook.action_id: failed}))
    assert "✔ crm — conditions passed; 1 action(s) planned, 1 skipped" in out
    assert "✔ actions[0]  webhook → crm — POST crm" in out
    assert f"action {webhook.action_id}: failed (HTTP 503, 7 attempt(s), HTTP 503)" in out
    assert "✘ actions[1]  email — skipped: no valid recipients ({{customer_email}} is empty: no contact linked)" in out
    assert "○ off — flow is disabled" in out


def test_story_as_json_keys_results_by_action_id(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, CONFIG).route(event(), NOW)
    webhook = actions[0]
    done = ActionCompleted(
        action_id=webhook.action_id,
        conversation_id="conv-1",
        type="webhook",
        outcome="delivered",
        attempts=1,
        completed_at=NOW,
    )
    data = Story("conv-1", [trace], {webhook.action_id: done}).as_json()
    assert data["decisions"][0]["flows"][0]["flow_id"] == "crm"
    assert data["results"][webhook.action_id]["outcome"] == "delivered"


def test_explain_names_the_id_the_receiver_gave(tmp_path: Path) -> None:
    trace, actions = agent(tmp_path, CONFIG).route(event(), NOW)
    done = ActionCompleted(
        action_id=actions[0].action_id,
        conversation_id="conv-1",
        type="http",
        destination="crm",
        outcome="delivered",
        attempts=1,
        status_code=200,
        result_id="4471",
        completed_at=NOW,
    )
    assert f"action {actions[0].action_id}: delivered (HTTP 200, id 4471, 1 attempt(s))" in text(
        Story("conv-1", [trace], {actions[0].action_id: done})
    )
