"""`postcall try`: a dry run of the real extractor and router on one conversation, with no broker and no
server; exit codes 0/1 for CI pipelines of agent configurations."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from tests.unit.router.support import event, write

ROOT = Path(__file__).resolve().parents[3]
AGENTS = ROOT / "examples" / "agents"
CALLBACK = ROOT / "examples" / "conversations" / "0005-callback-request.json"
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_llm_no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run needs neither: point Kafka at a closed port and configure no LLM endpoint."""
    for name in ("POSTCALL_LLM__BASE_URL", "POSTCALL_LLM__API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POSTCALL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["try", *args], input=stdin)
    return result.exit_code, result.output


def as_json(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, Any]]:
    code, out = run(*args, "--json", stdin=stdin)
    return code, orjson.loads(out)


def test_example_callback_fires_its_flows_with_the_exact_payloads_and_exits_0() -> None:
    code, out = as_json("-c", str(CALLBACK), "-a", str(AGENTS), "--expect", "callback-requested")
    assert code == 0 and out["ok"]
    assert out["input_kind"] == "conversation-ended" and out["extraction"]["provider"] == "heuristic"
    assert set(out["fired"]) == {"crm-case-update", "callback-requested"}
    task = next(a for a in out["actions"] if a["topic"] == "postcall.actions.task.v1")
    assert task["key"] == "conv-2026-0005-callback-request"
    assert task["value"]["title"] == "Call back customer (+16305550123)" and task["value"]["priority"] == "High"
    traced = {p["action_id"] for f in out["decision_trace"]["flows"] for p in f["actions"]}
    assert traced == {a["value"]["action_id"] for a in out["actions"]}


def test_the_text_report_shows_fields_conditions_and_payloads() -> None:
    code, out = run("-c", str(CALLBACK), "-a", str(AGENTS))
    assert code == 0
    assert "extraction ok · heuristic" in out and "issue_category = account" in out
    assert "✘ escalation-to-ops — not met: when: end reason CUSTOMER_HANGUP is not in" in out
    assert "would produce to postcall.actions.task.v1" in out and '"priority": "High"' in out
    assert "dry run: nothing was produced or sent" in out


def test_a_failed_expectation_exits_1_and_says_which() -> None:
    code, out = run("-c", str(CALLBACK), "-a", str(AGENTS), "--expect", "complaint", "--expect-not", "crm-case-update")
    assert code == 1
    assert "expected flow 'complaint' to fire; it did not" in out
    assert "expected flow 'crm-case-update' not to fire; it did" in out
    code, out = run("-c", str(CALLBACK), "-a", str(AGENTS), "--expect", "no-such-flow")
    assert code == 1 and "expected flow 'no-such-flow' does not exist" in out


def test_a_draft_flow_is_tried_as_it_will_run_once_published(tmp_path: Path) -> None:
    write(
        tmp_path,
        "support.yaml",
        """
        agent: support-line
        flows:
          - id: pilot-alert
            draft: true
            when: {end_reason: CUSTOMER_HANGUP}
            actions: [{type: team_alert, message: "{{customer_name}} hung up", teammates: [dana]}]
        """,
    )
    code, out = as_json("-c", str(CALLBACK), "-a", str(tmp_path), "--expect", "pilot-alert")
    assert code == 0 and out["fired"] == ["pilot-alert"]
    [alert] = out["actions"]
    assert alert["topic"] == "postcall.actions.team-alert.v1" and alert["value"]["teammates"] == ["dana"]


def test_a_draft_file_is_tried_instead_of_the_published_one(tmp_path: Path) -> None:
    shutil.copy(AGENTS / "support-line.yaml", tmp_path / "support-line.yaml")
    write(
        tmp_path,
        "support-line.draft.yaml",
        """
        agent: support-line
        draft: true
        flows: [{id: only-this, actions: [{type: task, title: "draft"}]}]
        """,
    )
    code, out = as_json("-c", str(CALLBACK), "-a", str(tmp_path))
    assert code == 0 and out["fired"] == ["only-this"]
    assert out["config_source"].endswith("support-line.draft.yaml")


