"""The router on the real broker, in-process with the real Runtime: the example agents route the example
conversations, a configuration edited while running changes the revision in the outputs, and a
conversation for an agent with no configuration is dead-lettered with its reason in headers.

Input and output topics are unique per test; the dead-letter topic is the router's own
(postcall.router.dlq.v1), read by this test's unique conversation ids."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import headers as h
from schemas.agents import trigger_id
from schemas.events import ConversationEnded, ConversationExtracted, ExtractedValue, Extraction, TriggerAnswer
from schemas.routes import ROUTER, Route
from schemas.topics import ACTION_TYPES, CONVERSATION_EXTRACTED, DECISIONS, action_topic, dead_letter_topic
from services.common.api import Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from tests.support.kafka import Received, create_topics, produce, read_all, unique

ROOT = Path(__file__).resolve().parents[3]
DLQ = dead_letter_topic("router")
CALLBACK = "Did the customer ask to be called back, request a follow-up call, or ask for someone to contact them later?"
COMPLAINT = (
    "Did the customer express dissatisfaction, frustration, mention being unhappy, or threaten to cancel/leave "
    "negative review?"
)


@dataclass
class Topics:
    input: str
    decisions: str
    prefix: str

    def action(self, action_type: str) -> str:
        return f"{self.prefix}.{action_type}"

    def all(self) -> list[str]:
        return [self.input, self.decisions, DLQ, *(self.action(t) for t in ACTION_TYPES)]

    def route(self) -> Route:
        """The router's route on this test's topics (its dead-letter topic stays the router's own)."""
        names = {CONVERSATION_EXTRACTED: self.input, DECISIONS: self.decisions}
        names |= {action_topic(t): self.action(t) for t in ACTION_TYPES}
        return ROUTER.renamed(lambda name: names.get(name, name))


async def make_topics(kafka: KafkaSettings) -> Topics:
    topics = Topics(unique("extracted"), unique("decisions"), unique("actions"))
    await create_topics(kafka, topics.all())
    return topics


@asynccontextmanager
async def router(
    kafka: KafkaSettings, topics: Topics, config_dir: Path, idle_exit: float | None = 1.5, reload_seconds: float = 0.2
) -> AsyncIterator[tuple[Runtime, CatalogHolder]]:
    catalog = CatalogHolder(config_dir, "(not available)")
    settings = RuntimeSettings(
        metrics_port=0, retry_delays_seconds=[], idle_exit_seconds=idle_exit, commit_interval_seconds=0.2
    )
    service = Service(topics.route(), RouterHandler(catalog).handle)
    runtime = Runtime(service, kafka=kafka, settings=settings, group_id=unique("router"))
    async with catalog.watching(reload_seconds):
        task = asyncio.create_task(runtime.run())
        try:
            yield runtime, catalog
        finally:
            if idle_exit is None:
                runtime.stop()
            await asyncio.wait_for(task, 60)


def extracted(
    example: str,
    conversation_id: str | None = None,
    agent: str | None = None,
    *,
    fields: dict[str, Any] | None = None,
    yes: tuple[str, ...] = (),
    recipients: dict[str, list[str]] | None = None,
) -> ConversationExtracted:
    data = ConversationEnded.model_validate_json((ROOT / "examples" / "conversations" / example).read_bytes())
    update: dict[str, Any] = {}
    if conversation_id:
        update["conversation_id"] = conversation_id
    if agent:
        update["agent"] = data.agent.model_copy(update={"id": agent})
    conversation = data.model_copy(update=update)
    extraction = Extraction(
        status="ok",
        provider="test",
        config_revision="test",
        summary=f"Summary of {example}.",
        fields={k: ExtractedValue(value=v, confidence=0.9) for k, v in (fields or {}).items()},
        triggers={trigger_id(q): TriggerAnswer(question=q, answer=True) for q in yes},
        recipients=recipients or {},
    )
    return ConversationExtracted(
        event_id=f"x-{conversation.conversation_id}",
        conversation=conversation,
        extraction=extraction,
        extracted_at=datetime.now(UTC),
    )


async def wait_for(kafka: KafkaSettings, topic: str, keys: set[str], timeout: float = 60) -> list[Received]:
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in await read_all(kafka, topic) if r.key in keys]
        if {r.key for r in got} >= keys or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.3)


