"""A Stack on the shared test broker starts with what is published from now on: `skip_backlog` moves each
service's consumer group past records earlier tests left unconsumed (they once reached a later test's
receiver as 322 foreign webhooks)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.routes import registry, route_of
from schemas.topics import CONVERSATION_ENDED
from services.common.kafka import ensure_topics, partitions_of
from services.common.settings import KafkaSettings
from services.devkit.stack import skip_backlog
from tests.support.kafka import produce
from tests.unit.extractor.conftest import conversation


async def _lag(kafka: KafkaSettings, service: str) -> int:
    route = route_of(service)
    parts = [TopicPartition(t, p) for t in route.input_topics for p in await partitions_of(kafka, t)]
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=route.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts)
        committed = {tp: await consumer.committed(tp) or 0 for tp in parts}
        return sum(ends[tp] - committed[tp] for tp in parts)
    finally:
        await consumer.stop()


async def test_leftover_records_are_skipped_for_every_service_group(kafka: KafkaSettings) -> None:
    await ensure_topics(kafka, registry(), replication=1)
    left = [conversation("0005").model_copy(update={"conversation_id": f"left-{i}"}) for i in range(5)]
    await produce(kafka, CONVERSATION_ENDED, [(e.conversation_id, e) for e in left])
    assert await _lag(kafka, "extractor") >= 5  # what a Stack started now would consume first

    assert await skip_backlog(kafka.bootstrap_servers) >= 5
    assert await _lag(kafka, "extractor") == 0
    assert await _lag(kafka, "recorder") == 0
    assert await skip_backlog(kafka.bootstrap_servers) == 0  # nothing new since


@pytest.mark.parametrize("bootstrap", ["kafka.prod.example:9092", "127.0.0.1:9092,10.0.0.7:9092"])
async def test_a_cluster_not_on_this_machine_is_refused(bootstrap: str) -> None:
    with pytest.raises(ValueError, match="not on this machine"):
        await skip_backlog(bootstrap)
