"""`postcall publish --from VENDOR --agent ID`: the ingress turns a vendor's agent id into the postcall agent
configuration through its endpoint's `agents:`; the command line has no endpoint, so `--agent` names it, as
`postcall try --agent` does. Without it a republished call (docs/runbooks.md) kept the vendor's assistant id
and was dead-lettered by the extractor as "no configuration for agent 5d0e3c2a-…"."""

from __future__ import annotations

import orjson

from services.cli.publish import _event
from services.devkit.webhooks import example


def test_agent_names_the_postcall_agent_of_a_vendor_payload() -> None:
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    event = _event(payload, "vapi", "acct-copperline", None, "support-line", "call.json")
    assert event.agent.id == "support-line"
    assert event.agent.name == "Copperline Support Assistant"  # the payload's own name is kept


def test_without_agent_the_vendor_agent_id_is_kept() -> None:
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    event = _event(payload, "vapi", "acct-copperline", None, None, "call.json")
    assert event.agent.id == "5d0e3c2a-91f4-4b7e-a6d8-3c1f9e2b7a40"


def test_agent_is_used_for_a_payload_that_names_none() -> None:
    payload = orjson.loads(example("vapi/phone-inbound-with-analysis.json"))
    del payload["message"]["call"]["assistantId"]
    event = _event(payload, "vapi", "acct-copperline", None, "support-line", "call.json")
    assert event.agent.id == "support-line"
