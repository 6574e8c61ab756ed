"""Kafka mechanics beside the runtime's engine: the producer settings every producer uses, topic
creation from the registry, reading one partition to its end (state restore, CLI tools), the fast
path's record batches (Batcher) and each partition's commit bookkeeping (PartitionState).

PartitionState knows which offsets are in flight and the highest offset safe to commit. Records of a
partition are accepted in offset order; they may finish in any order. The committable offset is the
lowest unfinished offset (or one past the last accepted when nothing is unfinished), so a commit never
passes a record whose outcome is not durable (Parallel Consumer's "highest committable offset").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import struct
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2

from schemas.topics import MAX_MESSAGE_BYTES, Topic, default_replication
from services.common import codec
from services.common.settings import KafkaSettings

MAX_BATCH_BYTES = 256 * 1024
KEY_HASHES = 65_536  # keys whose partition hash is remembered (a conversation's events share a key)


def producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """The idempotent producer: acks=all, ordered retries, lz4-free (pure Python) compression off."""
    opts: dict[str, Any] = {
        **kafka.client_options(),
        "client_id": f"{kafka.client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 1,
        "max_batch_size": MAX_BATCH_BYTES,
        "max_request_size": MAX_MESSAGE_BYTES,  # a topic's largest record fits one request
        "request_timeout_ms": 30_000,
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


_M, _MASK = 0x5BD1E995, 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}  # by word count: a key's little-endian 32-bit words


def murmur2_fast(data: bytes) -> int:
    """Kafka's murmur2 of `data`, the value of aiokafka's `murmur2` (tests/unit/common/test_kafka_partitioner.py
    compares them on random keys), in about half its time: the 4-byte words unpacked at once instead of
    assembled byte by byte."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = _WORDS.get(length >> 2)
    if words is None:
        words = _WORDS[length >> 2] = struct.Struct(f"<{length >> 2}I")
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        end = length & ~3
        if tail >= 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def key_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner (`AIOKafkaProducer(partitioner=...)`): the partition of a key is its
    murmur2 modulo the partition count, as the Java client chooses; a key-less record a random one."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_partition(key, len(all_partitions))]


def key_partition(key: bytes, count: int) -> int:
    """The place of a key's partition among `count` partitions in order (`key_partitioner`'s choice)."""
    return (murmur2_fast(key) & 0x7FFFFFFF) % count


@contextlib.asynccontextmanager
async def _admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client, started, closed on the way out."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), client_id=f"{kafka.client_id}-admin")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


class TopicsRefused(Exception):
    """Raised when the cluster refused to create some topics (no CREATE permission, a config or replication
    factor it does not accept, a policy): `created` were created, `refused` maps each other name to why."""

    def __init__(self, created: list[str], refused: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in refused.items()))
        self.created, self.refused = created, refused


async def ensure_topics(
    kafka: KafkaSettings, topics: Iterable[Topic], replication: int | None = None
) -> tuple[list[str], list[str]]:
    """Create the topics that do not exist yet; returns (created, already_there). Idempotent. Raises
    TopicsRefused, after trying every topic, when the cluster refused some."""
    topics = list(topics)
    async with _admin(kafka) as admin:
        brokers = len((await admin.describe_cluster())["brokers"])
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        rf = min(replication if replication is not None else default_replication(), brokers)
        new = [NewTopic(t.name, t.partitions, rf, topic_configs=t.config()) for t in wanted]
        created: list[str] = []
        refused: dict[str, str] = {}
        for topic in new:  # one by one: a concurrent creator must not fail the whole batch
            # the response carries each topic's error (aiokafka raises none): a refusal is no creation
            for error in (await admin.create_topics([topic])).to_object()["topic_errors"]:
                if error["error_code"] == 0:
                    created.append(topic.name)
                elif error["error_code"] != TopicAlreadyExistsError.errno:  # a concurrent creator's
                    refused[topic.name] = error["error_message"] or for_code(error["error_code"]).__name__
        if refused:
            raise TopicsRefused(created, refused)
        return created, sorted({t.name for t in topics} - set(created))


