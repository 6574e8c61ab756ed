"""A flow's revision covers the flow and what it uses, nothing else (schemas/flow_revision.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from schemas.agents import AgentConfig, load_catalog
from schemas.flow_revision import FlowUses, flow_revision, flow_uses

AGENT = """
agent: support-line
timezone: Europe/Berlin
extraction:
  fields:
    - {name: interest_level, type: enum, values: [high, low], description: "How keen"}
    - {name: follow_up_date, type: date}
flows:
  - id: crm
    when: {end_reason: CUSTOMER_HANGUP}
    actions:
      - {type: webhook, destination: crm, body: {status: closed, reason: "{{end_reason}}"}}
  - id: hot-lead
    description: "Tell sales"
    when: {field: interest_level, op: "==", value: high}
    actions:
      - {type: slack, destination: sales, text: "Hot lead {{customer_name}}: {{conversation_summary}}"}
  - id: callback
    when: {ai: "Did the customer ask to be called back?"}
    actions:
      - {type: schedule_call, use_field: follow_up_date}
  - id: everything
    actions:
      - {type: webhook, destination: crm}
"""


def load(tmp_path: Path, text: str) -> AgentConfig:
    (tmp_path / "agent.yaml").write_text(textwrap.dedent(text))
    catalog = load_catalog(tmp_path)
    assert not catalog.problems, catalog.problems
    [config] = catalog.configs.values()
    return config


def revisions(tmp_path: Path, text: str) -> dict[str, str]:
    config = load(tmp_path, text)
    return {f.id: flow_revision(f, config) for f in config.flows}


def uses(tmp_path: Path, flow_id: str) -> tuple[str, ...]:
    config = load(tmp_path, AGENT)
    return flow_uses(next(f for f in config.flows if f.id == flow_id), config).extraction


EDITS_THAT_CHANGE_NO_FLOW = {
    "another flow's body": ("status: closed, reason:", "status: done, reason:"),
    "an unrelated new field": (
        "    - {name: follow_up_date, type: date}\n",
        "    - {name: follow_up_date, type: date}\n    - {name: budget, type: number}\n",
    ),
    "a field's description": ('description: "How keen"', 'description: "How keen, really"'),
    "a flow's description": ('description: "Tell sales"', 'description: "Tell the sales team"'),
    "a comment": ("flows:\n", "# reviewed\nflows:\n"),
}


@pytest.mark.parametrize("name", list(EDITS_THAT_CHANGE_NO_FLOW))
def test_edits_elsewhere_keep_the_revision_of_flows_they_do_not_touch(tmp_path: Path, name: str) -> None:
    old, new = EDITS_THAT_CHANGE_NO_FLOW[name]
    before = revisions(tmp_path, AGENT)
    after = revisions(tmp_path, AGENT.replace(old, new))
    changed = {f for f in before if before[f] != after[f]}
    expected = {
        "another flow's body": {"crm"},
        "an unrelated new field": {"everything"},  # a webhook without body sends every field
        "a field's description": set(),
        "a flow's description": set(),
        "a comment": set(),
    }[name]
    assert changed == expected


def test_a_used_fields_values_or_the_agents_timezone_change_the_flows_that_use_them(tmp_path: Path) -> None:
    before = revisions(tmp_path, AGENT)
    values = revisions(tmp_path, AGENT.replace("values: [high, low]", "values: [high, medium, low]"))
    assert {f for f in before if before[f] != values[f]} == {"hot-lead", "everything"}
    zone = revisions(tmp_path, AGENT.replace("Europe/Berlin", "UTC"))
    assert all(before[f] != zone[f] for f in before)  # every template may render a date


def test_a_library_template_change_changes_the_flow_built_from_it(tmp_path: Path) -> None:
    text = AGENT + "  - id: cb\n    use_template: callback_requested\n    actions: {email: {to: [a@company.example]}}\n"
    before = revisions(tmp_path, text)
    edited = revisions(tmp_path, text.replace("to: [a@company.example]", "to: [b@company.example]"))
    assert before["cb"] != edited["cb"] and before["crm"] == edited["crm"]


def test_what_makes_a_flow_depend_on_extraction(tmp_path: Path) -> None:
    assert uses(tmp_path, "crm") == ()
    assert uses(tmp_path, "hot-lead") == ("field condition on interest_level", "template uses {{conversation_summary}}")
    assert uses(tmp_path, "callback") == (
        "ai trigger 'Did the customer ask to be called back?'",
        "schedule_call uses field follow_up_date",
    )
    assert uses(tmp_path, "everything") == ("a webhook without `body` (it sends the extraction)",)


def test_the_platforms_own_values_are_not_the_extraction_even_under_an_extracted_fields_name(tmp_path: Path) -> None:
    text = AGENT + (
        "  - id: platform-hot\n"
        "    when: {field: platform.interest_level, op: '==', value: high}\n"
        "    actions:\n"
        "      - {type: slack, destination: sales, text: '{{platform.interest_level}}: {{platform.summary}}'}\n"
    )
    config = load(tmp_path, text)
    flow = next(f for f in config.flows if f.id == "platform-hot")
    assert flow_uses(flow, config) == FlowUses(fields=frozenset(), routes=frozenset(), extraction=())
    edited = revisions(tmp_path, text.replace("values: [high, low]", "values: [high, medium, low]"))
    assert edited["platform-hot"] == revisions(tmp_path, text)["platform-hot"]
    assert edited["hot-lead"] != revisions(tmp_path, text)["hot-lead"]


EVERY_ACTION = """
agent: support-line
extraction:
  fields:
    - {name: follow_up_date, type: date}
