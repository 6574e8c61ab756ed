"""What a benchmark module gets: the private broker, unique topics, fast producing, counting, processes.

A bench module is `async def run(ctx: BenchContext) -> dict[str, Any]` (see bench/README.md). The
context is created by bench.run once per `make bench` and shared by every module; it owns one reader
client for end offsets and every subprocess a module starts (killed at the end if still alive).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

from bench.procs import Proc, start_process
from services.common.settings import KafkaSettings

RECORD_OVERHEAD = len(b'{"id":"r0000000","seq":0,"pad":""}')


class Blob(BaseModel):
    """The payload `produce_blobs` writes: a JSON object of an exact byte size."""

    id: str
    seq: int
    pad: str


def blob_bytes(seq: int, size: int) -> bytes:
    """A JSON Blob of exactly `size` bytes (at least the envelope, ~35 bytes)."""
    head = f'{{"id":"r{seq:07d}","seq":{seq},"pad":"'
    pad = max(0, size - len(head) - 2)
    return (head + "x" * pad + '"}').encode()


@dataclass
class BenchContext:
    kafka: KafkaSettings
    results_dir: Path
    work_dir: Path
    quick: bool = False
    repeats: int = 3
    smoke: bool = False  # `make test`: every benchmark's setup, with tiny counts (its numbers mean nothing)
    processes: list[Proc] = field(default_factory=list)
    _reader: AIOKafkaConsumer | None = None
    _admin: AIOKafkaAdminClient | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def scaled(self, full: int, quick: int) -> int:
        """A record count: `full` normally, `quick` with --quick, a handful in a smoke run."""
        if self.smoke:
            return max(2, quick // 100)
        return quick if self.quick else full

    def log(self, message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # ── topics ────────────────────────────────────────────────────────────────────────────────

    async def topic(self, prefix: str, partitions: int = 1) -> str:
        """Create a topic with a unique name (`bench-<prefix>-<random>`) and return its name."""
        name = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
        await self.create_topics([name], partitions)
        return name

    async def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create topics with these exact names (replication 1, one hour retention)."""
        admin = await self._admin_client()
        config = {"retention.ms": "3600000"}
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=config) for n in names])

    # ── producing ─────────────────────────────────────────────────────────────────────────────

    async def produce_blobs(self, topic: str, n: int, size: int, partitions: int = 1, keys: int = 0) -> None:
        """Write n Blob records of `size` bytes, round-robin over partitions; keys=k gives k distinct keys."""
        records = ((f"k{i % keys}".encode() if keys else None, blob_bytes(i, size), i % partitions) for i in range(n))
        await self.produce_raw(topic, records)

    async def produce_models(self, topic: str, records: Sequence[tuple[str | None, BaseModel]]) -> None:
        """Write pydantic models as JSON, partitioned by key (the default partitioner)."""
        raw = ((k.encode() if k else None, m.model_dump_json().encode(), None) for k, m in records)
        await self.produce_raw(topic, raw)

    async def produce_raw(self, topic: str, records: Iterable[tuple[bytes | None, bytes, int | None]]) -> None:
        """Write (key, value, partition or None) as fast as the client allows (acks=1, big batches)."""
        producer = AIOKafkaProducer(
            **self.kafka.client_options(),
            acks=1,
            linger_ms=20,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        await producer.start()
        try:
            futures = []
            for key, value, partition in records:
                futures.append(await producer.send(topic, value, key=key, partition=partition))
                if len(futures) >= 5000:
                    await asyncio.gather(*futures)
                    futures.clear()
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    # ── reading ───────────────────────────────────────────────────────────────────────────────

    async def count(self, topic: str) -> int:
        """Records in a topic (sum of end offsets; bench topics are never compacted or truncated)."""
        reader = await self._reader_client()
        ends = await reader.end_offsets([TopicPartition(topic, p) for p in await self._partitions(topic)])
        return sum(ends.values())

    async def _partitions(self, topic: str) -> set[int]:
        """The topic's partition numbers, from the reader's metadata (refreshed once when it lacks the topic)."""
        reader = await self._reader_client()
        parts: set[int] | None = reader.partitions_for_topic(topic)
        if not parts:
            await reader._client.force_metadata_update()  # a fresh topic is not in the metadata yet
            parts = reader.partitions_for_topic(topic) or set()
        return parts

    async def wait_for_count(self, topic: str, n: int, timeout: float, poll: float = 0.02) -> float:
        """Wait until `topic` holds n records; returns the monotonic time it did. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if await self.count(topic) >= n:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} has {await self.count(topic)} of {n} records after {timeout:.0f}s")
            await asyncio.sleep(poll)

    async def read_values(self, topic: str, timeout: float = 30.0) -> list[tuple[bytes | None, bytes, int]]:
        """Every (key, value, timestamp_ms) of a topic, from the beginning to its end now."""
        expected = await self.count(topic)
        consumer = AIOKafkaConsumer(
            topic, **self.kafka.client_options(), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        out: list[tuple[bytes | None, bytes, int]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                out.extend((r.key, r.value, r.timestamp) for rs in batch.values() for r in rs)
            return out
        finally:
            await consumer.stop()

    async def committed(self, group: str, topic: str) -> dict[int, int | None]:
        """The group's committed offset per partition of `topic` (None: nothing committed)."""
        admin = await self._admin_client()
        offsets = await admin.list_consumer_group_offsets(group)
        parts = await self._partitions(topic)
        found = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        return {p: found.get(p) for p in sorted(parts)}

    async def each_once(self, group: str, source: str, n: int, sinks: Sequence[str], expected: int) -> None:
        """RuntimeError unless a stopped consumer's group has committed all n inputs of `source` and the sinks
        hold exactly `expected` records. A clock stopped at `expected` outputs would have stopped early for
        a record processed twice; with every input processed, its outputs can only show as more."""
        consumed = sum(offset or 0 for offset in (await self.committed(group, source)).values())
        written = sum([await self.count(sink) for sink in sinks])
        if consumed != n or written != expected:
            raise RuntimeError(
                f"{written} records written for {consumed} of {n} inputs, {expected} expected: a record processed "
                "twice stops the clock early, so the run is not counted"
            )

    # ── processes ─────────────────────────────────────────────────────────────────────────────

    def spawn(self, module: str, env: dict[str, str], args: Sequence[str] = ()) -> Proc:
        """`python -m module *args` with extra environment; killed at the end of the run if still alive."""
        proc = start_process(module, env, args, self.work_dir)
        self.processes.append(proc)
        return proc

    # ── plumbing ──────────────────────────────────────────────────────────────────────────────

    async def _reader_client(self) -> AIOKafkaConsumer:
        if self._reader is None:
            self._reader = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None, enable_auto_commit=False)
            await self._reader.start()
        return self._reader

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**self.kafka.client_options())
            await self._admin.start()
        return self._admin

    async def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