async def test_example_agents_route_example_conversations(kafka: KafkaSettings) -> None:
    topics = await make_topics(kafka)
    records = [
        extracted("0001-support-resolved-hangup.json", fields={"resolved": True, "issue_category": "account"}),
        extracted("0002-warranty-blind-transfer.json"),
        extracted("0003-data-loss-ccaas-escalation.json", fields={"severity": "critical"}),
        extracted("0004-sales-voicemail.json"),
        extracted("0005-callback-request.json", yes=(CALLBACK,)),
        extracted(
            "0006-complaint-threatens-cancel.json",
            yes=(COMPLAINT,),
            recipients={"complaints": ["billing-lead@copperline.example"]},
        ),
        extracted(
            "0008-hot-lead-demo.json",
            fields={"interest_level": "high", "follow_up_required": True, "follow_up_date": "2026-03-20"},
        ),
    ]
    await produce(kafka, topics.input, [(r.conversation.conversation_id, r) for r in records])
    async with router(kafka, topics, ROOT / "examples" / "agents"):
        pass
    decisions = {r.key: r.json() for r in await read_all(kafka, topics.decisions)}
    assert set(decisions) == {r.conversation.conversation_id for r in records}
    actions: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for action_type in ACTION_TYPES:
        for r in await read_all(kafka, topics.action(action_type)):
            actions.setdefault(str(r.key), []).append((action_type, r.json()))
    kinds = {key: sorted((t, a["flow_id"]) for t, a in found) for key, found in actions.items()}
    ids = [r.conversation.conversation_id for r in records]
    assert kinds.get(ids[0]) == [("webhook", "crm-case-update")]
    assert ids[1] not in kinds  # BLIND_TRANSFER: no CRM update
    assert kinds[ids[2]] == [("slack", "escalation-to-ops")]
    assert kinds[ids[3]] == [("schedule_call", "voicemail-retry")]
    assert kinds[ids[4]] == [
        ("email", "callback-requested"),
        ("task", "callback-requested"),
        ("webhook", "crm-case-update"),
    ]
    assert kinds[ids[5]] == [
        ("email", "complaint"),
        ("task", "complaint"),
        ("team_alert", "complaint"),
        ("webhook", "crm-case-update"),
    ]
    assert kinds[ids[6]] == [("schedule_call", "auto-follow-up"), ("webhook", "hot-lead-to-crm")]
    for key, found in actions.items():  # every action is in its conversation's trace, with the same revision
        planned = {p["action_id"] for f in decisions[key]["flows"] for p in f["actions"]}
        assert planned == {a["action_id"] for _, a in found}
        assert {a["config_revision"] for _, a in found} == {decisions[key]["config_revision"]}


