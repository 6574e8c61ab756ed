"""The ledger's reader of postcall.action-results.v1, opened once for the dispatcher's life.

One consumer (no group, no commits) is assigned every partition of the results topic, each paused until
the ledger first reads it. A read returns what the partition holds from the given offset up to its end
offset at the time of the call, so each read costs one ListOffsets round trip when nothing is new; a
partition, once read, stays resumed, so the consumer prefetches what other consumers write to it and a
later read usually takes it from memory. services.common.kafka.read_partition opens a consumer per
call, too slow for a read before every check.

One task (the pump) takes whatever the consumer has fetched, for every partition at once, into a
buffer per partition; a read hands out its partition's buffer and waits for the pump until the
consumer's position reaches the end offset it asked for. Taking one partition's records at a time
(getmany(tp)) left the others' fetched records in aiokafka's fetcher, and while any partition of a
broker holds fetched records nobody took, aiokafka sends that broker no new fetch for up to its
prefetch backoff (100 ms): a check on a busy dispatcher waited up to that long for the result written
a moment before. A buffer holds at most BUFFER_LIMIT records: a full one being read (a restore) is left
out of the pump's polls until the read has taken some, a full one nobody reads (a partition no longer
assigned) pauses its partition until the next read of it.

Two broker waits are kept short. The end offsets are asked through a second client: a broker answers
one connection's requests in order, and the consumer's connection nearly always carries a fetch the
broker holds until data comes, so behind it the ListOffsets of a check waited up to fetch.max.wait.
And aiokafka keeps one fetch per broker in flight: a fetch held for idle partitions delays the next
fetch of a partition being read (a restore) or just resumed until it returns, so the consumer's
fetch.max.wait is FETCH_WAIT_MS, not 500 ms (idle, about 0.6 % of a core in polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.topics import ACTION_RESULTS
from services.common.kafka import partitions_of
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

BUFFER_LIMIT = 1000  # records fetched and not yet read, per partition
FETCH_WAIT_MS = 100  # see the module docstring
REFILL_MS = 1  # how soon the pump polls again while a full buffer is being read


class _Buffer:
    """A partition's fetched records not yet handed to a read, and the consumer's position after them."""

    def __init__(self, position: int) -> None:
        self.records: deque[Any] = deque()
        self.position = position  # the offset the consumer fetches next for this partition
        self.reading = False

    def next_offset(self) -> int:
        """Where a read continuing from here starts: the first record not handed out yet."""
        return self.records[0].offset if self.records else self.position


class ResultsReader:
    """`Ledger`'s Reader over Kafka. Reads of one partition must not overlap (the ledger chains them);
    reads of different partitions may."""

    def __init__(self, kafka: KafkaSettings, topic: str = ACTION_RESULTS, stall_seconds: float = 30.0) -> None:
        self._kafka = kafka
        self._stall_seconds = stall_seconds
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None  # ListOffsets only: never behind a fetch
        self._assigning = asyncio.Lock()
        self._buffers: dict[int, _Buffer] = {}  # partitions read at least once
        self._pump: asyncio.Task[None] | None = None
        self._fetched: asyncio.Future[None] | None = None  # done when the pump has taken new records
        self._failure: Exception | None = None  # the pump's last failed poll
        self._poke = asyncio.Event()  # set when a read takes from a full buffer or waits for records

    async def __aenter__(self) -> ResultsReader:
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self._kafka.client_id}-ledger",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await self._consumer.start()
        self._offsets = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self._kafka.client_id}-ledger-offsets",
        )
        await self._offsets.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._offsets is not None:
            await self._offsets.stop()
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
        assert self._offsets is not None
        end = (await self._offsets.end_offsets([tp]))[tp]
        start = (await self._offsets.beginning_offsets([tp]))[tp] if from_offset is None else from_offset
        buffer = self._buffers.get(partition)
        if buffer is None or buffer.next_offset() != start:  # the first read, or the last one was left early
            consumer.seek(tp, start)  # also drops what aiokafka fetched from the old position
            buffer = self._buffers[partition] = _Buffer(start)
        consumer.resume(tp)  # from the first read on, even of an empty partition: later reads find it fetched
        progress, failures = time.monotonic(), self._failure
        buffer.reading = True
        try:
            while True:
                if len(buffer.records) >= BUFFER_LIMIT:
                    self._poke.set()  # the pump left it out: poll it again once it has room
                while buffer.records:
                    record = buffer.records.popleft()
                    if record.offset >= end:
                        buffer.records.appendleft(record)  # the next read's
                        return
                    yield record
                if buffer.position >= end:
                    return
                if self._buffers.get(partition) is not buffer:
                    raise RuntimeError(f"{topic}[{partition}]: read again elsewhere while this read was running")
                consumer.resume(tp)  # paused while full and unread
                if await self._wait_for_records(buffer, failures):
                    progress = time.monotonic()
                elif time.monotonic() - progress > self._stall_seconds:  # never wait forever on a lost broker
                    raise TimeoutError(
                        f"{topic}[{partition}]: no records for {self._stall_seconds:g}s at {buffer.position}/{end}"
                    )
        finally:
            buffer.reading = False

    async def _wait_for_records(self, buffer: _Buffer, failures: Exception | None) -> bool:
        """Wait (at most a second) for the pump's next poll; whether this buffer moved on. Raises the
        pump's failure if a poll failed since the read began."""
        self._poke.set()  # a pump waiting for room polls again
        position = buffer.position
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._next_fetch()), 1.0)
        if self._failure is not failures and self._failure is not None:
            raise self._failure
        return bool(buffer.records) or buffer.position != position

    def _next_fetch(self) -> asyncio.Future[None]:
        if self._fetched is None or self._fetched.done():
            self._fetched = asyncio.get_running_loop().create_future()
        return self._fetched

    async def _run_pump(self) -> None:
        """Take everything the consumer fetched, every partition, into the buffers; wake the reads."""
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batch = await self._poll(consumer)
                for tp, records in batch.items():
                    buffer = self._buffers.get(tp.partition)
                    if buffer is None:
                        continue  # never read: not resumed, so not fetched
                    position = await consumer.position(tp)  # past compacted gaps; no wait: it is valid
                    if self._buffers.get(tp.partition) is not buffer:
                        continue  # a read seeked it meanwhile: these records are from the old position
                    buffer.records.extend(records)
                    buffer.position = position
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reads raise it; the pump goes on
                log.warning("ledger reader poll failed: %s", exc)
                self._failure = exc
                await asyncio.sleep(0.1)
            if self._fetched is not None and not self._fetched.done():
                self._fetched.set_result(None)

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """What the consumer fetched for every buffer with room."""
        wanted, held = [], False
        for partition, buffer in self._buffers.items():
            tp = TopicPartition(self._topic, partition)
            if len(buffer.records) < BUFFER_LIMIT:
                wanted.append(tp)
            elif buffer.reading:
                held = True  # its read is taking from it: left out of this poll, polled again soon
            else:
                consumer.pause(tp)  # nobody reads it: a paused partition gives nothing; a read resumes it
        self._poke.clear()
        batch: dict[TopicPartition, list[Any]] = {}
        if not held:  # every partition (the ones never read are paused)
            batch = await consumer.getmany(timeout_ms=1000, max_records=BUFFER_LIMIT)
        elif wanted:
            batch = await consumer.getmany(*wanted, timeout_ms=REFILL_MS, max_records=BUFFER_LIMIT)
        else:
            await self._poke.wait()
        return batch

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
            if self._pump is None or self._pump.done():
                self._pump = asyncio.create_task(self._run_pump())
        return consumer
