"""The ledger's reader of postcall.action-results.v1, opened once for the dispatcher's life.

One consumer (no group, no commits) is assigned every partition of the results topic, each paused until
the ledger first reads it. A read returns what the partition holds from the given offset up to its end
offset at the time of the call, so each read costs one ListOffsets round trip when nothing is new; a
partition, once read, stays resumed, so the consumer prefetches what other consumers write to it and a
later read usually takes it from memory. services.common.kafka.read_partition opens a consumer per
call, too slow for a read before every check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.topics import ACTION_RESULTS
from services.common.kafka import partitions_of
from services.common.settings import KafkaSettings


class ResultsReader:
    """`Ledger`'s Reader over Kafka. Reads of one partition must not overlap (the ledger chains them);
    reads of different partitions may."""

    def __init__(self, kafka: KafkaSettings, topic: str = ACTION_RESULTS, stall_seconds: float = 30.0) -> None:
        self._kafka = kafka
        self._stall_seconds = stall_seconds
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._assigning = asyncio.Lock()
        self._positions: dict[int, int] = {}  # where the consumer stands in each partition it has read

    async def __aenter__(self) -> ResultsReader:
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self._kafka.client_id}-ledger",
        )
        await self._consumer.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def __call__(self, topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        """Records of `partition` from `from_offset` (None: the beginning) to its end as of this call."""
        if topic != self._topic:
            raise ValueError(f"this reader reads {self._topic}, not {topic}")
        consumer = await self._assigned()
        tp = TopicPartition(topic, partition)
        if tp not in consumer.assignment():
            raise LookupError(f"{topic} has no partition {partition}")
        end = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp] if from_offset is None else from_offset
        if start >= end:
            return
        if self._positions.get(partition) != start:  # the first read, or the last one was left early
            consumer.seek(tp, start)
        consumer.resume(tp)
        position, progress = start, time.monotonic()
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            # before yielding: a caller that stops mid-batch asks for an earlier offset next time
            position = self._positions[partition] = await consumer.position(tp)
            if batch:
                progress = time.monotonic()
            elif time.monotonic() - progress > self._stall_seconds:  # never wait forever on a lost broker
                raise TimeoutError(f"{topic}[{partition}]: no records for {self._stall_seconds:g}s at {position}/{end}")
            for record in batch.get(tp, []):
                yield record

    async def _assigned(self) -> AIOKafkaConsumer:
        """The consumer, assigned every partition of the topic (paused) on first use."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ResultsReader is used outside `async with`")
        async with self._assigning:
            if not consumer.assignment():
                partitions = await partitions_of(self._kafka, self._topic)
                if not partitions:
                    raise LookupError(f"topic {self._topic} does not exist")
                tps = [TopicPartition(self._topic, p) for p in partitions]
                consumer.assign(tps)
                consumer.pause(*tps)
        return consumer