async def test_configuration_reloaded_while_running_changes_the_revision(kafka: KafkaSettings, tmp_path: Path) -> None:
    topics = await make_topics(kafka)
    config = tmp_path / "support-line.yaml"
    shutil.copy(ROOT / "examples" / "agents" / "support-line.yaml", config)
    first_revision = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    before, after = unique("conv-before"), unique("conv-after")
    async with router(kafka, topics, tmp_path, idle_exit=None) as (_, catalog):
        await produce(kafka, topics.input, [(before, extracted("0001-support-resolved-hangup.json", before))])
        [first] = await wait_for(kafka, topics.decisions, {before})
        config.write_text(config.read_text().replace("status: closed", "status: closed-by-postcall"))
        second_revision = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
        deadline = time.monotonic() + 20
        while catalog.lookup("support-line", "3").revision != second_revision:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "configuration was not reloaded"
            await asyncio.sleep(0.1)
        await produce(kafka, topics.input, [(after, extracted("0001-support-resolved-hangup.json", after))])
        [second] = await wait_for(kafka, topics.decisions, {after})
        webhooks = {r.key: r.json() for r in await wait_for(kafka, topics.action("webhook"), {before, after})}
    assert (first.json()["config_revision"], second.json()["config_revision"]) == (first_revision, second_revision)
    assert webhooks[before]["config_revision"] == first_revision and webhooks[before]["body"]["status"] == "closed"
    assert webhooks[after]["config_revision"] == second_revision
    assert webhooks[after]["body"]["status"] == "closed-by-postcall"
    assert webhooks[before]["action_id"] != webhooks[after]["action_id"]


async def test_agent_without_configuration_is_dead_lettered_with_its_reason(kafka: KafkaSettings) -> None:
    topics = await make_topics(kafka)
    lost, fine = unique("conv-unknown-agent"), unique("conv-fine")
    await produce(
        kafka,
        topics.input,
        [
            (lost, extracted("0001-support-resolved-hangup.json", lost, agent="nobody-configured-me")),
            (fine, extracted("0001-support-resolved-hangup.json", fine)),
        ],
    )
    async with router(kafka, topics, ROOT / "examples" / "agents"):
        pass
    [dead] = [r for r in await read_all(kafka, DLQ) if r.key == lost]
    assert dead.headers[h.EXCEPTION_CLASS].endswith("PermanentError")
    assert "no configuration for agent 'nobody-configured-me' version '3'" in dead.headers[h.EXCEPTION_MESSAGE]
    assert dead.headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_PERMANENT
    assert dead.headers[h.ORIGINAL_TOPIC] == topics.input
    assert ConversationExtracted.model_validate_json(dead.value).conversation.conversation_id == lost
    assert [r.key for r in await read_all(kafka, topics.decisions)] == [fine]  # the service went on


async def test_drafts_never_run_on_live_traffic(kafka: KafkaSettings, tmp_path: Path) -> None:
    """A draft flow in a published file is traced as a draft and sends nothing; an agent whose only file
    is a draft is dead-lettered as unconfigured; the published flows beside them run as usual."""
    topics = await make_topics(kafka)
    shutil.copy(ROOT / "examples" / "agents" / "support-line.yaml", tmp_path / "support-line.yaml")
    with (tmp_path / "support-line.yaml").open("a") as f:
        f.write(
            "  - {id: draft-alert, draft: true, when: {always: true}, actions: [{type: team_alert, message: hi}]}\n"
        )
    (tmp_path / "pilot.yaml").write_text(
        "agent: pilot-line\ndraft: true\nflows: [{id: all, actions: [{type: team_alert, message: hi}]}]\n"
    )
    live, pilot = unique("conv-live"), unique("conv-pilot")
    records = [
        (live, extracted("0001-support-resolved-hangup.json", live, fields={"resolved": True})),
        (pilot, extracted("0001-support-resolved-hangup.json", pilot, agent="pilot-line")),
    ]
    await produce(kafka, topics.input, records)
    async with router(kafka, topics, tmp_path):
        pass
    [trace] = [r.json() for r in await read_all(kafka, topics.decisions)]
    draft = next(f for f in trace["flows"] if f["flow_id"] == "draft-alert")
    assert (draft["fired"], draft["actions"]) == (False, []) and draft["reason"].startswith("flow is a draft")
    assert [r.key for r in await read_all(kafka, topics.action("team_alert"))] == []
    assert [r.key for r in await read_all(kafka, topics.action("webhook"))] == [live]
    [dead] = [r for r in await read_all(kafka, DLQ) if r.key == pilot]
    assert "no configuration for agent 'pilot-line'" in dead.headers[h.EXCEPTION_MESSAGE]