async def topic_differences(kafka: KafkaSettings, topics: Iterable[Topic]) -> dict[str, list[str]]:
    """What each existing topic lacks of its declaration, by topic: fewer partitions, a shorter retention, a
    lower record size limit, another cleanup policy or another value of a declared config. `ensure_topics`
    never changes a topic that exists, and one created otherwise (by hand, by an older version, or by a
    broker's `auto.create.topics.enable` on a first write: 1 partition, 7 days, 1 MB records) may silently
    drop or refuse records: a retry tier whose retention is shorter than its delay loses its copies before
    they are due. More partitions or a longer retention than declared is not a difference."""
    wanted = list(topics)
    async with _admin(kafka) as admin:
        existing = set(await admin.list_topics())
        found = [t for t in wanted if t.name in existing]
        if not found:
            return {}
        described = await admin.describe_topics([t.name for t in found])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name) for t in found])
    partitions = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            # aiokafka names an entry's name field `config_names`
            entries = resource["config_entries"]
            configs[resource["resource_name"]] = {e["config_names"]: e["config_value"] for e in entries}
    differences: dict[str, list[str]] = {}
    for topic in found:
        lacking = []
        have = partitions.get(topic.name)
        if have is not None and have < topic.partitions:
            lacking.append(f"{have} partitions (declared {topic.partitions})")
        actual = configs.get(topic.name, {})
        lacking += [
            f"{name}={actual.get(name)} (declared {value})"
            for name, value in topic.config().items()
            if not _config_meets(name, actual.get(name), value)
        ]
        if lacking:
            differences[topic.name] = lacking
    return differences


