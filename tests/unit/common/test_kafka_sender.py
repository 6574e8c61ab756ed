"""The runtime's one-record path hands its outputs to aiokafka's send() one caller at a time
(services.common.kafka.Sender); a producer that the test controls stands in for aiokafka's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.common.codec import Outgoing
from services.common.kafka import PartitionState, Sender
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


class FullBatch:
    """aiokafka's send(): a record in `waits` (the first, by default) waits for its partition's full batch to
    drain (until `drained`), the others return at once; what was sent, in order, and how many callers
    were inside send() at the same time, at most."""

    def __init__(self, waits: tuple[bytes, ...] = (b"0",)) -> None:
        self.drained = asyncio.Event()
        self.waits = set(waits)
        self.sent: list[bytes | None] = []
        self.inside = self.most_inside = 0
        self.fail: set[bytes] = set()

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if value in self.waits:
                await self.drained.wait()
            if value in self.fail:
                raise KafkaConnectionError("no leader")
            self.sent.append(value)
            ack = asyncio.get_running_loop().create_future()
            ack.set_result(None)
            return ack
        finally:
            self.inside -= 1


def record(i: int) -> Outgoing:
    return Outgoing("out", b"k", str(i).encode(), {})


def runtime_over(producer: FullBatch) -> Runtime:
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    runtime._producer = producer
    runtime._sender = Sender(producer)  # type: ignore[arg-type]
    runtime._batcher = NotBatched()  # type: ignore[assignment]
    return runtime


class NotBatched:
    """A Batcher that batches nothing (a retry tier, a dead-letter topic, a record too big for a batch):
    the one-record path sends such outputs through the Sender."""

    def add_nowait(self, records: Any) -> None:
        return None

    def flush(self) -> None:
        raise AssertionError("nothing was batched")


async def turns_until(done: Any) -> int:
    """Event-loop turns until done() is true."""
    turns = 0
    while not done():
        await asyncio.sleep(0)
        turns += 1
        assert turns < 10_000
    return turns


async def test_records_queued_behind_a_full_batch_go_out_in_order_without_a_loop_turn_each() -> None:
    """Behind a lock, each of the records that queued while a batch was full took an event-loop turn of its
    own to reach send(): with the dispatcher's window of 1024 nearly every record waited, and a loop turn
    per record doubled the one-record path's CPU per record (bench, 1 KB: 84-113 us at window 1024 against
    ~60 at 64). One at a time in send() still (aiokafka wakes every waiting sender at each drain)."""
    producer = FullBatch()
    runtime = runtime_over(producer)
    n = 500
    sends = [asyncio.create_task(runtime._send(record(i))) for i in range(n)]
    await turns_until(lambda: producer.inside == 1)  # the first waits for the drain; the rest queue behind it
    producer.drained.set()
    turns = await turns_until(lambda: len(producer.sent) == n)
    await asyncio.gather(*sends)
    assert producer.sent == [str(i).encode() for i in range(n)], "in the order they came"
    assert producer.most_inside == 1, "never two callers inside aiokafka's send()"
    assert turns < 10, f"{turns} loop turns to send {n} queued records"


async def test_a_caller_cancelled_while_queued_is_not_sent_and_a_failure_reaches_only_its_own_caller() -> None:
    producer = FullBatch()
    producer.fail = {b"2"}
    sender = Sender(producer)  # type: ignore[arg-type]
    sends = [asyncio.create_task(sender.send(record(i))) for i in range(5)]
    await turns_until(lambda: producer.inside == 1)
    sends[3].cancel()
    producer.drained.set()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert producer.sent == [b"0", b"1", b"4"]
    assert isinstance(results[2], KafkaConnectionError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(isinstance(r, asyncio.Future) for r in (results[0], results[1], results[4]))


async def test_the_queue_is_taken_over_when_the_caller_sending_is_cancelled() -> None:
    producer = FullBatch()
    sender = Sender(producer)  # type: ignore[arg-type]
    first = asyncio.create_task(sender.send(record(0)))
    await turns_until(lambda: producer.inside == 1)
    queued = [asyncio.create_task(sender.send(record(i))) for i in range(1, 4)]
    await asyncio.sleep(0)
    first.cancel()  # the caller inside send() goes away (its input revoked): the others are still sent
    producer.drained.set()
    await asyncio.wait_for(asyncio.gather(*queued), 5)
    assert producer.sent == [b"1", b"2", b"3"]


async def test_queued_records_fail_instead_of_hanging_when_the_sending_task_is_cancelled() -> None:
    producer = FullBatch(waits=(b"0", b"2"))
    sender = Sender(producer)  # type: ignore[arg-type]
    sends = [asyncio.create_task(sender.send(record(i))) for i in range(4)]
    await turns_until(lambda: producer.inside == 1)
    producer.drained.set()
    producer.drained = asyncio.Event()  # "2" waits for a drain that never comes
    await turns_until(lambda: producer.sent == [b"0", b"1"] and producer.inside == 1)
    assert sender._drain is not None
    sender._drain.cancel()  # the loop shutting down
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert isinstance(results[2], asyncio.CancelledError)
    assert isinstance(results[3], KafkaError) and "stopped before" in str(results[3])


async def test_what_the_one_record_path_does_not_batch_goes_through_the_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FullBatch()
    producer.drained.set()
    runtime = runtime_over(producer)
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    await asyncio.wait_for(runtime._produce(state, [record(1), record(2)]), 5)
    assert producer.sent == [b"1", b"2"]
