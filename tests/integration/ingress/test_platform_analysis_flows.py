"""The platform's own analysis drives flows on the real path: signed vendor webhooks over HTTP -> the
ingress -> the real broker -> extractor -> router -> dispatcher -> a receiving HTTP server.

Each vendor's analysis (Vapi structured data and success evaluation, Retell custom analysis data and
sentiment, ElevenLabs data collection results) is tested by `platform.*` conditions and rendered by
`platform.*` templates; a flow whose platform condition does not hold sends nothing and says why.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from schemas.events import DecisionTrace
from schemas.routes import registry
from schemas.topics import DECISIONS
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit import webhooks
from services.devkit.kafka import free_port
from services.devkit.sink import DEMO_SECRETS, Sink
from services.devkit.stack import Stack, skip_backlog
from tests.support.kafka import read_all
from tests.support.wait import until

SUPPORT = """
agent: support-line
flows:
  - id: billing-resolved-by-the-assistant
    when:
      all:
        - {field: platform.issue_category, op: "==", value: billing}
        - {field: platform.successful, op: "==", value: true}
    actions:
      - type: webhook
        destination: crm
        body:
          conversation: "{{conversation_uuid}}"
          note: "Vapi says: {{platform.summary}}"
          resolved: "{{platform.resolved}}"
          email_changed: "{{platform.billing_email_changed}}"
  - id: technician-visit
    when: {field: platform.issue_category, op: in, value: [technical, installation]}
    actions:
      - type: webhook
        destination: crm
        body: {conversation: "{{conversation_uuid}}", category: "{{platform.issue_category}}",
               note: "{{platform.summary | no summary}}", verdict: "{{platform.successful}}"}
  - id: refund-requests
    when: {field: platform.issue_category, op: "==", value: refund}
    actions:
      - {type: webhook, destination: crm, body: {conversation: "{{conversation_uuid}}", refund: true}}
"""

SALES = """
agent: sales-line
flows:
  - id: voicemail-follow-up-from-retell
    when:
      all:
        - {field: platform.follow_up_required, op: "==", value: true}
        - {field: platform.interest_level, op: not_in, value: [high, medium]}
    actions:
      - type: webhook
        destination: crm
        body: {conversation: "{{conversation_uuid}}", sentiment: "{{platform.sentiment}}",
               interest: "{{platform.interest_level}}", note: "{{platform.summary}}"}
"""

DESTINATIONS = f"""
destinations:
  - name: crm
    kind: http
    url: http://127.0.0.1:${{SINK_PORT}}/crm
    signing_secrets:
      - secret_env: CRM_WEBHOOK_SECRET
        demo_default: {DEMO_SECRETS[0]}
    allow_private: true
"""


def payload(name: str, rename: Callable[[dict[str, Any]], None]) -> bytes:
    """A vendor example with a fresh call id, so nothing else on the broker shares its conversation."""
    body = orjson.loads(webhooks.example(name))
    rename(body)
    return orjson.dumps(body)


def post(url: str, platform: str, body: bytes) -> dict[str, Any]:
    headers = webhooks.signed_headers(platform, body, webhooks.DEMO_SECRETS[platform])
    endpoint = f"{url}/webhooks/{platform}/{webhooks.DEMO_ENDPOINT}"
    answer = httpx.post(endpoint, content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    assert found["status"] == "published", found
    return found


async def test_each_vendors_own_analysis_decides_and_fills_flows_through_the_ingress(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    await ensure_topics(kafka, registry(), replication=1)
    await skip_backlog(kafka.bootstrap_servers)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support-line.yaml").write_text(SUPPORT)
    (agents / "sales-line.yaml").write_text(SALES)
    (tmp_path / "destinations.yaml").write_text(DESTINATIONS)
    tag = uuid.uuid4().hex[:8]
    vapi = payload("vapi/phone-inbound-with-analysis.json", lambda b: b["message"]["call"].update(id=f"vapi-{tag}"))
    retell = payload("retell/phone-voicemail-analyzed.json", lambda b: b["call"].update(call_id=f"retell-{tag}"))
    eleven = payload("elevenlabs/web-with-analysis.json", lambda b: b["data"].update(conversation_id=f"el-{tag}"))
    async with Sink(DEMO_SECRETS, smtp_port=0, quiet=True) as sink:
        stack = Stack(
            kafka.bootstrap_servers,
            tmp_path / "logs",
            config_dir=agents,
            destinations_file=tmp_path / "destinations.yaml",
            extra_env={"SINK_PORT": str(sink.port)},
        ).start()
        port = free_port()
        stack.start_ingress(port)
        url = f"http://127.0.0.1:{port}"
        try:
            await webhooks.wait_ready(url)
            ids = {
                "vapi": (await asyncio.to_thread(post, url, "vapi", vapi))["conversation_id"],
                "retell": (await asyncio.to_thread(post, url, "retell", retell))["conversation_id"],
                "elevenlabs": (await asyncio.to_thread(post, url, "elevenlabs", eleven))["conversation_id"],
            }

            def bodies() -> dict[str, dict[str, Any]]:
                found = [r["body"] for r in sink.received if isinstance(r.get("body"), dict)]
                return {cid: b for b in found for cid in ids.values() if b.get("conversation") == cid}

            received = await until("one request per conversation", lambda: len(bodies()) == 3 and bodies(), timeout=120)
            assert not stack.dead(), f"a service exited: {[p.label for p in stack.dead()]}"
        finally:
            stack.stop()

    assert received[ids["vapi"]] == {
        "conversation": ids["vapi"],
        "note": "Vapi says: Priya Raman asked to send invoices to accounts@ramanhvac.com; "
        "the assistant updated the billing email.",
        "resolved": True,  # an exact {{platform.x}} keeps the platform's JSON type
        "email_changed": True,
    }
    assert received[ids["elevenlabs"]] == {
        "conversation": ids["elevenlabs"],
        "category": "technical",
        "note": "The caller asked to confirm tomorrow's technician visit; the agent confirmed the 9-11 window.",
        "verdict": True,
    }
    assert received[ids["retell"]] == {
        "conversation": ids["retell"],
        "sentiment": "Neutral",
        "interest": "none",
        "note": "The agent reached Luis Ortega's voicemail and left a follow-up message about the webinar.",
    }
    # one request each: the refund flow's platform condition held for none of them
    assert sum(1 for r in sink.received if isinstance(r.get("body"), dict) and "refund" in r["body"]) == 0
    traces = [DecisionTrace.model_validate_json(r.value) for r in await read_all(kafka, DECISIONS)]
    [vapi_trace] = [t for t in traces if t.conversation_id == ids["vapi"]]
    refund = next(f for f in vapi_trace.flows if f.flow_id == "refund-requests")
    assert not refund.fired
    assert refund.conditions[0].reason == 'platform.issue_category = "billing"; == "refund" is false'
