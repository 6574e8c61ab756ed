"""What the runtime's Batcher hands back for one input's outputs: the acks it waits on before the input's
offset may be committed. A real (unstarted) aiokafka producer makes the record batches; nothing is sent."""

from __future__ import annotations

import asyncio

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