def test_an_extracted_conversation_is_routed_as_it_is(tmp_path: Path) -> None:
    write(
        tmp_path,
        "support.yaml",
        """
        agent: support-line
        extraction: {fields: [{name: severity, type: enum, values: [low, high]}]}
        flows:
          - {id: high, when: {field: severity, op: "==", value: high}, actions: [{type: task, title: "{{severity}}"}]}
        """,
    )
    extracted = event(fields={"severity": "high"}).model_dump_json().encode()
    code, out = as_json("-c", "-", "-a", str(tmp_path), "--expect", "high", stdin=extracted)
    assert code == 0 and out["input_kind"] == "conversation-extracted"
    assert out["extraction"]["provider"] == "test"  # not extracted again
    assert out["actions"][0]["value"]["title"] == "high"


def test_an_extracted_conversation_is_routed_for_the_agent_named(tmp_path: Path) -> None:
    """--agent was applied to a ConversationEnded and a vendor payload but silently ignored for a
    ConversationExtracted: its own agent (support-line) was routed, or 'no configuration' refused it."""
    write(
        tmp_path,
        "new.yaml",
        "agent: new-line\nflows: [{id: every-call, actions: [{type: task, title: 'for {{agent_name}}'}]}]\n",
    )
    extracted = event(fields={"severity": "high"}).model_dump_json().encode()
    args = ["-c", "-", "-a", str(tmp_path), "--agent", "new-line", "--expect", "every-call"]
    code, out = as_json(*args, stdin=extracted)
    assert code == 0 and out["input_kind"] == "conversation-extracted", out["error"]
    assert out["agent"]["id"] == "new-line" and out["decision_trace"]["agent_id"] == "new-line"
    assert out["extraction"]["provider"] == "test"  # still routed as it is


def test_a_configuration_with_problems_exits_1_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "support.yaml", "agent: support-line\nflows: [{id: x, actions: [{type: webhok}]}]\n")
    code, out = run("-c", str(CALLBACK), "-a", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'support.yaml'}:2: flows[0].actions[0]: unknown action type 'webhok'" in out
    assert "the configuration of agent 'support-line' version '3' has problems" in out


def test_an_agent_without_configuration_exits_1(tmp_path: Path) -> None:
    write(tmp_path, "other.yaml", "agent: other\nflows: [{id: x, actions: [{type: task, title: t}]}]\n")
    code, out = run("-c", str(CALLBACK), "-a", str(tmp_path))
    assert code == 1 and "no configuration (published or draft) for agent 'support-line'" in out


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"conversation_id": "c"}', "not a valid ConversationEnded"),
        (b'{"message": {"type": "end-of-call-report"}}', "not a valid Vapi server message"),
        (b'{"message": {"type": "status-update", "call": {}}}', "Vapi server message is not a finished conversation"),
        (b'{"event": "call_analyzed", "call": {}}', "not a valid Retell call webhook"),
        (b'{"type": "post_call_transcription", "data": {}}', "not a valid ElevenLabs webhook"),
    ],
)
def test_bad_input_exits_1_with_what_is_wrong(payload: bytes, message: str) -> None:
    code, out = run("-c", "-", "-a", str(AGENTS), stdin=payload)
    assert code == 1 and message in out


def test_an_invalid_event_names_each_field_on_its_own_line() -> None:
    """The problems of an invalid event are lines: the report escaped the whole message as one value, so
    they came out as one line joined by a literal '\\x0a' (`not a valid ConversationEnded:\\x0a  agent: ...`)."""
    payload = orjson.loads(CALLBACK.read_bytes())
    del payload["agent"], payload["direction"]
    code, out = run("-c", "-", "-a", str(AGENTS), stdin=orjson.dumps(payload))
    assert code == 1
    assert "\\x0a" not in out
    assert out.splitlines()[-3:] == [
        "✘ not a valid ConversationEnded:",
        "  agent: Field required",
        "  direction: Field required",
    ]


