"""The right data reaches the receiver once: the three services as processes on the real broker, the
extractor talking to an OpenAI-compatible server that fails on demand, a signing receiver.

- An LLM outage past the retry tiers fails the extraction: the CRM flow (it sends extracted fields) is
  held, nothing sent; the end-reason flow runs. Re-extraction after recovery delivers the CRM update once,
  with the real values, and repeats nothing.
- Editing another flow (and adding a field no flow uses) and re-processing repeats nothing.
- `postcall reextract --redeliver` sends the changed action under a new id with `postcall-supersedes`,
  and nothing whose content did not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from schemas.events import ActionCompleted, DecisionTrace
from schemas.routes import registry
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, DECISIONS
from services.cli.reextract import Filters, republish, select
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.sink import DEMO_SECRETS, Sink
from services.devkit.stack import Stack, skip_backlog
from tests.support.fake_llm import FakeLLM, Script
from tests.support.kafka import produce, read_all
from tests.support.wait import until
from tests.unit.extractor.conftest import conversation

AGENT = """
agent: support-line
extraction:
  provider: openai
  fields:
    - {name: interest_level, type: enum, values: [high, medium, low, none], description: "How interested"}
flows:
  - id: crm-update
    actions:
      - type: webhook
        destination: crm
        body: {interest: "{{interest_level}}", summary: "{{conversation_summary}}", reason: "{{end_reason}}"}
  - id: log-call
    actions:
      - {type: webhook, destination: crm, body: {logged: "{{conversation_uuid}}", reason: "{{end_reason}}"}}
  - id: voicemail-follow-up
    when: {end_reason: VOICEMAIL}
    actions:
      - {type: webhook, destination: crm, body: {voicemail: "{{conversation_uuid}}"}}
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


@asynccontextmanager
async def system(kafka: KafkaSettings, tmp_path: Path, llm: FakeLLM) -> AsyncIterator[tuple[Sink, Path]]:
    await ensure_topics(kafka, registry(), replication=1)
    await skip_backlog(kafka.bootstrap_servers)  # other tests' records on the session broker are not ours
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "support-line.yaml").write_text(AGENT)
    (tmp_path / "destinations.yaml").write_text(DESTINATIONS)
    async with Sink(DEMO_SECRETS, smtp_port=0, quiet=True) as sink:
        env = {
            "SINK_PORT": str(sink.port),
            "extractor:POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[0.5, 0.5]",  # the recorder has no tiers
            "extractor:POSTCALL_RUNTIME__RETRY_JITTER": "0",
            "extractor:POSTCALL_LLM__BASE_URL": llm.base_url,
            "extractor:POSTCALL_LLM__MODEL": "fake",
            "extractor:POSTCALL_LLM__STRUCTURED_OUTPUT": "json_schema",
            "extractor:POSTCALL_CIRCUIT__FAILURE_THRESHOLD": "1000",  # the outage exhausts the tiers
            "router:POSTCALL_RELOAD_INTERVAL_SECONDS": "0.5",
        }
        stack = Stack(
            kafka.bootstrap_servers,
            tmp_path / "logs",
            config_dir=agents,
            destinations_file=tmp_path / "destinations.yaml",
            extra_env=env,
        ).start()
        try:
            yield sink, agents / "support-line.yaml"
            assert not stack.dead(), f"a service exited: {[p.label for p in stack.dead()]}"
        finally:
            stack.stop()


async def publish(kafka: KafkaSettings, cid: str) -> None:
    event = conversation("0005").model_copy(update={"conversation_id": cid, "event_id": f"evt-{cid}"})
    await produce(kafka, CONVERSATION_ENDED, [(cid, event)])


async def reextract(kafka: KafkaSettings, cid: str, redeliver: bool = False) -> None:
    chosen = await select(kafka, Filters(ids=frozenset({cid})))
    assert len(chosen) == 1
    assert await republish(kafka, chosen, 50.0, None, redeliver=redeliver) == 1


async def traces(kafka: KafkaSettings, cid: str) -> list[DecisionTrace]:
    return [DecisionTrace.model_validate_json(r.value) for r in await read_all(kafka, DECISIONS) if r.key == cid]


async def results(kafka: KafkaSettings, cid: str) -> list[ActionCompleted]:
    found = [ActionCompleted.model_validate_json(r.value) for r in await read_all(kafka, ACTION_RESULTS) if r.value]
    return [r for r in found if r.conversation_id == cid]


