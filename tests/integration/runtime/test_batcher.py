"""services.common.kafka.Batcher on the real broker: the fast path's record batches keep the idempotent
producer's sequence numbers right, so every record is acknowledged once and in order per key."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from services.common.codec import Outgoing
from services.common.kafka import Batcher, producer
from services.common.settings import KafkaSettings
from tests.support.kafka import create_topics, read_all, unique


async def test_many_concurrent_adders_get_every_record_acknowledged_once_in_key_order(kafka: KafkaSettings) -> None:
    """Adders keep appending and flushing while the producer's sender drains batches (linger 1 ms): a
    record appended to a batch the producer may already have taken breaks its sequence numbers
    (OutOfOrderSequenceNumber, as a first version that kept handed-over batches open did); every ack
    must succeed and the topic must hold each record once, in order per key."""
    topic = unique("batched")
    await create_topics(kafka, [topic], partitions=2)
    p = producer(kafka)
    await p.start()
    batcher = Batcher(p)
    adders, per_adder = 40, 150

    async def adder(a: int) -> list[asyncio.Future[object]]:
        acks: list[asyncio.Future[object]] = []
        for i in range(per_adder):
            value = f"{a}:{i}:".encode() + b"x" * 700
            got = await batcher.add([Outgoing(topic, f"key-{a}".encode(), value, {"ce_id": f"{a}-{i}"})])
            assert got is not None
            acks.extend(got)
            if i % 7 == 0:
                batcher.flush()
                await asyncio.sleep(0)  # let the sender run between appends
        return acks

    try:
        every = [a for acks in await asyncio.gather(*(adder(a) for a in range(adders))) for a in acks]
        batcher.flush()
        results = await asyncio.wait_for(asyncio.gather(*every, return_exceptions=True), 60)
    finally:
        await p.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} batches failed, first: {failures[0]!r}"
    seen: dict[str, list[int]] = defaultdict(list)
    for r in await read_all(kafka, topic):
        a, i, _ = r.value.split(b":", 2)
        seen[a.decode()].append(int(i))
        assert r.headers["ce_id"] == f"{a.decode()}-{int(i)}"
    assert {a: seen[str(a)] for a in range(adders)} == {a: list(range(per_adder)) for a in range(adders)}


async def test_a_record_too_big_to_batch_is_refused_and_nothing_is_queued(kafka: KafkaSettings) -> None:
    topic = unique("batched")
    await create_topics(kafka, [topic], partitions=1)
    p = producer(kafka)
    await p.start()
    try:
        batcher = Batcher(p)
        small = Outgoing(topic, b"k", b"small", {})
        huge = Outgoing(topic, b"k", b"x" * (300 * 1024), {})
        assert await batcher.add([small, huge]) is None
        acks = await batcher.add([small])
        assert acks is not None
        batcher.flush()
        await asyncio.gather(*acks)
    finally:
        await p.stop()
    assert [r.value for r in await read_all(kafka, topic)] == [b"small"]


async def test_records_flushed_while_a_partitions_batch_waits_behind_the_one_in_flight_share_one_batch(
    kafka: KafkaSettings,
) -> None:
    """The producer sends one batch per partition per request, one request at a time: a partition has at
    most one batch in flight and one handed over behind it; a batch flushed meanwhile stays open and
    takes what later flushes add, so one batch, not one per flush, follows; every record still arrives
    once, in order."""
    topic = unique("batched")
    await create_topics(kafka, [topic], partitions=1)
    p = producer(kafka)
    await p.start()
    try:
        batcher = Batcher(p)
        handed: list[asyncio.Future[object]] = []
        for i in range(2):  # handed over at once: nothing before them is unacknowledged
            acks = await batcher.add([Outgoing(topic, b"k", str(i).encode(), {})])
            assert acks is not None
            handed.extend(acks)
            batcher.flush()
        later = []
        for i in range(2, 12):  # no await yields here: neither batch can be acknowledged yet
            acks = await batcher.add([Outgoing(topic, b"k", str(i).encode(), {})])
            assert acks is not None
            later.extend(acks)
            batcher.flush()
        assert handed[0] is not handed[1], "the first two flushes hand over a batch each"
        assert len({id(a) for a in later}) == 1, "each flush closed a batch of its own"
        assert later[0] not in handed
        await asyncio.wait_for(asyncio.gather(*handed, *later), 30)
    finally:
        await p.stop()
    assert [r.value for r in await read_all(kafka, topic)] == [str(i).encode() for i in range(12)]
