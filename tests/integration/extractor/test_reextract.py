"""`postcall reextract` on the real broker: choosing past conversations, republishing them with the
same key and payload, a fresh ce_id and x-reextract-of, rate-limited; and the extractor running them
again (heuristic provider) with the header passed on."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from typer.testing import CliRunner

from schemas import headers as h
from schemas.events import Agent, ConversationEnded
from schemas.headers import REEXTRACT_OF
from schemas.topics import dead_letter_topic, retry_topic
from services.cli.dlq import operator
from services.cli.reextract import Filters, app, republish, select
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings
from tests.integration.extractor.conftest import on_topics
from tests.support.kafka import create_topics, produce, read_all, unique
from tests.unit.extractor.conftest import CALLBACK, SUPPORT_FIELDS, conversation, spec

HEADERS = {h.CE_ID: "ce-original", h.CE_TYPE: "postcall.conversation-ended.v1", h.CE_SOURCE: "//retell",
           h.ATTEMPTS: "3"}  # fmt: skip


def event(i: int, agent: str = "support-line") -> ConversationEnded:
    return conversation("0005").model_copy(
        update={"conversation_id": f"conv-{i}", "event_id": f"evt-{i}", "agent": Agent(id=agent)}
    )


async def seeded(kafka: KafkaSettings) -> str:
    topic = unique("ended")
    await create_topics(kafka, [topic])
    records = [(e.conversation_id, e) for e in (event(1), event(2), event(3, agent="sales-line"))]
    await produce(kafka, topic, records, headers=HEADERS)
    await produce(kafka, topic, [("conv-1", event(1))], headers=HEADERS)  # the platform sent evt-1 twice
    return topic


async def test_conversations_are_chosen_by_id_agent_and_time(kafka: KafkaSettings) -> None:
    topic = await seeded(kafka)
    by_id = await select(kafka, Filters(ids=frozenset({"conv-1", "evt-2"})), topic)
    assert sorted(c.conversation_id for c in by_id) == ["conv-1", "conv-2"]  # evt-1 once, not twice
    by_agent = await select(kafka, Filters(agent="sales-line"), topic)
    assert [c.conversation_id for c in by_agent] == ["conv-3"]
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert await select(kafka, Filters(since=later), topic) == []
    assert await select(kafka, Filters(until=datetime.now(UTC) - timedelta(days=1)), topic) == []
    assert len(await select(kafka, Filters(since=datetime.now(UTC) - timedelta(hours=1)), topic)) == 3


async def test_republished_copies_keep_key_and_payload_with_a_fresh_ce_id(kafka: KafkaSettings) -> None:
    topic = await seeded(kafka)
    chosen = await select(kafka, Filters(ids=frozenset({"conv-1", "conv-2", "conv-3"})), topic)
    started = time.monotonic()
    assert await republish(kafka, chosen, rate=5, progress=None, topic=topic) == 3
    assert time.monotonic() - started >= 0.35  # 3 records at 5/s: two intervals of 0.2 s
    records = await read_all(kafka, topic)
    copies = [r for r in records if REEXTRACT_OF in r.headers]
    originals = {r.json()["event_id"]: r for r in records if REEXTRACT_OF not in r.headers}
    assert len(copies) == 3
    for copy in copies:
        original = originals[copy.headers[REEXTRACT_OF]]
        assert copy.key == original.key and copy.value == original.value
        assert copy.headers[h.CE_ID] not in ("ce-original", "")
        assert copy.headers[h.CE_SOURCE] == "//retell"
        assert h.ATTEMPTS not in copy.headers
    # a second run chooses the originals again, never the copies
    again = await select(kafka, Filters(ids=frozenset({"conv-1"})), topic)
    assert [c.headers.get(REEXTRACT_OF) for c in again] == [None]


def test_the_command_needs_a_filter_and_dry_run_publishes_nothing(kafka: KafkaSettings) -> None:
    topic = asyncio.run(seeded(kafka))
    runner = CliRunner()
    nothing = runner.invoke(app, ["--bootstrap", kafka.bootstrap_servers, "--topic", topic])
    assert nothing.exit_code != 0 and "choose conversations" in nothing.output
    dry = runner.invoke(app, ["-b", kafka.bootstrap_servers, "--topic", topic, "--agent", "sales-line", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "conv-3" in dry.output and "1 conversation(s) would be republished" in dry.output
    real = runner.invoke(
        app, ["-b", kafka.bootstrap_servers, "--topic", topic, "--ids", "conv-1,conv-2", "--rate", "50"]
    )
    assert real.exit_code == 0, real.output
    assert "2 conversation(s) republished" in real.output
    copies = [r for r in asyncio.run(read_all(kafka, topic)) if REEXTRACT_OF in r.headers]
    assert sorted(r.key or "" for r in copies) == ["conv-1", "conv-2"]
    assert {r.headers[h.REEXTRACTED_BY] for r in copies} == {operator()}  # the recorder audits it


async def test_the_extractor_runs_a_republished_conversation_again(kafka: KafkaSettings, tmp_path: Path) -> None:
    service, topic, out, group = unique("extractor"), unique("ended"), unique("extracted"), unique("g")
    await create_topics(kafka, [topic, out, dead_letter_topic(service), retry_topic(service, 1)])
    await produce(kafka, topic, [("conv-1", event(1))], headers=HEADERS)
    s = spec(*SUPPORT_FIELDS, triggers=(CALLBACK,))

    async def run() -> None:
        async with httpx.AsyncClient() as http:
            ex = Extractor(ExtractorSettings(config_dir=tmp_path), lambda e: s, http, None)
            settings = RuntimeSettings(metrics_port=0, retry_delays_seconds=[0.5], idle_exit_seconds=1.5)
            runtime = Runtime(on_topics(ex, service, topic, out), kafka=kafka, settings=settings, group_id=group)
            await asyncio.wait_for(runtime.run(), 60)

    await run()
    await republish(kafka, await select(kafka, Filters(ids=frozenset({"conv-1"})), topic), 10, None, topic)
    await run()
    first, second = await read_all(kafka, out)
    assert first.key == second.key == "conv-1"
    assert REEXTRACT_OF not in first.headers and second.headers[REEXTRACT_OF] == "evt-1"
    assert first.json()["event_id"] != second.json()["event_id"]
    assert second.json()["extraction"]["fields"]["callback_number"]["value"] == "+13125550178"