def _config_meets(name: str, actual: str | None, declared: str) -> bool:
    if actual is None:
        return False
    if name == "cleanup.policy":
        return set(actual.split(",")) == set(declared.split(","))
    if name in ("retention.ms", "retention.bytes", "max.message.bytes"):
        try:
            have, want = int(actual), int(declared)
        except ValueError:
            return actual == declared
        if name != "max.message.bytes" and have < 0:
            return True  # -1: kept for ever
        return want >= 0 and have >= want
    return actual == declared


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
    async with _admin(kafka) as admin:
        described = await admin.describe_topics([topic])
    return sorted(p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"])


class Sender:
    """`producer.send()` for many concurrent callers, one at a time, in the order they came. When a
    partition's batch is full, aiokafka's send() waits for it to drain and wakes *every* waiting sender at
    each drain (O(n^2) with many records in flight), so only one caller may be in send(). Behind a lock,
    each waiter took its turn in an event-loop iteration of its own: with a wide window (the dispatcher's
    1024) nearly every record then waited, and a loop iteration per record doubled the CPU per record. Here
    a caller who finds send() free sends at once; otherwise its record joins a queue that the one sending
    works through without yielding (until a batch is full again), and the caller waits for its ack future.
    A caller cancelled while queued is skipped: its record is not sent."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._queue: deque[tuple[codec.Outgoing, asyncio.Future[Any]]] = deque()
        self._busy = False  # a caller or the drain task is in producer.send()
        self._drain: asyncio.Task[None] | None = None

    async def send(self, r: codec.Outgoing) -> asyncio.Future[Any]:
        """Queue one record with the producer; returns the future of its ack."""
        if self._busy:
            slot: asyncio.Future[asyncio.Future[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append((r, slot))
            return await slot
        self._busy = True
        try:
            ack: asyncio.Future[Any] = await self._send(r)
            return ack
        finally:
            self._busy = False
            if self._queue:
                self._start_drain()

    def _send(self, r: codec.Outgoing) -> Any:
        return self.producer.send(
            r.topic, r.value, key=r.key, partition=r.partition, headers=codec.header_list(r.headers)
        )

    def _start_drain(self) -> None:
        self._busy = True
        self._drain = asyncio.create_task(self._work_through())

    async def _work_through(self) -> None:
        queue = self._queue
        try:
            while queue:
                r, slot = queue.popleft()
                if slot.done():  # its caller was cancelled
                    continue
                try:
                    ack = await self._send(r)
                except Exception as exc:
                    if not slot.done():
                        slot.set_exception(exc)
                except BaseException:
                    slot.cancel()
                    raise  # this task cancelled: the finally below fails whoever is still queued
                else:
                    if not slot.done():
                        slot.set_result(ack)
        finally:
            self._busy = False
            while queue:
                _, slot = queue.popleft()
                if not slot.done():
                    slot.set_exception(KafkaError("the sender stopped before this record was sent"))


class Batcher:
    """Queues records into aiokafka record batches (its batch API): no per-record future, coroutine or
    partitioner call. Each topic-partition has one open batch, shared by every caller, that takes
    records until it is full or, after `flush()`, until at most one earlier batch of its partition is
    unacknowledged. A batch is closed before the producer sees it: the idempotent producer numbers a
    batch's records when its sender takes the batch, so a record appended to a batch already in the
    producer's queue could break the numbering (OutOfOrderSequenceNumber;
    tests/integration/runtime/test_batcher.py). A partition's batches reach the producer in the order
    they were closed. Partitions are Kafka's default: murmur2 of the key, as
    the Java client and producer.send choose; key-less records fill one random partition's batch, then
    another's (Kafka's sticky partitioner)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._open: dict[tuple[str, int], _Batch] = {}
        self._last: dict[tuple[str, int], _Batch] = {}  # the latest batch handed over, per partition
        self._partitions: dict[str, list[int]] = {}
        self._sticky: dict[str, int] = {}
        self._hashes: dict[bytes, int] = {}
        self._submitting: set[asyncio.Task[None]] = set()
        # partitions added to a topic are used as send() uses them: once the producer's metadata names them
        # (the one-record path's send() places keys by the count it reads, so both paths place them alike)
        producer.client.cluster.add_listener(self._metadata_updated)

    def _metadata_updated(self, cluster: Any) -> None:
        for topic, every in self._partitions.items():
            known = cluster.partitions_for_topic(topic)
            if known and sorted(known) != every:  # (a topic missing from one answer keeps what was read)
                self._partitions[topic] = sorted(known)

    async def add(self, records: Sequence[codec.Outgoing]) -> Sequence[asyncio.Future[Any]] | None:
        """Queue one input's outputs; returns the acks of the batches that hold them (None: one is too
        big to batch, and nothing was queued: send them on their own). They are sent at the next
        flush() or when their batch is full."""
        await self.learn({r.topic for r in records})
        return self.add_nowait(records)

    async def learn(self, topics: Iterable[str]) -> None:
        """Read the partitions of these topics (add_nowait() batches records for known topics only)."""
        for topic in topics:
            if topic not in self._partitions:
                self._partitions[topic] = sorted(await self.producer.partitions_for(topic))

    def add_nowait(self, records: Sequence[codec.Outgoing]) -> Sequence[asyncio.Future[Any]] | None:
        """add() for topics whose partitions are known (learn()); None also for a topic that is not. Outputs
        that all land in one batch get that batch's own `acks` (most inputs: no list made per input)."""
        known = self._partitions
        for r in records:
            if (r.value is not None and len(r.value) > MAX_BATCH_BYTES) or r.topic not in known:
                return None
        acks: list[asyncio.Future[Any]] | None = None  # when the outputs span batches
        last: _Batch | None = None
        for r in records:
            every = known[r.topic]
            partition = r.partition if r.partition is not None else self._partition(r.topic, r.key, every)
            headers = codec.header_list(r.headers)
            batch = self._open.get((r.topic, partition))
            if batch is None or batch.builder.append(timestamp=None, key=r.key, value=r.value, headers=headers) is None:
                if batch is not None:  # full: hand it over
                    self._submit(batch)
                    if r.key is None and r.partition is None:  # sticky: move on
                        partition = self._sticky[r.topic] = random.choice(every)
                batch = self._open[(r.topic, partition)] = _Batch((r.topic, partition), self.producer.create_batch())
                batch.builder.append(timestamp=None, key=r.key, value=r.value, headers=headers)  # a first always fits
            if batch is not last:
                if last is not None:
                    if acks is None:
                        acks = [last.ack]
                    acks.append(batch.ack)
                last = batch
        if acks is not None:
            return acks
        return last.acks if last is not None else []

    def flush(self) -> None:
        """Send every open batch: at once when at most one of its partition's earlier batches is not
        acknowledged yet, else as soon as that is so. Until then the batch stays open and takes the
        records added meanwhile, as aiokafka's send() fills the batch it has queued. The producer sends
        one batch per partition per request and one request per broker at a time: one batch in flight
        and the next one queued behind it keep each request full (a batch handed over only once the one
        before it is acknowledged would miss the request that follows at once), and closing batches
        early would queue many small ones where one would do."""
        for batch in list(self._open.values()):
            if batch.wanted:
                continue
            batch.wanted = True
            previous = self._last.get(batch.tp)
            gate = previous.before if previous is not None else None  # the ack of the batch before that one
            if gate is None or gate.done():
                self._submit(batch)
            else:
                gate.add_done_callback(functools.partial(self._submit_wanted, batch))

    def _submit_wanted(self, batch: _Batch, _previous_ack: asyncio.Future[Any]) -> None:
        if self._open.get(batch.tp) is batch:  # not handed over already (full)
            self._submit(batch)

    def _partition(self, topic: str, key: bytes | None, every: list[int]) -> int:
        if key is None:
            sticky = self._sticky.get(topic)
            if sticky is None:
                sticky = self._sticky[topic] = random.choice(every)
            return sticky
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= KEY_HASHES:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return every[hashed % len(every)]

    def _submit(self, batch: _Batch) -> None:
        if self._open.get(batch.tp) is batch:
            del self._open[batch.tp]
        batch.builder.close()  # nothing is appended once the producer may take it
        previous, self._last[batch.tp] = self._last.get(batch.tp), batch
        batch.before = previous.ack if previous is not None else None
        task = asyncio.create_task(batch.submit(self.producer, previous))
        self._submitting.add(task)
        task.add_done_callback(self._submitting.discard)


