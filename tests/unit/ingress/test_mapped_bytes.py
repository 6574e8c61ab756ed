"""Every payload of the vendor fixture set (examples/webhooks/) maps to the same published bytes as
before, and those bytes are valid against the published contract (schemas/json/).

tests/unit/ingress/mapped/ holds the encoded ConversationEnded (or the ignore reason) of each fixture,
for an endpoint with agent aliases and for one without: a change to a mapping that changes a published
byte fails here. After a deliberate change, regenerate them with
`python -m tests.unit.ingress.test_mapped_bytes` and review the diff.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from schemas.events import ConversationEnded
from services.devkit.webhooks import WEBHOOK_EXAMPLES
from services.ingress.platforms import MAPPINGS, Context
from services.ingress.publisher import encode_event

GOLDEN = Path(__file__).parent / "mapped"
SCHEMA = orjson.loads((Path(__file__).parents[3] / "schemas/json/ConversationEnded.v1.schema.json").read_bytes())
FIXTURES = sorted(str(p.relative_to(WEBHOOK_EXAMPLES)) for p in WEBHOOK_EXAMPLES.glob("*/*.json"))
RECEIVED = datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
CONTEXTS = {
    "aliased": Context(
        account_id="acct-copperline",
        account_name="Copperline",
        received_at=RECEIVED,
        agents={
            "5d0e3c2a-91f4-4b7e-a6d8-3c1f9e2b7a40": ("support-line", "Copperline Support Assistant"),
            "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD": ("sales-line", None),
            "agent_7101k2x5m9fjv3q8a0e6r4t1yz": ("support-line", "Support (ElevenLabs)"),
        },
        default_agent_id="fallback-agent",
        publish_on=("call_analyzed", "call_ended"),
    ),
    "plain": Context(
        account_id="acct-2", account_name=None, received_at=RECEIVED, agents={}, publish_on=("call_analyzed",)
    ),
}


def published(fixture: str, context: Context) -> bytes:
    """What the ingress publishes for the fixture (the record's value), or why it publishes nothing."""
    platform = fixture.split("/", 1)[0]
    out = MAPPINGS[platform](orjson.loads((WEBHOOK_EXAMPLES / fixture).read_bytes()), context)
    if isinstance(out, ConversationEnded):
        return encode_event(out) + b"\n"  # the record's value as the publisher writes it
    return f"ignored: {out.reason}\n".encode()


def golden(fixture: str, context: str) -> Path:
    return GOLDEN / f"{fixture.removesuffix('.json').replace('/', '-')}.{context}.txt"


@pytest.mark.parametrize("context", sorted(CONTEXTS))
@pytest.mark.parametrize("fixture", FIXTURES)
def test_each_fixture_publishes_the_same_valid_bytes(fixture: str, context: str) -> None:
    got = published(fixture, CONTEXTS[context])
    assert got == golden(fixture, context).read_bytes()
    if not got.startswith(b"ignored: "):
        errors = list(Draft202012Validator(SCHEMA, format_checker=FormatChecker()).iter_errors(orjson.loads(got)))
        assert not errors, [e.message for e in errors]


def test_the_fixture_set_is_covered() -> None:
    assert len(FIXTURES) >= 11 and {f.split("/")[0] for f in FIXTURES} == {"vapi", "retell", "elevenlabs"}
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(golden(f, c).name for f in FIXTURES for c in CONTEXTS)


if __name__ == "__main__":
    for fixture in FIXTURES:
        for name, ctx in CONTEXTS.items():
            golden(fixture, name).write_bytes(published(fixture, ctx))


def test_shared_parts_are_reused_and_a_long_text_is_never_kept() -> None:
    from services.ingress.platforms import common

    payload = orjson.loads((WEBHOOK_EXAMPLES / "retell/phone-voicemail-analyzed.json").read_bytes())
    first, second = (MAPPINGS["retell"](payload, CONTEXTS["plain"]) for _ in range(2))
    assert isinstance(first, ConversationEnded) and isinstance(second, ConversationEnded)
    assert first.end_reason is second.end_reason and first.agent is second.agent and first.account is second.account

    long = "x" * 5000
    payload["call"] |= {"disconnection_reason": long, "agent_name": long}
    kept = (len(common._reasons), len(common._agents))
    event = MAPPINGS["retell"](payload, CONTEXTS["plain"])
    assert isinstance(event, ConversationEnded)
    assert (event.end_reason.raw, event.agent.name) == (long, long)
    assert (len(common._reasons), len(common._agents)) == kept