def test_unreadable_input_and_a_missing_folder_are_usage_errors(tmp_path: Path) -> None:
    code, out = run("-c", str(tmp_path / "nope.json"), "-a", str(AGENTS))
    assert code == 2 and "cannot read" in _unboxed(out)
    code, out = run("-c", str(CALLBACK), "-a", str(tmp_path / "nope"))
    assert code == 2 and "is not a folder" in _unboxed(out)


def _unboxed(text: str) -> str:
    """typer's error panel without its frame and line breaks."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("vapi/phone-inbound-with-analysis.json", "vapi"),
        ("retell/phone-voicemail-analyzed.json", "retell"),
        ("elevenlabs/web-with-analysis.json", "elevenlabs"),
    ],
)
def test_a_vendor_payload_is_mapped_by_the_ingress_and_tried_for_the_named_agent(payload: str, kind: str) -> None:
    code, out = as_json(
        "-c", str(ROOT / "examples" / "webhooks" / payload), "-a", str(AGENTS), "--agent", "support-line"
    )
    assert code == 0 and out["ok"] and out["input_kind"] == kind
    assert out["agent"]["id"] == "support-line" and out["decision_trace"]["agent_id"] == "support-line"


def test_a_vendor_payload_for_an_agent_not_configured_says_to_name_the_postcall_agent() -> None:
    """Without --agent, a Vapi payload is tried for the vendor's assistant id, which no file names: the
    answer said only that there is no configuration for it."""
    vapi = ROOT / "examples" / "webhooks" / "vapi" / "phone-inbound-with-analysis.json"
    code, out = as_json("-c", str(vapi), "-a", str(AGENTS))
    assert code == 1 and out["input_kind"] == "vapi", out
    assert out["error"].startswith("no configuration (published or draft) for agent "), out["error"]
    hint = "the Vapi payload names the platform's agent id: name the postcall agent it is for (--agent)"
    assert hint in out["error"]
    code, out = as_json("-c", str(CALLBACK), "-a", str(AGENTS), "--agent", "nobody")
    assert code == 1 and "--agent" not in out["error"]  # not a vendor payload: nothing to add


def test_the_text_report_shows_caller_text_with_every_control_character_visible() -> None:
    """A conversation id, a transcript and so the values, evidence and summary extracted from it are the
    caller's (or a producer's): printed raw, an ESC began a terminal escape (an OSC-8 link whose text lies
    about its target, a clear-screen) and U+202E reversed the line, as `postcall explain` already prevents."""
    osc8 = "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
    call = orjson.loads(CALLBACK.read_bytes())
    call["conversation_id"] = "conv-" + osc8
    for message in call["messages"]:
        message["text"] += " \x1b[2J\u202e"
    code, out = run("-c", "-", "-a", str(AGENTS), "--provider", "heuristic", stdin=orjson.dumps(call))
    assert code == 0, out
    assert "\x1b" not in out and "\u202e" not in out
    assert "conv-\\x1b]8;;https://evil.example" in out and "\\x1b[2J\\u202e" in out


def test_asking_for_the_llm_with_none_configured_is_said_not_tried_with_the_heuristic() -> None:
    """`--provider openai` (the console's "the configured LLM") with no POSTCALL_LLM__* set ran the heuristic
    and said "the agent asks for the openai provider": the one who asked was the user, and the result was
    not the model's. Nothing is extracted; the run fails saying what to set or to pass instead."""
    code, out = as_json("-c", str(CALLBACK), "-a", str(AGENTS), "--provider", "openai")
    assert code == 1 and out["extraction"] is None and out["decision_trace"] is None, out
    assert "--provider openai" in out["error"] and "POSTCALL_LLM__BASE_URL" in out["error"], out["error"]
    assert "--provider heuristic" in out["error"]
