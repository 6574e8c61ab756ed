"""Small Kafka utilities beside the runtime: topic creation from the registry, reading one partition
to its end (state restore, CLI tools), and the producer settings every producer uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.topics import Topic, default_replication
from services.common.settings import KafkaSettings


def producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """The idempotent producer: acks=all, ordered retries, lz4-free (pure Python) compression off."""
    opts: dict[str, Any] = {
        **kafka.client_options(),
        "client_id": f"{kafka.client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 1,
        "max_batch_size": 256 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


async def ensure_topics(
    kafka: KafkaSettings, topics: Iterable[Topic], replication: int | None = None
) -> tuple[list[str], list[str]]:
    """Create the topics that do not exist yet; returns (created, already_there). Idempotent."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), client_id=f"{kafka.client_id}-admin")
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        rf = min(replication if replication is not None else default_replication(), brokers)
        new = [NewTopic(t.name, t.partitions, rf, topic_configs=t.config()) for t in wanted]
        created: list[str] = []
        for topic in new:  # one by one: a concurrent creator must not fail the whole batch
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created, sorted({t.name for t in topics} - set(created))
    finally:
        await admin.close()


async def read_partition(
    kafka: KafkaSettings, topic: str, partition: int, *, from_offset: int | None = None
) -> AsyncIterator[Any]:
    """Every record of one partition from the start (or `from_offset`) up to its end at call time."""
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), enable_auto_commit=False, group_id=None, client_id=f"{kafka.client_id}-reader"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp] if from_offset is None else from_offset
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return
                yield record
    finally:
        await consumer.stop()


async def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    """The partition numbers of a topic (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), client_id=f"{kafka.client_id}-admin")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"])