flows:
  - id: webhook
    actions: [{type: webhook, destination: crm}]
  - id: http
    actions: [{type: http, destination: cases, path: /cases}]
  - id: append-row
    actions:
      - type: append_row
        destination: sheets
        spreadsheet_id: 1AbCdEfGhIjKlMnOp
        sheet: Calls
        columns: ["{{customer_name}}"]
  - id: email
    actions: [{type: email, to: [ops@example.com], subject: "Call", body: "{{conversation_summary}}"}]
  - id: slack
    actions: [{type: slack, destination: sales, text: "Call {{customer_name}}"}]
  - id: teams
    actions: [{type: teams, destination: sales, text: "Call {{customer_name}}"}]
  - id: schedule-call
    actions: [{type: schedule_call, use_field: follow_up_date}]
  - id: task
    actions: [{type: task, title: "Call back {{customer_name}}"}]
  - id: team-alert
    actions: [{type: team_alert, message: "Complaint: {{conversation_summary}}"}]
"""


def test_an_unedited_flow_keeps_the_revision_earlier_versions_gave_it(tmp_path: Path) -> None:
    """Pinned (computed before TaskAction.assignee existed): an option added to an action model later must not
    change the revision of a flow that does not set it, or upgrading would give every such flow's actions new
    ids and re-processing a conversation the previous version handled would send them again."""
    assert revisions(tmp_path, EVERY_ACTION) == {
        "webhook": "9db180bf71e849db",
        "http": "f0eff15bb974d1ae",
        "append-row": "140d3d6128bdd2ad",
        "email": "fb8f6b6d04db92cc",
        "slack": "ec746f3c4f90916e",
        "teams": "6136a35e8839be6d",
        "schedule-call": "44ec65c45fd06538",
        "task": "63ece0e7849bee76",
        "team-alert": "34f3671ff4a1b699",
    }


def test_naming_a_tasks_assignee_changes_its_flows_revision(tmp_path: Path) -> None:
    before = revisions(tmp_path, EVERY_ACTION)
    title = '"Call back {{customer_name}}"'
    dana = revisions(tmp_path, EVERY_ACTION.replace(title, f"{title}, assignee: dana"))
    sam = revisions(tmp_path, EVERY_ACTION.replace(title, f"{title}, assignee: sam"))
    assert {f for f in before if before[f] != dana[f]} == {"task"} and dana["task"] != sam["task"]
