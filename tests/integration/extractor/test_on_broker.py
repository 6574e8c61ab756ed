"""The extractor on the real broker, in-process with the real runtime and the fake LLM server: an outage
(connection refused, then 500s) pauses consumption and, once the server is back, every conversation is
extracted, none lost, none dead-lettered; a refusal still says `failed` and dead-letters the input; an
unknown agent is dead-lettered with nothing produced. Unique topic names keep it apart from other tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import REGISTRY

from schemas import headers as h
from schemas.events import Agent, ConversationEnded
from schemas.topics import dead_letter_topic, retry_topic
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.extractor.handler import Extractor
from tests.integration.extractor.conftest import extractor, on_topics
from tests.integration.extractor.test_openai_provider import SPEC
from tests.support.fake_llm import FakeLLM
from tests.support.kafka import create_topics, produce, read_all, unique
from tests.unit.extractor.conftest import conversation

TIERS = 4


def conversations(n: int) -> list[ConversationEnded]:
    base = conversation("0005")
    return [base.model_copy(update={"conversation_id": f"conv-{i:03d}", "event_id": f"evt-{i:03d}"}) for i in range(n)]


RETRYING = RuntimeSettings(
    metrics_port=0,
    max_in_flight=64,
    retry_delays_seconds=[0.5] * TIERS,
    retry_jitter=0,
    unavailable_backoff_seconds=0.5,
    idle_exit_seconds=1.5,
    commit_interval_seconds=0.2,
)


async def run_extractor(kafka: KafkaSettings, ex: Extractor, service: str, topic: str, out: str, group: str) -> None:
    runtime = Runtime(on_topics(ex, service, topic, out), kafka=kafka, settings=RETRYING, group_id=group)
    await asyncio.wait_for(runtime.run(), 120)


async def topics(kafka: KafkaSettings) -> tuple[str, str, str, str]:
    service, topic, out, group = unique("extractor"), unique("ended"), unique("extracted"), unique("g")
    await create_topics(
        kafka, [topic, out, dead_letter_topic(service), *(retry_topic(service, i + 1) for i in range(TIERS))]
    )
    return service, topic, out, group


def unavailable(service: str) -> float:
    return (
        REGISTRY.get_sample_value("postcall_records_processed_total", {"service": service, "outcome": "unavailable"})
        or 0
    )


async def test_an_llm_outage_pauses_extraction_and_nothing_is_lost_or_dead_lettered(
    kafka: KafkaSettings, llm: FakeLLM, tmp_path: Path
) -> None:
    service, topic, out, group = await topics(kafka)
    events = conversations(30)
    await produce(kafka, topic, [(e.conversation_id, e) for e in events])
    llm.down()  # connection refused first
    circuit = {"failure_threshold": 3, "window_seconds": 30, "cooldown_seconds": 1.0}

    async def outage() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(llm.up)  # back, but answering 500
        llm.mode = "error"
        await asyncio.sleep(3)
        llm.mode = "ok"

    async with extractor(llm, SPEC, tmp_path, circuit=circuit) as ex:
        await asyncio.gather(run_extractor(kafka, ex, service, topic, out, group), outage())

    extracted = await read_all(kafka, out)
    statuses = {r.key: r.json()["extraction"]["status"] for r in extracted}
    assert statuses == {e.conversation_id: "ok" for e in events}
    assert len(extracted) == len(events)
    assert await read_all(kafka, dead_letter_topic(service)) == []
    assert unavailable(service) > 0  # the runtime paused and retried in place
    assert llm.count < 30 * 3  # the open circuit kept requests away from the failing server


async def test_a_refusal_still_says_failed_and_dead_letters_the_input(
    kafka: KafkaSettings, llm: FakeLLM, tmp_path: Path
) -> None:
    service, topic, out, group = await topics(kafka)
    event = conversations(1)[0]
    await produce(kafka, topic, [(event.conversation_id, event)])
    llm.mode = "refusal"
    async with extractor(llm, SPEC, tmp_path) as ex:
        await run_extractor(kafka, ex, service, topic, out, group)
    [failed] = await read_all(kafka, out)
    assert failed.key == event.conversation_id
    assert failed.json()["extraction"]["status"] == "failed"
    [dead] = await read_all(kafka, dead_letter_topic(service))
    assert dead.key == event.conversation_id and "model refused" in dead.headers[h.EXCEPTION_MESSAGE]
    assert dead.headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_PERMANENT


async def test_an_unknown_agent_is_dead_lettered_and_nothing_is_produced(
    kafka: KafkaSettings, llm: FakeLLM, tmp_path: Path
) -> None:
    service, topic, out, group = await topics(kafka)
    stranger = conversations(1)[0].model_copy(update={"agent": Agent(id="ghost")})
    await produce(kafka, topic, [(stranger.conversation_id, stranger)])
    spec_for: Any = lambda e: SPEC if e.agent.id == SPEC.agent_id else None  # noqa: E731
    async with extractor(llm, SPEC, tmp_path) as ex:
        ex._spec_for = spec_for
        await run_extractor(kafka, ex, service, topic, out, group)
    assert await read_all(kafka, out) == []
    [dead] = await read_all(kafka, dead_letter_topic(service))
    assert "no configuration for agent ghost" in dead.headers[h.EXCEPTION_MESSAGE]
    assert llm.count == 0


async def test_a_naive_datetime_event_is_dead_lettered_with_its_reason_at_the_first_service(
    kafka: KafkaSettings, llm: FakeLLM, tmp_path: Path
) -> None:
    """The contract is the schema: what schemas/json/ refuses never reaches the router, where it used to
    crash on naive-minus-aware arithmetic."""
    service, topic, out, group = await topics(kafka)
    good, naive, text_number = conversations(3)
    bad = orjson.loads(naive.model_dump_json()) | {"started_at": "2026-11-22T10:00:00"}
    worse = orjson.loads(text_number.model_dump_json()) | {"duration_seconds": "12.5"}
    await produce(
        kafka, topic, [(good.conversation_id, good), (naive.conversation_id, bad), (text_number.conversation_id, worse)]
    )
    async with extractor(llm, SPEC, tmp_path) as ex:
        await run_extractor(kafka, ex, service, topic, out, group)
    assert [r.key for r in await read_all(kafka, out)] == [good.conversation_id]
    dead = {r.key: r.headers for r in await read_all(kafka, dead_letter_topic(service))}
    assert set(dead) == {naive.conversation_id, text_number.conversation_id}
    assert {d[h.DLQ_FAILURE_CATEGORY] for d in dead.values()} == {h.CATEGORY_POISON}
    assert "started_at" in dead[naive.conversation_id][h.EXCEPTION_MESSAGE]
    assert "time zone" in dead[naive.conversation_id][h.EXCEPTION_MESSAGE]
    assert "duration_seconds" in dead[text_number.conversation_id][h.EXCEPTION_MESSAGE]
