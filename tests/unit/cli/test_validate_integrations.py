"""`postcall config validate` locates every mistake in the integration blocks: http actions (method,
path, headers, body, result pointer), Sheets rows, Slack and Teams cards in agent files, and auth,
Sheets, Slack and Teams destinations in the destinations file, each as file:line: path: message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.config import app

DESTINATIONS = """\
destinations:
  - name: crm
    kind: http
    url: https://crm.example/api/v2
    auth:
      type: oauth2_client_credentials
      token_url: https://login.crm.example/token
      client_id: postcall
      client_secret: {secret_env: CRM_CLIENT_SECRET}
  - name: call-log
    kind: google_sheets
    service_account: {secret_file: /var/run/secrets/sheets/key.json}
  - name: support-slack
    kind: slack
    bot_token: {secret_env: SLACK_BOT_TOKEN}
    channel: C024BE91L
  - name: support-teams
    kind: teams
    url_secret: {secret_env: TEAMS_WEBHOOK_URL}
  - name: mail
    kind: smtp
    host: smtp.example
    from_address: calls@company.example
"""

AGENT = """\
agent: support-line
flows:
  - id: f
    actions:
      - {ACTION}
"""

# (case id, the action as one YAML flow mapping, the expected problem after "<file>:5: flows[0].actions[0]")
BAD_ACTIONS = [
    ("method", "{type: http, destination: crm, method: FETCH}", ".method: Input should be 'GET', 'POST', 'PUT'"),
    ("relative-path", '{type: http, destination: crm, path: "cases/1"}', ".path: a path starts with '/' or '?'"),
    ("dot-segment", '{type: http, destination: crm, path: "/cases/../admin"}', ".path: a path cannot contain '.'"),
    # as a servlet container reads them, and encoded: the dispatcher refuses each at run, every call
    ("dot-param", '{type: http, destination: crm, path: "/cases/..;x=1/admin"}', ".path: a path cannot contain '.'"),
    ("dot-encoded", '{type: http, destination: crm, path: "/cases/%2e%2E/admin"}', ".path: a path cannot contain"),
    ("host", '{type: http, destination: crm, path: "//evil.example/x"}', ".path: a path cannot name a host"),
    ("space", '{type: http, destination: crm, path: "/a b"}', ".path: the literal text of a path is printable"),
    ("undefined", '{type: http, destination: crm, path: "/c/{{case}}"}', ".path: template names undefined variable"),
    ("filter", '{type: http, destination: crm, path: "/c/{{x | upper}}"}', ".path: {{x | upper}}: templates have no"),
    (
        "credential-header",
        '{type: http, destination: crm, headers: {Authorization: "Bearer abc"}}',
        ".headers: header 'Authorization' cannot be set by a flow: credentials go in the destination",
    ),
    (
        "supersedes-header",
        '{type: http, destination: crm, headers: {Postcall-Supersedes: "act-1"}}',
        ".headers: header 'Postcall-Supersedes' cannot be set by a flow",
    ),
    ("header-name", '{type: http, destination: crm, headers: {"x y": "1"}}', ".headers: header 'x y': a header name"),
    ("header-template", '{type: http, destination: crm, headers: {x-a: "{{nope}}"}}', ".headers.x-a: template names"),
    ("get-body", "{type: http, destination: crm, method: GET, body: {a: 1}}", ": a GET request has no body"),
    ("pointer", "{type: http, destination: crm, result_id_pointer: id}", ".result_id_pointer: a JSON pointer"),
    ("pointer-escape", "{type: http, destination: crm, result_id_pointer: /a~2}", ".result_id_pointer: in a JSON"),
    ("kind", "{type: http, destination: mail}", ".destination: destination 'mail' is a smtp destination; a http"),
    ("unknown-destination", "{type: http, destination: crn}", ".destination: unknown destination 'crn' (did you"),
    (
        "sheet-id-template",
        '{type: append_row, destination: call-log, spreadsheet_id: "{{dyn_sheet}}", sheet: Calls, columns: [a]}',
        ".spreadsheet_id: String should match pattern",
    ),
    (
        "id-column-inside",
        "{type: append_row, destination: call-log, spreadsheet_id: 1SheetAbc_123, sheet: Calls, columns: [a, b], "
        "id_column: B}",
        ": id_column B would overwrite column B of the row: choose a column after the 2 columns",
    ),
    (
        "id-column-letters",
        "{type: append_row, destination: call-log, spreadsheet_id: 1SheetAbc_123, sheet: Calls, columns: [a], "
        "id_column: z}",
        ".id_column: String should match pattern",
    ),
    (
        "no-columns",
        "{type: append_row, destination: call-log, spreadsheet_id: 1SheetAbc_123, sheet: Calls, columns: []}",
        ".columns: List should have at least 1 item",
    ),
    (
        "column-template",
        '{type: append_row, destination: call-log, spreadsheet_id: 1SheetAbc_123, sheet: Calls, columns: ["{{x}"]}',
        ".columns[0]: '{{' is not closed by '}}'",
    ),
    (
        "sheets-kind",
        "{type: append_row, destination: crm, spreadsheet_id: 1SheetAbc_123, sheet: Calls, columns: [a]}",
        ".destination: destination 'crm' is a http destination; a append_row action needs google_sheets",
    ),
    (
        "slack-channel-template",
        '{type: slack, destination: support-slack, text: hi, channel: "{{dyn_channel}}"}',
        ".channel: String should match pattern",
    ),
    (
        "slack-field-variable",
        '{type: slack, destination: support-slack, text: hi, fields: {Name: "{{customer_nam}}"}}',
        ".fields.Name: template names undefined variable 'customer_nam' (did you mean 'customer_name'?)",
    ),
    (
        "slack-title-syntax",
        '{type: slack, destination: support-slack, text: hi, title: "{{ a b }}"}',
        ".title: {{a b}} is not a variable name",
    ),
    ("slack-button", '{type: slack, destination: support-slack, text: hi, button: ""}', ".button: String should have"),
    ("teams-text", "{type: teams, destination: support-teams}", ".text: missing required field 'text'"),
    (
        "teams-channel",
        "{type: teams, destination: support-teams, text: hi, channel: C1}",
        ".channel: unknown field 'channel'",
    ),
    (
        "teams-kind",
        "{type: teams, destination: support-slack, text: hi}",
        ".destination: destination 'support-slack' is a slack destination; a teams action needs teams",
    ),
]


def run(tmp_path: Path, agent: str, destinations: str = DESTINATIONS) -> tuple[int, list[str]]:
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    (agents / "support-line.yaml").write_text(agent)
    (tmp_path / "destinations.yaml").write_text(destinations)
    result = CliRunner().invoke(app, ["validate", str(agents), "--destinations", str(tmp_path / "destinations.yaml")])
    lines = [line.replace(f"{tmp_path}/", "") for line in result.stdout.splitlines()]
    return result.exit_code, lines


def test_good_integration_blocks_pass(tmp_path: Path) -> None:
    action = (
        '{type: http, destination: crm, method: PATCH, path: "/cases/{{dynamic_variables.case_id}}?expand=1", '
        'query: {by: "{{agent_name}}"}, headers: {x-call: "{{conversation_uuid}}"}, body: {s: x}, '
        "result_id_pointer: /case/id}"
    )
    assert run(tmp_path, AGENT.replace("{ACTION}", action)) == (0, ["ok: 1 file(s), agents: support-line"])


@pytest.mark.parametrize(("action", "expected"), [c[1:] for c in BAD_ACTIONS], ids=[c[0] for c in BAD_ACTIONS])
def test_a_mistake_in_an_integration_action_is_located(tmp_path: Path, action: str, expected: str) -> None:
    code, lines = run(tmp_path, AGENT.replace("{ACTION}", action))
    assert code == 1
    [line] = lines
    assert line.startswith(f"agents/support-line.yaml:5: flows[0].actions[0]{expected}"), line


BAD_DESTINATIONS = [
    ("auth-type", "auth: {type: oauth}", "auth: unknown type 'oauth' (bearer | basic | oauth2_client_credentials)"),
    ("bearer-token", "auth: {type: bearer}", "auth.token: missing required field 'token'"),
    ("basic-password", "auth: {type: basic, username: u}", "auth.password: missing required field 'password'"),
    (
        "token-url",
        "auth: {type: oauth2_client_credentials, token_url: ftp://x, client_id: a, client_secret: {secret_env: S}}",
        "auth.token_url: String should match pattern '^https?://'",
    ),
    (
        "client-auth",
        "auth: {type: oauth2_client_credentials, token_url: https://x, client_id: a, client_secret: {secret_env: S}, "
        "client_auth: header}",
        "auth.client_auth: Input should be 'basic' or 'body'",
    ),
    (
        "secret-ref",
        "auth: {type: bearer, token: {secret_env: A, secret_file: /b}}",
        "auth.token: a secret needs exactly one of secret_env, secret_file",
    ),
    ("slack-channel-webhook", "kind: slack\n    channel: C1", "`channel` is for bot tokens"),
    ("slack-bot-token", "kind: slack\n    bot_token: xoxb-literal", "bot_token: Input should be"),
    ("sheets-key", "kind: google_sheets", "service_account: missing required field 'service_account'"),
    (
        "twice",
        "auth: {type: bearer, token: {secret_env: T}}\n    headers: {Authorization: x}",
        "set the credential once: `auth:` or an `authorization` header, not both",
    ),
]


@pytest.mark.parametrize(("block", "expected"), [c[1:] for c in BAD_DESTINATIONS], ids=[c[0] for c in BAD_DESTINATIONS])
def test_a_mistake_in_a_destination_block_is_located(tmp_path: Path, block: str, expected: str) -> None:
    entry = f"  - name: other\n    kind: http\n    url: https://x.example\n    {block}\n"
    if block.startswith("kind:"):
        entry = f"  - name: other\n    {block}\n    url: https://x.example\n"
    destinations = DESTINATIONS + entry
    code, lines = run(tmp_path, AGENT.replace("{ACTION}", "{type: http, destination: crm}"), destinations)
    assert code == 1
    [line] = lines
    start, index = len(DESTINATIONS.splitlines()) + 1, DESTINATIONS.count("- name:")
    prefix = f"destinations.yaml:(\\d+): destinations\\[{index}\\][.:] ?"
    match = re.match(prefix, line)
    assert match and line[match.end() :].startswith(expected), line
    # located on the line of the field at fault, or on the entry's first line when it is missing or the whole
    number = int(match.group(1))
    text = [*destinations.splitlines(), ""][number - 1]
    key = expected.split(":")[0].split(".")[0]
    assert number == start or key in text, (number, text)


def test_secrets_are_not_read_and_unset_variables_are_not_judged(tmp_path: Path) -> None:
    destinations = DESTINATIONS.replace("https://crm.example/api/v2", "${CRM_URL}")
    code, lines = run(tmp_path, AGENT.replace("{ACTION}", "{type: http, destination: crm}"), destinations)
    assert (code, lines) == (0, ["ok: 1 file(s), agents: support-line"])


def test_one_run_reports_the_problems_of_every_destination(tmp_path: Path) -> None:
    destinations = (
        DESTINATIONS
        + "  - {name: other, kind: http, url: 'https://x.example', auth: {type: bearer}}\n"
        + "  - {name: third, kind: http, url: 'https://x.example', headers: {'bad name': v}}\n"
    )
    code, lines = run(tmp_path, AGENT.replace("{ACTION}", "{type: http, destination: crm}"), destinations)
    start = len(DESTINATIONS.splitlines()) + 1
    assert (code, lines) == (
        1,
        [
            f"destinations.yaml:{start}: destinations[5].auth.token: missing required field 'token'",
            f"destinations.yaml:{start + 1}: destinations[6].headers.bad name: a header name is letters, digits "
            "and !#$%&'*+.^_`|~- only",
        ],
    )


def test_a_timeout_longer_than_the_dispatchers_handler_allows_is_located_against_this_environments_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher refuses to start with a destination's timeout_seconds over its attempt bound; `config
    validate` passed such a file, having no dispatcher settings. It reads them as the dispatcher does, from the
    environment, and says which values it used."""
    destinations = DESTINATIONS + "  - {name: slow, kind: http, url: 'https://x.example', timeout_seconds: 300}\n"
    line = len(DESTINATIONS.splitlines()) + 1
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support-line.yaml").write_text(AGENT.replace("{ACTION}", "{type: http, destination: crm}"))
    (tmp_path / "destinations.yaml").write_text(destinations)
    arguments = ["validate", str(agents), "--destinations", str(tmp_path / "destinations.yaml")]
    for name in ("POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS", "POSTCALL_MAX_WAIT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert result.stdout.replace(f"{tmp_path}/", "").splitlines() == [
        f"destinations.yaml:{line}: destinations[5].timeout_seconds: 300 s is over the 104 s a delivery attempt may "
        "take: the handler would be stopped first, mid-request, and its retry send again what the receiver may have "
        "taken (runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds (3 x 2 s) and 10 s)"
    ]
    assert "note: timeouts checked against 104 s, runtime.handler_timeout_seconds (120 s)" in result.stderr
    # the dispatcher's environment gives its handler the time: the same file passes
    passed = CliRunner().invoke(app, arguments, env={"POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS": "320"})
    assert (passed.exit_code, passed.stdout.splitlines()) == (0, ["ok: 1 file(s), agents: support-line"])
    assert "note: timeouts checked against 304 s, runtime.handler_timeout_seconds (320 s)" in passed.stderr
    # settings the dispatcher would not start with are problems too, named as the variables to change
    stuck = CliRunner().invoke(app, arguments, env={"POSTCALL_MAX_WAIT_SECONDS": "60"})
    assert stuck.exit_code == 1
    assert stuck.stdout.splitlines() == [
        "dispatcher settings (this environment): POSTCALL_MAX_WAIT_SECONDS: leaves no time for a delivery attempt: "
        "runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds (3 x 60 s) and 10 s is -70 s; lower "
        "max_wait_seconds or raise runtime.handler_timeout_seconds"
    ]
