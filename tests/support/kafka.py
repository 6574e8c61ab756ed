"""Helpers for integration tests: unique topics, produce raw or model records, read a topic to its end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel

from schemas.topics import Topic
from services.common.kafka import ensure_topics, producer
from services.common.settings import KafkaSettings


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topics(kafka: KafkaSettings, names: Iterable[str], partitions: int = 3) -> None:
    await ensure_topics(kafka, [Topic(n, "test", partitions, 3_600_000) for n in names], replication=1)


async def produce(
    kafka: KafkaSettings,
    topic: str,
    records: Sequence[tuple[str | None, Any]],
    headers: dict[str, str] | None = None,
) -> None:
    """records: (key, value) where value is a pydantic model, a dict, or raw bytes."""
    p = producer(kafka)
    await p.start()
    try:
        hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
        futures = []
        for key, value in records:
            if isinstance(value, BaseModel):
                raw = value.model_dump_json().encode()
            elif isinstance(value, bytes):
                raw = value
            else:
                raw = orjson.dumps(value)
            futures.append(await p.send(topic, raw, key=key.encode() if key else None, headers=hdrs))
        await asyncio.gather(*futures)
    finally:
        await p.stop()


@dataclass
class Received:
    key: str | None
    value: bytes
    headers: dict[str, str]
    partition: int
    offset: int
    timestamp_ms: int = 0

    def json(self) -> Any:
        return orjson.loads(self.value)


async def read_all(
    kafka: KafkaSettings, topic: str, *, expect: int | None = None, timeout: float = 30.0
) -> list[Received]:
    """Read a topic from the beginning; with `expect`, wait until that many records are there."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_options(), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Received] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(
                    Received(
                        r.key.decode() if r.key else None,
                        r.value,
                        {k: v.decode(errors="replace") for k, v in r.headers},
                        r.partition,
                        r.offset,
                        r.timestamp,
                    )
                    for r in records
                )
            if expect is None and not batch and await _at_end(consumer):
                break
            if expect is not None and len(out) >= expect:
                break
        return out
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer) -> bool:
    parts = consumer.assignment()
    if not parts:
        return False
    ends = await consumer.end_offsets(list(parts))
    for tp in parts:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


async def committed(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()
