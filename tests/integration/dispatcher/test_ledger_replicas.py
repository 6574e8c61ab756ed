"""Two dispatcher replicas sharing one results topic on the real broker: a result one replica writes to a
partition the other has already read is seen by the other's next check, so a duplicate is skipped."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition

from schemas import headers as h
from schemas.events import ActionCompleted
from schemas.routes import DISPATCHER
from schemas.topics import ACTION_RESULTS, action_topic
from services.common import codec
from services.common.codec import Outgoing
from services.common.harness import Harness, Incoming
from services.common.kafka import producer
from services.common.settings import KafkaSettings
from services.devkit.sink import Sink
from services.dispatcher import ledger_reader
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from services.dispatcher.ledger_reader import ResultsReader
from tests.integration.dispatcher.conftest import Stack, http_destination, webhook
from tests.support.kafka import create_topics, read_all, unique

WEBHOOKS = action_topic("webhook")


def replica(dispatcher: Dispatcher, results: str) -> Harness[object]:
    """A dispatcher replica on the in-memory runtime, writing results to this test's topic."""
    route = DISPATCHER.renamed(lambda name: results if name == ACTION_RESULTS else name)
    return Harness(dataclasses.replace(dispatcher.service(), route=route), burst=False)


def retry_copy(harness: Harness[object], action: object, original_partition: int, attempt: int) -> Incoming:
    """A copy of `action` on retry tier 1, as the runtime wrote it after the action failed on its partition."""
    first = harness.record(action, partition=original_partition)  # type: ignore[arg-type]
    hop = {
        h.ATTEMPTS: str(attempt - 1),
        h.ORIGINAL_TOPIC: WEBHOOKS,
        h.ORIGINAL_PARTITION: str(original_partition),
    }
    headers = tuple(codec.header_list(codec.header_dict(first.headers) | hop))
    return dataclasses.replace(first, topic=DISPATCHER.retry_topics[0], partition=0, headers=headers)


async def write(kafka: KafkaSettings, records: Sequence[Outgoing]) -> None:
    """What the runtime does with a handler's outputs."""
    p = producer(kafka)
    await p.start()
    try:
        for r in records:
            await p.send_and_wait(r.topic, r.value, key=r.key, partition=r.partition)
    finally:
        await p.stop()


async def test_a_duplicate_is_skipped_after_another_replica_delivered_it_from_a_retry_tier(
    kafka: KafkaSettings, sink: Sink, stack: Stack
) -> None:
    results = unique("results")
    await create_topics(kafka, [results])
    yaml = "destinations:\n" + http_destination("crm", sink.url("/crm"))
    async with (
        stack(yaml) as (executors, _),
        ResultsReader(kafka, results) as reader_a,
        ResultsReader(kafka, results) as reader_c,
    ):
        ledger_a = Ledger(reader_a, topic=results)
        replica_a = replica(Dispatcher(executors, ledger_a), results)
        replica_c = replica(Dispatcher(executors, Ledger(reader_c, topic=results)), results)
        await ledger_a.restore([(WEBHOOKS, 1)])
        assert not await ledger_a.is_done(1, "x1")  # A owns webhook:1 and has read results partition 1

        # X failed on A and went to retry-1; replica C takes that copy and delivers it
        await write(kafka, (await replica_c.run(retry_copy(replica_c, webhook("x1", "crm"), 1, 2))).outputs)
        # later a duplicate of X (router re-emission, `postcall reextract`) arrives on webhook:1, owned by A
        await write(kafka, (await replica_a.send(webhook("x1", "crm"), partition=1)).outputs)
        # and another new action on A is still delivered: the catch-up does not mark everything done
        await write(kafka, (await replica_a.send(webhook("x2", "crm"), partition=1)).outputs)

    assert sink.counts["x1"] == 1 and sink.counts["x2"] == 1
    written = [
        (r.partition, r.key, ActionCompleted.model_validate_json(r.value)) for r in await read_all(kafka, results)
    ]
    assert [(p, key, c.outcome) for p, key, c in written] == [
        (1, "x1", "delivered"),
        (1, "x1", "skipped_duplicate"),
        (1, "x2", "delivered"),
    ]


async def put(kafka: KafkaSettings, topic: str, partition: int, n: int) -> None:
    p = producer(kafka)
    await p.start()
    try:
        for i in range(n):
            await p.send_and_wait(topic, b'{"action_id": "a%d", "outcome": "delivered"}' % i, partition=partition)
    finally:
        await p.stop()


async def test_results_reader_reads_to_the_end_as_of_each_call_and_goes_back_when_asked(kafka: KafkaSettings) -> None:
    topic = unique("results")
    await create_topics(kafka, [topic])
    await put(kafka, topic, 0, 3)
    async with ResultsReader(kafka, topic) as reader:

        async def offsets(partition: int, start: int | None) -> list[int]:
            return [r.offset async for r in reader(topic, partition, start)]

        assert await offsets(0, None) == [0, 1, 2]
        assert await offsets(0, 3) == []
        await put(kafka, topic, 0, 2)
        assert await offsets(0, 3) == [3, 4]
        assert await offsets(0, 1) == [1, 2, 3, 4]  # an earlier offset than the consumer's: it seeks back
        assert await offsets(2, None) == []
        with pytest.raises(LookupError, match="no partition 7"):
            await offsets(7, None)


async def test_results_reader_keeps_what_it_fetched_for_other_partitions_and_pauses_a_full_buffer(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every partition's fetched records are taken at once into that partition's buffer (records left in
    aiokafka's fetcher hold back its next fetch); a buffer nobody reads pauses its partition at the limit,
    and the next read resumes it and still returns every record in order."""
    monkeypatch.setattr(ledger_reader, "BUFFER_LIMIT", 4)
    topic = unique("results")
    await create_topics(kafka, [topic], partitions=2)
    async with ResultsReader(kafka, topic) as reader:

        async def offsets(partition: int, start: int | None) -> list[int]:
            return [r.offset async for r in reader(topic, partition, start)]

        assert await offsets(0, None) == [] and await offsets(1, None) == []  # both resumed from here on
        await put(kafka, topic, 1, 10)
        await put(kafka, topic, 0, 1)
        assert await offsets(0, 0) == [0]
        assert reader._consumer is not None
        for _ in range(50):  # the pump takes partition 1's records without any read of it, up to the limit
            if TopicPartition(topic, 1) in reader._consumer.paused():
                break
            await asyncio.sleep(0.1)
        assert [r.offset for r in reader._buffers[1].records] == [0, 1, 2, 3]
        assert TopicPartition(topic, 1) in reader._consumer.paused()
        assert await offsets(1, 0) == list(range(10))
        await put(kafka, topic, 1, 12)
        assert await offsets(1, 10) == list(range(10, 22))