class _Batch:
    """One record batch of a Batcher, handed to the producer after its partition's previous one."""

    def __init__(self, tp: tuple[str, int], builder: Any) -> None:
        self.tp, self.builder = tp, builder
        loop = asyncio.get_running_loop()
        self.ack: asyncio.Future[Any] = loop.create_future()  # acks=all of the whole batch
        self.acks = (self.ack,)  # what add_nowait returns for an input whose outputs are all in this batch
        self.wanted = False  # flush() asked for it (handed over once the batch two before it is acked)
        self.before: asyncio.Future[Any] | None = None  # the ack of the batch handed over before this one
        self.queued: asyncio.Future[None] = loop.create_future()  # in the producer's queue (or refused)

    async def submit(self, producer: AIOKafkaProducer, previous: _Batch | None) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous.queued)
            sent = await producer.send_batch(self.builder, self.tp[0], partition=self.tp[1])
        except BaseException as exc:  # refused (producer closed, no room in time) or cancelled
            self._settle(exc if isinstance(exc, Exception) else KafkaError("batch not queued"))
            if not isinstance(exc, Exception):
                raise
        else:
            sent.add_done_callback(self._acked)
        finally:
            self.queued.set_result(None)

    def _acked(self, sent: asyncio.Future[Any]) -> None:
        self._settle(KafkaError("batch cancelled") if sent.cancelled() else sent.exception(), sent)

    def _settle(self, exc: BaseException | None, sent: asyncio.Future[Any] | None = None) -> None:
        if self.ack.done():
            return
        if exc is None and sent is not None:
            self.ack.set_result(sent.result())
        else:
            self.ack.set_exception(exc or KafkaError("batch failed"))
            self.ack.exception()  # marked retrieved: whoever waits on it sees it; nobody else must


@dataclass(eq=False)
class PartitionState:
    topic: str
    partition: int
    pending: OrderedDict[int, None] = field(default_factory=OrderedDict)
    next_offset: int | None = None  # one past the last accepted offset
    committed: int | None = None  # last offset committed by this owner
    start: int | None = None  # the consumer's position when assigned (the lag's until a record is read)
    log_end: int | None = None  # its end offset as a broker last told it (ListOffsets), for the lag
    due_at: float = 0.0  # wall-clock time before which a retry-tier partition stays paused
    held: tuple[int, float] | None = None  # (offset, until): a copy due later than its tier allows waits until then
    revoked: bool = False
    revoking: bool = False  # being revoked: records finishing now still count, waits give up
    ready: bool = True  # False while the service's on_assigned hook restores state for this partition
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    tail: asyncio.Future[None] | None = None  # done when the fast path's last batch has queued its outputs

    def accept(self, offset: int) -> None:
        self.pending[offset] = None
        self.next_offset = offset + 1

    def finish(self, offset: int) -> None:
        self.pending.pop(offset, None)

    def finish_all(self, offsets: Iterable[int]) -> None:
        pop = self.pending.pop
        for offset in offsets:
            pop(offset, None)

    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart), or None if nothing new."""
        if self.pending:
            offset = next(iter(self.pending))
        elif self.next_offset is not None:
            offset = self.next_offset
        else:
            return None
        return offset if self.committed is None or offset > self.committed else None

    def waiting_for_due_time(self) -> bool:
        return self.due_at > time.time()

    @property
    def in_flight(self) -> int:
        return len(self.pending)
