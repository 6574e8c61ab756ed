"""`postcall config validate`: every kind of bad configuration is refused with file:line: path: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.topics import ACTION_TYPES
from services.cli.config import app
from tests.hostile.corpus import HOSTILE_YAML, yaml_bomb

DESTINATIONS = """
destinations:
  - {name: crm, kind: http, url: "https://crm.example/hook"}
  - {name: ops-slack, kind: slack, url: "https://hooks.slack.example/x"}
  - {name: support-email, kind: smtp, host: smtp.example, from_address: calls@company.example}
"""

GOOD = """\
agent: support-line
extraction:
  fields:
    - {name: follow_up_required, type: boolean}
    - {name: score, type: number}
flows:
  - id: crm
    when: {end_reason: CUSTOMER_HANGUP}
    actions:
      - {type: webhook, destination: crm, body: {summary: "{{conversation_summary}}", x: "{{dyn_anything}}"}}
"""

# (case id, file text, the one expected line without the "<file>:" prefix)
BAD = [
    (
        "unknown-field",
        GOOD.replace("destination: crm", "destination: crm, methd: POST"),
        "10: flows[0].actions[0].methd: unknown field 'methd' (did you mean 'method'?)",
    ),
    (
        "unknown-top-level-field",
        GOOD.replace("agent: support-line", "agent: support-line\nagnet: x"),
        "2: agnet: unknown field 'agnet' (did you mean 'agent'?)",
    ),
    (
        "unknown-field-in-a-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{end_reason: {nott_in: [VOICEMAIL]}}"),
        "8: flows[0].when.end_reason.nott_in: unknown field 'nott_in' (did you mean 'not_in'?)",
    ),
    (
        "unknown-field-in-an-optional-part",
        GOOD.replace(
            "- {type: webhook, destination: crm, body:",
            "- {type: schedule_call, business_hours: {timezone: UTC, days: [mon], start: '09:00', ends: '17:00'}}\n#",
        ),
        "10: flows[0].actions[0].business_hours.ends: unknown field 'ends' (did you mean 'end'?)",
    ),
    (
        "action-type-misspelt",  # before: "Unable to extract tag using discriminator 'type'", at the action
        GOOD.replace("{type: webhook,", "{tpye: webhook,"),
        "10: flows[0].actions[0].tpye: unknown field 'tpye' (did you mean 'type'?)",
    ),
    (
        "action-type-missing",
        GOOD.replace("{type: webhook,", "{"),
        "10: flows[0].actions[0]: missing required field 'type'",
    ),
    (
        "unknown-field-nothing-is-close-to",
        GOOD.replace("destination: crm", "destination: crm, zzz: 1"),
        "10: flows[0].actions[0].zzz: unknown field 'zzz'",
    ),
    (
        "missing-field",
        GOOD.replace("- {type: webhook, destination: crm, body:", "- {type: slack, text: hi}\n#"),
        "10: flows[0].actions[0].destination: missing required field 'destination'",
    ),
    (
        "operator-for-boolean",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: follow_up_required, op: '>', value: true}"),
        "8: flows[0].when.op: '>' is not valid for boolean field 'follow_up_required'",
    ),
    (
        "matches-on-number",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: score, op: matches, value: '9+'}"),
        "8: flows[0].when.op: 'matches' is not valid for number field 'score'",
    ),
    (
        "value-type",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: follow_up_required, op: '==', value: 'yes'}"),
        "8: flows[0].when.value: 'yes' is not a valid boolean value",
    ),
    (
        "values-on-a-field-that-is-not-an-enum",
        GOOD.replace("{name: score, type: number}", "{name: score, type: string, values: [low, high]}"),
        "5: extraction.fields[1].values: `values` is for enum fields; 'score' is string",
    ),
    (
        "number-value-not-finite",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: score, op: '>', value: .nan}"),
        "8: flows[0].when.value: nan is not a valid number value (a finite number)",
    ),
    (
        "schedule-call-from-a-number-that-is-not-e164",
        GOOD.replace(
            "- {type: webhook, destination: crm,",
            "- {type: schedule_call, from_number: 'call me'}\n      - {type: webhook, destination: crm,",
        ),
        "10: flows[0].actions[0].from_number: 'call me' is not a phone number in E.164 form (+ and 7 to 15 digits)",
    ),
    (
        "time-with-a-utc-offset",
        GOOD.replace("{name: score, type: number}", "{name: score, type: time}").replace(
            "{end_reason: CUSTOMER_HANGUP}", "{field: score, op: '>', value: '09:00+02:00'}"
        ),
        "8: flows[0].when.value: '09:00+02:00' is not a valid time value (a time of day, HH:MM, without a UTC offset)",
    ),
    (
        "fixed-recipient-that-is-no-address",
        GOOD + "  - {id: mail, actions: [{type: email, to: ['support@company.com, sales@company.com'], "
        "subject: s, body: b}]}\n",
        "11: flows[1].actions[0].to[0]: 'support@company.com, sales@company.com' is not an email address "
        "(write one plain address per item: name@company.com)",
    ),
    (
        "route-address-that-is-no-address",
        GOOD.replace(
            "flows:",
            "recipient_routes:\n  - {id: r, rules: [{when: x, to: [a@company.com]}], "
            "fallback: ['Desk <d@company.com>']}\nflows:",
        ),
        "7: recipient_routes[0].fallback[0]: 'Desk <d@company.com>' is not an email address "
        "(write one plain address per item: name@company.com)",
    ),
    (
        "dyn-name-in-a-template-the-extractor-cannot-ask-for",
        GOOD.replace("{{dyn_anything}}", "{{dyn_CaseId}}"),
        "10: flows[0].actions[0].body.x: 'dyn_CaseId': a dyn_* name is lower-case letters, digits and _ "
        "(it is extracted as a field of that name)",
    ),
    (
        "dyn-name-in-a-condition-the-extractor-cannot-ask-for",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: dyn_case-id, op: exists}"),
        "8: flows[0].when.field: 'dyn_case-id': a dyn_* name is lower-case letters, digits and _ "
        "(it is extracted as a field of that name)",
    ),
    (
        "unknown-field-in-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: folow_up, op: exists}"),
        "8: flows[0].when.field: unknown field 'folow_up' (did you mean 'follow_up_required'?) "
        "(declare it under extraction.fields)",
    ),
    (
        "empty-platform-name-in-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: 'platform.', op: exists}"),
        "8: flows[0].when.field: 'platform.' names no single value: write platform.<name> "
        "(letters, digits, _ or -; no nesting)",
    ),
    (
        "nested-platform-name-in-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: platform.data.score, op: '>', value: 3}"),
        "8: flows[0].when.field: 'platform.data.score' names no single value: write platform.<name> "
        "(letters, digits, _ or -; no nesting)",
    ),
    (
        "spaced-dynamic-variable-name-in-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{field: 'dynamic_variables.case id', op: exists}"),
        "8: flows[0].when.field: 'dynamic_variables.case id' names no single value: write "
        "dynamic_variables.<name> (letters, digits, _ or -; no nesting)",
    ),
    (
        "undefined-template-variable",
        GOOD.replace("{{conversation_summary}}", "{{conversation_sumary}}"),
        "10: flows[0].actions[0].body.summary: template names undefined variable 'conversation_sumary' "
        "(did you mean 'conversation_summary'?)",
    ),
    (
        "template-code",
        GOOD.replace("{{conversation_summary}}", "{{ conversation_summary.__class__ }}"),
        "10: flows[0].actions[0].body.summary: {{conversation_summary.__class__}} is not a variable name: templates "
        "allow only {{name}} and {{name | fallback text}} (no expressions, calls or attribute access)",
    ),
    (
        "duplicate-flow-id",
        GOOD + "  - {id: crm, actions: [{type: task, title: again}]}\n",
        "11: flows[1].id: duplicate flow id 'crm'",
    ),
    (
        "unknown-end-reason",
        GOOD.replace("CUSTOMER_HANGUP", "CUSTOMER_HANG_UP"),
        "8: flows[0].when.end_reason[0]: unknown end reason 'CUSTOMER_HANG_UP' (did you mean 'CUSTOMER_HANGUP'?)",
    ),
    (
        "unknown-condition",
        GOOD.replace("{end_reason: CUSTOMER_HANGUP}", "{reason: CUSTOMER_HANGUP}"),
        "8: flows[0].when: a condition is a mapping with one of: end_reason, field, ai, always, all, any, not, "
        "confidence, needs_review",
    ),
    (
        "unknown-action-type",
        GOOD.replace("type: webhook", "type: webhok"),
        "10: flows[0].actions[0]: unknown action type 'webhok' (known: "
        + ", ".join(repr(t) for t in ACTION_TYPES)
        + ")",
    ),
    (
        "pattern-re2-cannot-run",
        GOOD.replace("- {name: score, type: number}", "- {name: notes, type: string}").replace(
            "{end_reason: CUSTOMER_HANGUP}", "{field: notes, op: matches, value: '(?=refund)'}"
        ),
        "8: flows[0].when.value: RE2 cannot compile this pattern: invalid perl operator: (?= (`matches` uses RE2, "
        "which runs in linear time: no backreferences, no lookahead or lookbehind)",
    ),
    (
        "pattern-backreference",
        GOOD.replace("- {name: score, type: number}", "- {name: notes, type: string}").replace(
            "{end_reason: CUSTOMER_HANGUP}", "{field: notes, op: matches, value: '(a)\\1'}"
        ),
        "8: flows[0].when.value: RE2 cannot compile this pattern: invalid escape sequence: \\1 (`matches` uses RE2, "
        "which runs in linear time: no backreferences, no lookahead or lookbehind)",
    ),
    (
        "recipient-from-a-caller-value",
        GOOD.replace(
            '{type: webhook, destination: crm, body: {summary: "{{conversation_summary}}", x: "{{dyn_anything}}"}}',
            '{type: email, to: [ops@company.example, "{{dyn_send_to}}"], subject: s, body: b}',
        ),
        "10: flows[0].actions[0].to[1]: recipient '{{dyn_send_to}}' is rendered from values a caller can influence; "
        "an email goes only to literal addresses, {{customer_email}} (the contact-linked address) or a recipient "
        "route, unless the action lists `allowed_domains` (then only addresses in those domains are kept)",
    ),
    (
        "recipient-from-dynamic-variables",
        GOOD.replace(
            '{type: webhook, destination: crm, body: {summary: "{{conversation_summary}}", x: "{{dyn_anything}}"}}',
            '{type: email, to: ["{{dynamic_variables.email}}"], subject: s, body: b}',
        ),
        "10: flows[0].actions[0].to[0]: recipient '{{dynamic_variables.email}}' is rendered from values a caller can "
        "influence; an email goes only to literal addresses, {{customer_email}} (the contact-linked address) or a "
        "recipient route, unless the action lists `allowed_domains` (then only addresses in those domains are kept)",
    ),
    (
        "unknown-route",
        GOOD.replace(
            '{type: webhook, destination: crm, body: {summary: "{{conversation_summary}}", x: "{{dyn_anything}}"}}',
            "{type: email, recipients: vip, subject: s, body: b}",
        ),
        "10: flows[0].actions[0].recipients: unknown recipient route 'vip'",
    ),
    (
        "unknown-template",
        GOOD + "  - {id: cb, use_template: callback_request}\n",
        "11: flows[1].use_template: unknown template 'callback_request' (known: appointment_booked, billing_inquiry, "
        "callback_requested, customer_complaint, demo_request, escalation_needed, order_placed, positive_feedback, "
        "technical_issue, unanswered_question)",
    ),
    (
        "yaml-syntax",
        GOOD.replace("flows:", "flows: [").replace("  - id: crm", "  - id: crm\n  oops"),
        "7: YAML: expected the node content, but found '-'",
    ),
    (
        "unknown-destination",
        GOOD.replace("destination: crm", "destination: crmm"),
        "10: flows[0].actions[0].destination: unknown destination 'crmm' (did you mean 'crm'? known: crm, ops-slack, "
        "support-email)",
    ),
    (
        "destination-of-the-wrong-kind",
        GOOD.replace("destination: crm", "destination: ops-slack"),
        "10: flows[0].actions[0].destination: destination 'ops-slack' is a slack destination; a webhook action needs "
        "http",
    ),
    # loaded before, then compiling the agent (its flow revision, orjson) raised TypeError: no router start
    (
        "integer-over-64-bits-in-a-body",
        GOOD.replace("body: {summary:", "body: {n: 18446744073709551616, summary:"),
        "10: flows[0].actions[0].body.n: an integer outside the 64 bits JSON numbers carry here (-2**63 to 2**64 - 1): "
        "quote it as text",
    ),
    (
        "integer-over-64-bits-in-a-condition",
        GOOD.replace(
            "{end_reason: CUSTOMER_HANGUP}", '{field: dynamic_variables.n, op: ">", value: -9223372036854775809}'
        ),
        "8: flows[0].when.value: an integer outside the 64 bits JSON numbers carry here (-2**63 to 2**64 - 1): "
        "quote it as text",
    ),
]


def run(tmp_path: Path, text: str, *extra: str) -> tuple[int, list[str], str]:
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    (agents / "support-line.yaml").write_text(text)
    (tmp_path / "destinations.yaml").write_text(textwrap.dedent(DESTINATIONS))
    result = CliRunner().invoke(
        app, ["validate", str(agents), "--destinations", str(tmp_path / "destinations.yaml"), *extra]
    )
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_a_good_configuration_passes(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, GOOD)
    assert code == 0 and out == ["ok: 1 file(s), agents: support-line"]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_configuration_is_refused_with_file_line_and_path(tmp_path: Path, text: str, expected: str) -> None:
    code, out, err = run(tmp_path, text)
    assert code == 1
    assert out == [f"{tmp_path / 'agents' / 'support-line.yaml'}:{expected}"]
    assert "1 problem(s)" in err


def test_a_recipient_list_that_can_render_empty_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    text = GOOD.replace(
        '{type: webhook, destination: crm, body: {summary: "{{conversation_summary}}", x: "{{dyn_anything}}"}}',
        '{type: email, to: ["{{customer_email}}"], subject: s, body: b}',
    )
    code, out, _ = run(tmp_path, text)
    assert code == 0
    assert out == [
        f"{tmp_path / 'agents' / 'support-line.yaml'}:10: flows[0].actions[0].to: warning: the recipient list can be "
        "empty at run time: {{customer_email}} is empty when no contact is linked (customer.contact_id); the email "
        "is then skipped (add a literal address or a recipient route to always send it)",
        "ok: 1 file(s), agents: support-line",
    ]
    with_fixed = text.replace('to: ["{{customer_email}}"]', 'to: ["{{customer_email}}", team@company.example]')
    assert run(tmp_path, with_fixed)[1] == ["ok: 1 file(s), agents: support-line"]


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in HOSTILE_YAML], ids=[c[0] for c in HOSTILE_YAML])
def test_hostile_yaml_is_refused_with_its_line_at_once(tmp_path: Path, text: str, line: int, message: str) -> None:
    """A 374-byte file of nested aliases expanded to a million nodes on every reload; tags crashed."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support-line.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
    result = CliRunner().invoke(app, ["validate", str(agents)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{agents / 'support-line.yaml'}:{line}: YAML: {message}"]


def test_a_hostile_destinations_file_is_refused_with_its_line(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support-line.yaml").write_text(GOOD)
    (tmp_path / "destinations.yaml").write_text(yaml_bomb())
    result = CliRunner().invoke(app, ["validate", str(agents), "--destinations", str(tmp_path / "destinations.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'destinations.yaml'}:1: YAML: anchors (&name) are not allowed" in result.stderr


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    text = GOOD.replace("{{conversation_summary}}", "{{nope}}")
    text += "  - {id: crm, when: {field: score, op: contains, value: '1'}, actions: [{type: task, title: t}]}\n"
    code, out, _ = run(tmp_path, text)
    assert code == 1
    assert [line.split(": ", 2)[1] for line in out] == [
        "flows[0].actions[0].body.summary",
        "flows[1].id",
        "flows[1].when.op",
    ]


def test_without_a_destinations_file_the_check_is_skipped_with_a_note(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "a.yaml").write_text(GOOD.replace("destination: crm", "destination: anything"))
    result = CliRunner().invoke(app, ["validate", str(agents)])
    assert result.exit_code == 0
    assert "destinations not checked" in result.stderr


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == f"{tmp_path / 'nope'}:0: not a directory: nothing exists at this path"


def test_a_file_given_for_the_folder_is_refused_naming_the_folder_to_give(tmp_path: Path) -> None:
    """`postcall config validate agents/support-line.yaml` said only 'not a directory'."""
    (tmp_path / "a.yaml").write_text(GOOD)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "a.yaml")])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"{tmp_path / 'a.yaml'}:0: not a directory: a file; give the folder of agent files that holds it ({tmp_path})"
    )


NOT_AGENT_FILES = ["README.md", "agents.json", ".hidden/a.yaml"]


@pytest.mark.parametrize("contents", [[], NOT_AGENT_FILES], ids=["empty", "no-agent-file"])
def test_a_folder_without_an_agent_file_is_refused_naming_the_folder(tmp_path: Path, contents: list[str]) -> None:
    """Used to pass as `ok: 0 file(s), agents: none`: a CI job pointed at the wrong folder went green."""
    for name in contents:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("agent: support-line\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    expected = f"{tmp_path}:0: no agent configuration file (*.yaml or *.yml) found in this folder"
    assert result.stdout.splitlines() == [expected]


def test_the_example_agents_pass_with_the_example_destinations() -> None:
    root = Path(__file__).resolve().parents[3]
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(root / "examples" / "agents"),
            "--destinations",
            str(root / "examples" / "dispatcher" / "destinations.yaml"),
        ],
    )
    assert result.exit_code == 0, result.stdout


def test_one_run_reports_shape_meaning_and_destination_problems_together(tmp_path: Path) -> None:
    """Used to take three rounds: the unknown field hid the operator problem, which hid the destination."""
    text = GOOD.replace("destination: crm, body:", "destination: nowhere, body:")
    text += (
        "  - {id: typo, actions: [{type: task, title: t, priorty: high}]}\n"
        "  - {id: op, when: {field: follow_up_required, op: '>', value: true}, actions: [{type: task, title: t}]}\n"
    )
    code, out, _ = run(tmp_path, text)
    assert code == 1
    assert [line.split(": ", 2)[1] for line in out] == [
        "flows[0].actions[0].destination",
        "flows[1].actions[0].priorty",
        "flows[2].when.op",
    ]
    assert "unknown destination 'nowhere'" in out[0]


def test_a_broken_extraction_section_does_not_invent_problems_in_the_flows(tmp_path: Path) -> None:
    text = GOOD.replace("{name: score, type: number}", "{name: score, type: numbr}")
    text = text.replace("{end_reason: CUSTOMER_HANGUP}", "{field: score, op: '>', value: 3}")
    code, out, _ = run(tmp_path, text)
    assert code == 1 and len(out) == 1 and "extraction.fields[1].type" in out[0]