def requests_for(sink: Sink, cid: str) -> list[dict[str, Any]]:
    return [r for r in sink.received if cid in str(r.get("body"))]


async def test_an_llm_outage_holds_the_crm_flow_and_reextraction_delivers_it_once_with_real_values(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    cid = "conv-outage-1"
    with FakeLLM(Script(fields={"interest_level": "high"}, summary="Wants the premium plan.")) as llm:
        llm.mode = "error"  # 500 on every request: retries, then the dead letter and a failed extraction
        async with system(kafka, tmp_path, llm) as (sink, _):
            await publish(kafka, cid)
            [trace] = await until("the failed extraction's trace", lambda: traces(kafka, cid))
            assert trace.extraction_status == "failed"
            crm = next(f for f in trace.flows if f.flow_id == "crm-update")
            assert (crm.held, crm.fired, crm.actions) == (True, False, [])
            assert "template uses {{interest_level}}" in crm.reason
            await until("the end-reason flow's delivery", lambda: [r for r in sink.received if r["path"] == "/crm"])
            await asyncio.sleep(2)  # anything the CRM flow would wrongly send arrives by now
            assert [r["body"] for r in sink.received] == [{"logged": cid, "reason": "CUSTOMER_HANGUP"}]

            llm.mode = "ok"
            await reextract(kafka, cid)
            await until("the CRM update", lambda: len(sink.received) >= 2)
            await until("the log-call repeat's skip", lambda: _skipped(kafka, cid))
            await asyncio.sleep(2)
            bodies = [r["body"] for r in sink.received]
            assert bodies == [
                {"logged": cid, "reason": "CUSTOMER_HANGUP"},
                {"interest": "high", "summary": "Wants the premium plan.", "reason": "CUSTOMER_HANGUP"},
            ]
            assert all(r["verified"] and r["count"] == 1 for r in sink.received)  # signed, each id once


async def _skipped(kafka: KafkaSettings, cid: str) -> bool:
    return any(r.outcome == "skipped_duplicate" for r in await results(kafka, cid))


async def test_editing_another_flow_repeats_nothing_and_redeliver_sends_only_changed_content(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    cid = "conv-edit-1"
    with FakeLLM(Script(fields={"interest_level": "high"}, summary="Wants a demo.")) as llm:
        async with system(kafka, tmp_path, llm) as (sink, agent_file):
            await publish(kafka, cid)
            await until("both deliveries", lambda: len(sink.received) >= 2)
            first = {r["body"].get("interest", "log"): r["webhook_id"] for r in sink.received}

            # another flow edited and a field no flow uses added: every id of this conversation stays
            edited = AGENT.replace("{voicemail: ", "{voicemail_left: ").replace(
                "    - {name: interest_level", "    - {name: budget, type: number}\n    - {name: interest_level"
            )
            agent_file.write_text(edited)
            await asyncio.sleep(3)  # the router reloads the folder every 0.5 s
            await reextract(kafka, cid)
            await until("two skips", lambda: _count(kafka, cid, "skipped_duplicate", 2))
            await asyncio.sleep(2)
            assert len(sink.received) == 2, [r["body"] for r in sink.received]

            # a deliberate re-delivery: the changed CRM update goes out once, superseding the first
            llm.rescript(Script(fields={"interest_level": "low"}, summary="Wants a demo."))
            await reextract(kafka, cid, redeliver=True)
            await until("the re-delivery", lambda: len(sink.received) >= 3)
            await until("the unchanged one's skip", lambda: _count(kafka, cid, "skipped_duplicate", 3))
            again = sink.received[2]
            assert again["body"] == {"interest": "low", "summary": "Wants a demo.", "reason": "CUSTOMER_HANGUP"}
            assert again["supersedes"] == first["high"] and again["webhook_id"] not in first.values()
            assert again["verified"]

            # the same re-delivery again: nothing changed since, nothing sent
            await reextract(kafka, cid, redeliver=True)
            await until("two more skips", lambda: _count(kafka, cid, "skipped_duplicate", 5))
            await asyncio.sleep(2)
            assert len(sink.received) == 3


async def _count(kafka: KafkaSettings, cid: str, outcome: str, n: int) -> bool:
    return sum(r.outcome == outcome for r in await results(kafka, cid)) >= n
