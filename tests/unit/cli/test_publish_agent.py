"""`postcall publish --from VENDOR --agent ID`: the ingress turns a vendor's agent id into the postcall agent
configuration through its endpoint's `agents:`; the command line has no endpoint, so `--agent` names it, as
`postcall try --agent` does. Without it a republished call (docs/runbooks.md) kept the vendor's assistant id
and was dead-lettered by the extractor as "no configuration for agent 5d0e3c2a-…"."""

from __future__ import annotations

import orjson
import pytest
import typer

from services.cli.publish import _event
from services.devkit.webhooks import ROOT, example


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


def test_an_account_other_than_the_native_payloads_is_refused_naming_both(capsys: pytest.CaptureFixture[str]) -> None:
    """The ingress's words ("this endpoint publishes for account ...") named an endpoint the command line
    does not have."""
    payload = orjson.loads((ROOT / "examples/conversations/0001-support-resolved-hangup.json").read_bytes())
    with pytest.raises(typer.Exit) as exit_:
        _event(payload, "native", "other-acct", None, None, "call.json")
    assert exit_.value.exit_code == 2
    said = capsys.readouterr().err
    assert "'acct-copperline'" in said and "--account 'other-acct'" in said and "endpoint" not in said, said
