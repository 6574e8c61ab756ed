"""Operator commands print Kafka data as plain text: markup never parsed, control characters escaped,
malformed headers tolerated."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from schemas import headers as h
from schemas.events import ActionCompleted, ConditionResult, DecisionTrace, FlowDecision, PlannedAction
from services.cli.dlq import DeadLetter, letters_table, print_letters, replay_headers, replay_records
from services.cli.explain import Story, render
from services.cli.plain import escape_controls, plain

OSC8 = "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
HOSTILE = ["conv-[/]", "[/bold]", "[link=https://evil.example]x[/link]", OSC8, "\x1b[2J\x1b[H", "a\u202eb", "\x9b2J"]


def printed(*renderables: object) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=300, color_system=None)
    for r in renderables:
        console.print(r)
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("conv-1", "conv-1"),
        ("[/]", "[/]"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\u202eb", "a\\u202eb"),
        ("\x9b", "\\x9b"),
        ("tab\there", "tab\\x09here"),
        ("ünïcode ok", "ünïcode ok"),
    ],
)
def test_control_and_format_characters_are_escaped_and_nothing_else(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def letter(key: str, **headers: str) -> DeadLetter:
    base = {
        h.ORIGINAL_TOPIC: "postcall.conversation-extracted.v1",
        h.EXCEPTION_MESSAGE: key,
        h.DLQ_FAILURE_CATEGORY: "poison",
    }
    return DeadLetter("postcall.router.dlq.v1", 0, 7, 0, key.encode(), b"{}", {**base, **headers})


@pytest.mark.parametrize("key", HOSTILE)
def test_dlq_list_prints_a_hostile_key_and_reason_as_text(key: str) -> None:
    """A key `conv-[/]` crashed `postcall dlq list`; escape sequences reached the terminal."""
    out = printed(letters_table([letter(key, **{"[/bold]": "[/]", h.ATTEMPTS: OSC8})]))
    assert "\x1b" not in out.replace("\x1b[0m", "") and "\x9b" not in out and "\u202e" not in out
    assert escape_controls(key) in out


@pytest.mark.parametrize("width", [60, 80, 200])
def test_dlq_list_never_cuts_the_coordinates_or_the_key_and_shows_every_column(width: int) -> None:
    """At 80 columns a 42-character key was cut and the other five columns vanished."""
    key = "conv-2026-0005-callback-request-0123456789"
    long = DeadLetter("postcall.dispatcher.dlq.v1", 2, 1234567, 0, key.encode(), b"{}", letter(key).headers)
    out = io.StringIO()
    print_letters([long, letter("k")], Console(file=out, width=width, color_system=None))
    lines = out.getvalue().splitlines()
    for whole in ("postcall.dispatcher.dlq.v1:2:1234567", key, "postcall.router.dlq.v1:0:7"):
        assert any(whole in line for line in lines), f"{whole} cut at {width} columns:\n{out.getvalue()}"
    assert "…" not in out.getvalue()
    assert "poison" in out.getvalue()
    assert "postcall.conversation-extracted.v1" in out.getvalue().replace("\n", "").replace("│", "").replace(" ", "")


@pytest.mark.parametrize("width", [60, 200])
@pytest.mark.parametrize("key", HOSTILE)
def test_dlq_list_prints_a_hostile_key_as_text_in_either_layout(key: str, width: int) -> None:
    out = io.StringIO()
    print_letters([letter(key, **{h.ATTEMPTS: OSC8})], Console(file=out, width=width, force_terminal=True))
    printed_text = out.getvalue()
    assert "\x9b" not in printed_text and "\u202e" not in printed_text and escape_controls(key) in printed_text
    assert "\x1b]8" not in printed_text and "\x1b[2J" not in printed_text


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_header_prints_as_text(value: str) -> None:
    out = printed(plain(value))
    assert "\x1b" not in out and escape_controls(value) in out


@pytest.mark.parametrize("count", ["abc", "", "-1", "²", "9" * 50, " 3 "])
def test_a_malformed_replay_count_counts_as_zero_or_its_number(count: str) -> None:
    """A forged `x-replay-count: abc` broke the replay."""
    headers = replay_headers(letter("k", **{h.REPLAY_COUNT: count}), "ops@host")
    assert headers[h.REPLAY_COUNT] == ("4" if count == " 3 " else "1")


def test_a_replayed_reextraction_is_not_audited_again_as_the_first_operators_reextraction() -> None:
    """alice's `reextract` copy failed and was dead-lettered; bob replays it: the recorder must not write
    a second 'reextract by alice' row for the replayed copy (it audits bob's replay from the marker)."""
    copy = letter("k", **{h.REEXTRACTED_BY: "alice@ops", h.REEXTRACT_OF: "evt-1"})
    headers = replay_headers(copy, "bob@ops")
    assert h.REEXTRACTED_BY not in headers
    assert headers[h.REEXTRACT_OF] == "evt-1" and headers[h.REPLAYED_BY] == "bob@ops"


def test_a_forged_original_topic_never_aims_a_replay_elsewhere() -> None:
    good = letter("a")
    to_actions = letter("b", **{h.ORIGINAL_TOPIC: "postcall.actions.webhook.v1"})
    to_retry = letter("c", **{h.ORIGINAL_TOPIC: "postcall.router.retry-1.v1"})
    missing = DeadLetter("postcall.router.dlq.v1", 0, 9, 0, b"d", b"{}", {})
    outgoing = replay_records([good, to_actions, to_retry, missing], "ops@host")
    assert [o.topic for o in outgoing] == ["postcall.conversation-extracted.v1"]


def test_explain_prints_a_hostile_trace_as_text() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    trace = DecisionTrace(
        event_id="e",
        conversation_id="conv-[/]" + OSC8,
        agent_id="[/bold]",
        config_revision="r",
        extraction_status="ok",
        decided_at=at,
        flows=[
            FlowDecision(
                flow_id="[red]f",
                enabled=True,
                fired=True,
                reason="\x1b[2J",
                conditions=[
                    ConditionResult(path="when", kind="field", passed=True, expected="[/]", actual=OSC8, reason="[/]"),
                    ConditionResult(
                        path="actions[0]",
                        kind="action",
                        passed=True,
                        expected="webhook",
                        actual="a1",
                        reason="POST [/]",
                    ),
                ],
                actions=[PlannedAction(action_id="a1", type="webhook", topic="t", destination="[/]")],
            )
        ],
    )
    done = ActionCompleted(
        action_id="a1", conversation_id="c", type="webhook", outcome="failed", attempts=1, error=OSC8, completed_at=at
    )
    out = io.StringIO()
    render(
        Story("c", decisions=[trace], results={"a1": done}), Console(file=out, force_terminal=True, color_system=None)
    )
    assert "\x1b]8" not in out.getvalue() and "\x1b[2J" not in out.getvalue()
    assert "conv-[/]" in out.getvalue() and "[/bold]" in out.getvalue()


def test_explain_names_an_emails_status_code_as_the_smtp_servers_reply() -> None:
    """An email's 250 (the SMTP server's reply) was shown as "HTTP 250"."""
    at = datetime(2026, 3, 1, tzinfo=UTC)
    planned = [PlannedAction(action_id=f"a-{t}", type=t, topic="t", destination="d") for t in ("email", "webhook")]
    trace = DecisionTrace(
        event_id="e",
        conversation_id="c",
        agent_id="support-line",
        config_revision="r",
        extraction_status="ok",
        decided_at=at,
        flows=[
            FlowDecision(
                flow_id="f",
                enabled=True,
                fired=True,
                reason="when matched",
                conditions=[
                    ConditionResult(
                        path=f"actions[{i}]",
                        kind="action",
                        passed=True,
                        expected=p.type,
                        actual=p.action_id,
                        reason="sent",
                    )
                    for i, p in enumerate(planned)
                ],
                actions=planned,
            )
        ],
    )
    story = Story("c", decisions=[trace])
    story.add_results(
        [
            ActionCompleted(action_id="a-email", conversation_id="c", type="email", outcome="failed", attempts=1,
                            status_code=451, completed_at=at),
            ActionCompleted(action_id="a-email", conversation_id="c", type="email", outcome="delivered", attempts=2,
                            status_code=250, completed_at=at),
            ActionCompleted(action_id="a-webhook", conversation_id="c", type="webhook", outcome="delivered",
                            attempts=1, status_code=200, completed_at=at),
        ]
    )  # fmt: skip
    out = io.StringIO()
    render(story, Console(file=out, force_terminal=True, color_system=None, width=200))
    text = out.getvalue()
    assert "SMTP 250" in text and "SMTP 451" in text and "HTTP 200" in text
    assert "HTTP 250" not in text and "HTTP 451" not in text
