"""The hostile-input corpus: records a platform (or an attacker) could publish, and where each must land.

`write_corpus(path)` writes the plain ones as one kcat input file (`key<TAB>value` per line, published
with `kcat -P -K '\\t' -l`): JSON stays on one line, so tabs and newlines inside it are escaped and the
delimiters are unambiguous even for the invalid UTF-8 record. Records with headers of their own (forged
hop headers, header bytes that are not UTF-8) or no value at all (a tombstone) are published one by
one (`kcat_args`).

Beside the records: a hostile agent (HOSTILE_AGENT: a backtracking-prone `matches` on a caller's
value, Slack text made of caller values, webhooks to hostile receivers), the hostile receivers'
destinations (HOSTILE_DESTINATIONS) and hostile configuration files (HOSTILE_YAML).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from services.devkit.publish import EXAMPLES

BASE = orjson.loads((EXAMPLES / "0001-support-resolved-hangup.json").read_bytes())


@dataclass(frozen=True)
class Case:
    name: str
    key: str
    value: bytes | None  # None: a tombstone
    lands: str  # "dlq:<service>" or "processed"
    reason: str = ""  # substring of the dead letter's reason
    headers: tuple[tuple[str, bytes], ...] = ()  # besides the CloudEvents ones every record gets
    attempts: int | None = 1  # attempts before the dead letter (None: more than one, retry tiers spent)

    @property
    def plain(self) -> bool:
        """Publishable in the one kcat input file."""
        return self.value is not None and not self.headers


SCRIPT = (
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> "
    "</textarea><b>bold?</b> & &amp; Please call me back."
)
SCRIPT_NAME = "<svg onload=alert(1)>Mallory"


def conversation(cid: str, **changes: object) -> dict[str, object]:
    event = {**BASE, "conversation_id": cid, "event_id": f"evt-{cid}"}
    event.update(changes)
    return event


def _nested(depth: int) -> bytes:
    return b'{"conversation_id": "deep", "metadata": ' + b"[" * depth + b"]" * depth + b"}"


OSC8_LINK = "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
CLEAR_SCREEN = "\x1b[2J\x1b[H"
MARKUP_KEY = "conv-[/]" + OSC8_LINK  # crashed `postcall dlq list`; the link fooled the terminal
MARKUP_ID = "conv-[/bold]" + CLEAR_SCREEN  # crashed `postcall explain` / `reextract`
SLACK_NOTE = "Call <!channel> now & see <https://evil.example|https://bank.example/login>"
PATTERN_NOTE = ("word " * 900)[:4095] + "!"  # took hours on a backtracking engine for (.|\s)*refund
FORGED_HOP = (
    ("x-attempts", b"abc"),
    ("x-original-topic", b"postcall.actions.webhook.v1"),
    ("x-retry-due-at", b"nan"),
    ("x-replay-count", b"\xc2\xb2"),  # "²"
    ("x-dlq-service", b"dispatcher"),
)


def hostile_agent_cases(transcript_url: str) -> list[Case]:
    """Conversations of HOSTILE_AGENT, and a claim check on a server that trickles its answer."""
    agent = {"id": "hostile-line"}
    return [
        Case(
            "unsafe-pattern",
            "hostile-pattern",
            orjson.dumps(conversation("hostile-pattern", agent=agent, dynamic_variables={"note": PATTERN_NOTE})),
            "processed",
        ),
        Case(
            "slack-markup",
            "hostile-slack",
            orjson.dumps(
                conversation("hostile-slack", agent=agent, dynamic_variables={"note": SLACK_NOTE + " refund"})
            ),
            "processed",
        ),
        Case(
            "trickling-transcript-server",
            "hostile-transcript",
            orjson.dumps(conversation("hostile-transcript", messages=None, transcript_url=transcript_url)),
            "dlq:extractor",
            "transcript_url did not finish within",
            attempts=None,
        ),
    ]


def cases(transcript_url: str | None = None) -> list[Case]:
    """Every record case; with `transcript_url` (a trickling server) also HOSTILE_AGENT's."""
    big_text = "The customer explains the problem again in great detail. " * 36_000  # ~2 MB
    injection = (
        "{{__import__('os').system('id')}} {{ conversation_summary.__class__.__mro__ }} ${7*7} "
        "{% for x in range(9) %}{{x}}{% endfor %} {{customer_email}}"
    )
    messages = [{"role": "customer", "text": injection}, *BASE["messages"]]
    markup = [{"role": "customer", "text": SCRIPT}, *BASE["messages"]]
    return [
        Case("invalid-utf8", "hostile-utf8", b'{"conversation_id": "\xff\xfe\xfd"}', "dlq:extractor", "not valid JSON"),
        Case("deeply-nested", "deep", _nested(20_000), "dlq:extractor", "not valid JSON"),
        Case("not-an-object", "array", b"[1, 2, 3]", "dlq:extractor", "schema violation"),
        Case(
            "wrong-types",
            "hostile-types",
            orjson.dumps(conversation("hostile-types", direction=5, duration_seconds="long")),
            "dlq:extractor",
            "schema violation",
        ),
        Case(
            "missing-ids",
            "hostile-missing",
            orjson.dumps({k: v for k, v in conversation("x").items() if k not in ("conversation_id", "event_id")}),
            "dlq:extractor",
            "conversation_id: Field required",
        ),
        Case(
            "unknown-agent",
            "hostile-agent",
            orjson.dumps(conversation("hostile-agent", agent={"id": "nobody-configured-me"})),
            "dlq:extractor",
            "nobody-configured-me",
        ),
        Case(
            "year-one-start",
            "hostile-year-1",
            orjson.dumps(conversation("hostile-year-1", started_at="0001-01-01T00:00:00+14:00")),
            "dlq:extractor",
            "time out of range",
        ),
        Case(
            "year-9999-end",
            "hostile-year-9999",
            orjson.dumps(conversation("hostile-year-9999", ended_at="9999-12-31T23:50:00-14:00")),
            "dlq:extractor",
            "time out of range",
        ),
        Case(
            "unknown-end-reason",
            "hostile-reason",
            orjson.dumps(conversation("hostile-reason", end_reason={"raw": "ufo", "source_platform": "vapi"})),
            "processed",
        ),
        Case(
            "canonical-outside-the-vocabulary",
            "hostile-canonical",
            orjson.dumps(conversation("hostile-canonical", end_reason={"canonical": "ALIEN_ABDUCTION", "raw": "ufo"})),
            "dlq:extractor",
            "end_reason.canonical",
        ),
        Case(
            "naive-time",
            "hostile-naive",
            orjson.dumps(conversation("hostile-naive", started_at="2026-11-22T10:00:00")),
            "dlq:extractor",
            "started_at",
        ),
        Case(
            "two-megabyte-transcript",
            "hostile-big",
            orjson.dumps(
                conversation("hostile-big", messages=[*BASE["messages"], {"role": "customer", "text": big_text}])
            ),
            "processed",
        ),
        Case(
            "template-injection",
            "hostile-inject",
            orjson.dumps(conversation("hostile-inject", messages=messages)),
            "processed",
        ),
        Case(
            "script-injection",
            "hostile-script",
            orjson.dumps(conversation("hostile-script", messages=markup, customer={"name": SCRIPT_NAME})),
            "processed",
        ),
        Case("duplicate-event-1", "hostile-dup", orjson.dumps(conversation("hostile-dup")), "processed"),
        Case("duplicate-event-2", "hostile-dup", orjson.dumps(conversation("hostile-dup")), "processed"),
        Case("tombstone", "hostile-tombstone", None, "dlq:extractor", "tombstone"),
        Case(
            "forged-hop-headers",
            "hostile-forged",
            orjson.dumps(conversation("hostile-forged")),
            "processed",
            headers=FORGED_HOP,
        ),
        Case(
            "header-bytes-not-utf8",
            "hostile-header-bytes",
            orjson.dumps(conversation("hostile-header-bytes")),
            "processed",
            headers=(("[/bold]", b"\xff\xfe"), ("x-note", OSC8_LINK.encode())),
        ),
        Case(
            "markup-and-escapes-in-a-dead-lettered-key",
            MARKUP_KEY,
            orjson.dumps({"conversation_id": MARKUP_KEY}),
            "dlq:extractor",
            "schema violation",
            headers=(("x-replay-count", b"abc"),),
        ),
        Case("markup-and-escapes-in-an-id", MARKUP_ID, orjson.dumps(conversation(MARKUP_ID)), "processed"),
        *(hostile_agent_cases(transcript_url) if transcript_url else []),
    ]


