"""What the runtime's Batcher hands back for one input's outputs: the acks it waits on before the input's
offset may be committed. A real (unstarted) aiokafka producer makes the record batches; nothing is sent."""

from __future__ import annotations

import asyncio

from aiokafka.protocol.metadata import MetadataResponse_v1

from services.common import kafka as common_kafka
from services.common.codec import Outgoing
from services.common.kafka import MAX_BATCH_BYTES, Batcher
from services.common.settings import KafkaSettings


def out(topic: str, partition: int, size: int = 10) -> Outgoing:
    return Outgoing(topic, b"k", b"v" * size, {}, partition)


async def test_outputs_get_the_ack_of_every_batch_that_holds_one_of_them_in_order() -> None:
    """One batch: that batch's own acks (shared by every input in it, 1619dd1); several: the ack of every
    batch that holds one of the outputs; a full batch handed over: the next batch's ack too; no outputs:
    nothing to wait for. The input's offset is committed once all of them are acknowledged."""
    producer = common_kafka.producer(KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    batcher = Batcher(producer)
    batcher._partitions = {"a": [0, 1], "b": [0]}
    try:
        one = batcher.add_nowait([out("a", 0), out("a", 0)])
        a0 = batcher._open[("a", 0)]
        assert one is a0.acks and list(one) == [a0.ack]
        assert batcher.add_nowait([out("a", 0)]) is a0.acks
        spread = batcher.add_nowait([out("a", 0), out("b", 0), out("b", 0), out("a", 1), out("a", 0)])
        b0, a1 = batcher._open[("b", 0)], batcher._open[("a", 1)]
        assert list(dict.fromkeys(spread or ())) == [a0.ack, b0.ack, a1.ack]
        assert batcher.add_nowait([]) == []
        big = MAX_BATCH_BYTES // 2
        filled = batcher.add_nowait([out("b", 0, big), out("b", 0, big), out("b", 0, big)])
        after, acks = batcher._open[("b", 0)], list(filled or ())
        assert after is not b0 and acks[0] is b0.ack and acks[-1] is after.ack and len(acks) >= 2
        assert batcher.add_nowait([out("c", 0)]) is None  # a topic whose partitions are not known yet
    finally:
        for task in list(batcher._submitting):  # the full batch's hand-over to the producer, never started
            task.cancel()
        await asyncio.gather(*batcher._submitting, return_exceptions=True)
        await producer.stop()


def _metadata(partitions: dict[str, int]) -> MetadataResponse_v1:
    """A broker's metadata answer naming these topics with this many partitions each, all led by node 0."""
    topics = [(0, topic, False, [(0, p, 0, [0], [0]) for p in range(count)]) for topic, count in partitions.items()]
    return MetadataResponse_v1(brokers=[(0, "127.0.0.1", 9, None)], controller_id=0, topics=topics)


async def test_a_partition_added_to_an_output_topic_is_used_once_the_metadata_names_it() -> None:
    """The Batcher read its topics' partitions once, at start, and kept them: after partitions were added
    to an output topic, the fast path kept placing keys by the old count until a restart, while the
    one-record path (the producer's send(), for a record whose outputs must be produced again) placed the
    same keys by the new count, so one input's outputs could land on two partitions. It now follows the
    producer's metadata, as send() does (refreshed every metadata_max_age_ms and on produce errors)."""
    producer = common_kafka.producer(KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    batcher = Batcher(producer)
    try:
        producer.client.cluster.update_metadata(_metadata({"a": 2, "b": 1}))
        await batcher.learn(["a"])
        assert batcher._partitions["a"] == [0, 1]
        keys = [b"conv-%d" % i for i in range(64)]
        for key in keys:
            batcher.add_nowait([Outgoing("a", key, b"v", {}, None)])
        assert {tp for tp in batcher._open} == {("a", 0), ("a", 1)}
        producer.client.cluster.update_metadata(_metadata({"a": 3, "b": 1}))
        chosen = set()
        for key in keys:
            acks = batcher.add_nowait([Outgoing("a", key, b"v", {}, None)])
            (partition,) = [tp[1] for tp, batch in batcher._open.items() if acks is batch.acks]
            assert partition == common_kafka.key_partition(key, 3), key  # as send()'s partitioner chooses
            chosen.add(partition)
        assert chosen == {0, 1, 2}
        producer.client.cluster.update_metadata(_metadata({"b": 1}))  # the topic missing from one answer
        assert batcher._partitions["a"] == [0, 1, 2]  # kept: send() would wait for it, the fast path goes on
    finally:
        await producer.stop()
