"""Two dispatcher replicas sharing one results topic on the real broker: a result one replica writes to a
partition the other has already read is seen by the other's next check, so a duplicate is skipped."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from schemas.events import ActionCompleted
from schemas.topics import action_topic, retry_topic
from services.common.kafka import producer
from services.common.runtime import Emit, RecordContext
from services.common.settings import KafkaSettings
from services.devkit.sink import Sink
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from services.dispatcher.ledger_reader import ResultsReader
from tests.integration.dispatcher.conftest import Stack, http_destination, webhook
from tests.support.kafka import create_topics, read_all, unique

WEBHOOKS = action_topic("webhook")


def context(topic: str, partition: int, attempt: int = 1, original_partition: int | None = None) -> RecordContext:
    original = -1 if original_partition is None else original_partition
    return RecordContext(
        "dispatcher", topic, WEBHOOKS, partition, 0, "conv-1", 0, {}, attempt, original_partition=original
    )


async def write(kafka: KafkaSettings, emits: Sequence[Emit]) -> None:
    """What the runtime does with a handler's outputs."""
    p = producer(kafka)
    await p.start()
    try:
        for e in emits:
            key = e.key.encode() if e.key else None
            await p.send_and_wait(e.topic, e.value.model_dump_json().encode(), key=key, partition=e.partition)
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
        replica_a = Dispatcher(executors, ledger_a, results_topic=results)
        replica_c = Dispatcher(executors, Ledger(reader_c, topic=results), results_topic=results)
        await ledger_a.restore([(WEBHOOKS, 1)])
        assert not await ledger_a.is_done(1, "x1")  # A owns webhook:1 and has read results partition 1

        # X failed on A and went to retry-1; replica C takes that copy and delivers it
        await write(kafka, await replica_c(webhook("x1", "crm"), context(retry_topic("dispatcher", 1), 0, 2, 1)))
        # later a duplicate of X (router re-emission, `postcall reextract`) arrives on webhook:1, owned by A
        outputs = await replica_a(webhook("x1", "crm"), context(WEBHOOKS, 1))
        await write(kafka, outputs)
        # and another new action on A is still delivered: the catch-up does not mark everything done
        await write(kafka, await replica_a(webhook("x2", "crm"), context(WEBHOOKS, 1)))

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