def kcat_args(case: Case) -> tuple[list[bytes], bytes]:
    """kcat arguments and standard input that publish one non-plain case."""
    args = [b"-K", b"\t", b"-Z"] + [a for k, v in case.headers for a in (b"-H", k.encode() + b"=" + v)]
    return args, case.key.encode() + b"\t" + (case.value or b"")


# ── The hostile agent and the hostile receivers (the stack's configuration in the corpus test) ─────

HOSTILE_AGENT = """\
agent: hostile-line
flows:
  - id: refund-pattern
    when: {field: dynamic_variables.note, op: matches, value: '(.|\\s)*refund'}
    actions:
      - {type: slack, destination: ops-slack, text: "<!here> refund asked: {{dynamic_variables.note}}"}
  - id: hostile-receivers
    when: {field: dynamic_variables.note, op: exists}
    actions:
      - {type: webhook, destination: hostile-retry-after, body: {id: "{{conversation_uuid}}"}}
      - {type: webhook, destination: hostile-flood, body: {id: "{{conversation_uuid}}"}}
      - {type: webhook, destination: hostile-drip, body: {id: "{{conversation_uuid}}"}}
"""

HOSTILE_DESTINATIONS = """
  - {name: hostile-retry-after, kind: http, url: "http://127.0.0.1:${SINK_PORT}/hostile/retry-after",
     allow_private: true}
  - {name: hostile-flood, kind: http, url: "http://127.0.0.1:${SINK_PORT}/hostile/flood", allow_private: true}
  - {name: hostile-drip, kind: http, url: "http://127.0.0.1:${SINK_PORT}/hostile/drip", allow_private: true,
     timeout_seconds: 1}
"""


# ── Hostile configuration: what an agent author (or a bad merge) can put in a YAML file ───────────


def yaml_bomb(levels: int = 6, width: int = 10) -> str:
    """A few hundred bytes of nested aliases that expand to width**levels nodes (a million here)."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# (case id, file text, line, the message after "YAML: ") for files the loaders must refuse with a line
HOSTILE_YAML: list[tuple[str, str, int, str]] = [
    ("alias-bomb", yaml_bomb(), 1, "anchors (&name) are not allowed in configuration"),
    ("alias", "x: 1\ny: *x\n", 2, "aliases (*name) are not allowed in configuration"),
    ("merge-key", "base: &b {kind: http}\nother: {<<: *b}\n", 1, "anchors (&name) are not allowed in configuration"),
    ("binary-tag", "x: 1\ny: !!binary aGVsbG8=\n", 2, "the tag !!binary is not allowed in configuration"),
    ("omap-tag", "x: !!omap [a: 1]\n", 1, "the tag !!omap is not allowed in configuration"),
    ("custom-tag", "x:\n  - !evil {a: 1}\n", 2, "the tag !evil is not allowed in configuration"),
    ("deep-nesting", "x: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested deeper than 64 levels"),
    ("not-utf8", "x: 1\ny: caf\udcc3\n", 2, "not UTF-8 text (invalid continuation byte)"),
    # int() refuses decimal text over sys.get_int_max_str_digits(): a ValueError out of the reader
    # a lone surrogate no UTF-8 writer takes: the router's orjson raised TypeError compiling the agent
    (
        "half-a-character",
        'x: 1\ny: "\\ud83d alone"\n',
        2,
        "\\ud83d is half of a character (a UTF-16 surrogate): "
        "write the character itself, its two \\u escapes together, or one \\U escape (\\U0001F600)",
    ),
    ("long-integer", "x: 1\ny: -" + "9" * 5000 + "\n", 2, "an integer of more than 4300 digits"),
]


def write_corpus(path: Path, transcript_url: str | None = None) -> list[Case]:
    """The plain cases into one kcat input file; returns every case (the others: `kcat_args`)."""
    all_cases = cases(transcript_url)
    with path.open("wb") as f:
        for case in (c for c in all_cases if c.plain):
            assert case.value is not None and b"\n" not in case.value and b"\t" not in case.value, case.name
            f.write(case.key.encode() + b"\t" + case.value + b"\n")
    return all_cases
