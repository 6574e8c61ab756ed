"""Producing a record's outcome without a broker: a scripted producer stands in for aiokafka's."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from services.common.kafka import PartitionState, Sender
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build
from tests.unit.common.test_kafka_sender import NotBatched


class FullThenDrained:
    """aiokafka's send() while a partition's batch stays full (its leader away) for longer than
    request_timeout_ms: KafkaTimeoutError, "we can't schedule this record"; then the leader is back."""

    def __init__(self, timeouts: int) -> None:
        self.timeouts = timeouts
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        if self.timeouts:
            self.timeouts -= 1
            raise KafkaTimeoutError()
        self.sent.append(topic)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_producer_timeout_is_broker_trouble_retried_not_a_dead_letter(monkeypatch: Any) -> None:
    """A full partition buffer that did not drain in time (KafkaTimeoutError, which aiokafka does not
    mark retriable) is broker trouble: the outputs are sent again while the input is ours, the record
    is neither dead-lettered as permanent nor retried as its handler's failure."""
    monkeypatch.setattr("services.common.runtime.asyncio.sleep", _no_wait)
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    producer = runtime._producer = FullThenDrained(timeouts=1)
    runtime._sender = Sender(producer)
    runtime._batcher = NotBatched()  # type: ignore[assignment]
    state, record = one_record(runtime)

    await asyncio.wait_for(runtime._process(state, record), 5)

    assert producer.sent == ["out"], "the output is produced once the buffer drains, nothing else"


_real_sleep = asyncio.sleep


async def _no_wait(delay: float, *args: Any) -> Any:
    return await _real_sleep(0, *args)


class Scripted:
    """aiokafka's send(): each call returns a future the test resolves, fails or leaves pending."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


class ScriptedBatcher:
    """The fast path's Batcher: one pending ack per input's outputs, resolved by the test."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []

    def add_nowait(self, records: Any) -> list[asyncio.Future[None]]:
        self.acks.append(asyncio.get_running_loop().create_future())
        return [self.acks[-1]]

    def flush(self) -> None:
        pass


def fast_path() -> tuple[Runtime, ScriptedBatcher]:
    """A worker's runtime whose fast path queues into a ScriptedBatcher."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    batcher = runtime._batcher = ScriptedBatcher()  # type: ignore[assignment]
    return runtime, batcher


def polled(runtime: Runtime) -> tuple[PartitionState, list[ConsumerRecord[bytes, bytes]]]:
    """Two records of partition in-0 (offsets 3 and 4), polled and in flight."""
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    records = [ConsumerRecord("in", 0, o, 0, 0, b"k", b'{"id": "a"}', None, 1, 11, ()) for o in (3, 4)]
    for record in records:
        state.accept(record.offset)
    runtime.in_flight = 2
    return state, records


def one_record(runtime: Runtime) -> tuple[PartitionState, ConsumerRecord[bytes, bytes]]:
    """One record of partition in:0, taken (in flight) as the poll loop takes it."""
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord("in", 0, 7, 0, 0, b"k", b'{"id": "a"}', None, 1, 11, ())
    state.accept(record.offset)
    return state, record


def produced(topic: str = "out") -> float:
    return REGISTRY.get_sample_value("postcall_records_produced_total", {"service": "worker", "topic": topic}) or 0.0


async def until(condition: Any) -> None:
    for _ in range(100):
        if condition():
            return
        await _real_sleep(0)
    raise AssertionError("condition not reached")


async def test_records_count_as_produced_once_acknowledged_not_when_queued_or_sent_again(monkeypatch: Any) -> None:
    """postcall_records_produced_total is "produced and acknowledged": an output counts once the brokers
    acknowledge it, not when it is handed to the producer, and once, not at every send of a retry after
    broker trouble (the dashboard's "Consumed and produced" and the in/out comparison read it)."""
    monkeypatch.setattr("services.common.runtime.asyncio.sleep", _no_wait)
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    producer = runtime._producer = Scripted()
    runtime._sender = Sender(producer)
    runtime._batcher = NotBatched()  # type: ignore[assignment]
    state, record = one_record(runtime)
    before = produced()

    task = asyncio.create_task(runtime._process(state, record))
    await until(lambda: len(producer.futures) == 1)
    assert produced() == before, "queued, not acknowledged yet"
    producer.futures[0].set_exception(KafkaConnectionError())  # broker trouble: sent again
    await until(lambda: len(producer.futures) == 2)
    assert produced() == before
    producer.futures[1].set_result(None)
    await asyncio.wait_for(task, 5)

    assert produced() == before + 1


async def test_fast_path_outputs_count_as_produced_once_acknowledged() -> None:
    runtime, batcher = fast_path()
    state, records = polled(runtime)
    before = produced()

    done = await runtime._queue_batch(state, records)
    task = asyncio.create_task(runtime._acknowledge(state, done, [2]))
    await until(lambda: len(batcher.acks) == 2)
    assert produced() == before, "queued, not acknowledged yet"
    batcher.acks[0].set_result(None)
    await until(lambda: state.committable() == 4)
    assert produced() <= before + 1, "the second record's output is not acknowledged yet"
    batcher.acks[1].set_result(None)
    await asyncio.wait_for(task, 5)

    assert produced() == before + 2


async def test_fast_path_records_waiting_for_acks_keep_no_output_alive() -> None:
    """While a polled batch waits for its acks, each record keeps its acks and its outputs' topics, not its
    outputs: with the window full (2,048 records on a compute-only route) the outputs, each with its event
    and headers, kept ~30,000 objects alive, and the cyclic GC ran 20x as often (1 KB pass-through,
    bench/runtime.py: 2-4 us more CPU per record). Counting them as produced once acknowledged still works."""
    runtime, batcher = fast_path()
    made: list[weakref.ref[Any]] = []
    outputs = runtime.processor.outputs

    def watched(events: Any, ctx: Any) -> Any:
        made.extend(weakref.ref(event) for event in events)
        return outputs(events, ctx)

    runtime.processor.outputs = watched  # type: ignore[method-assign]
    state, records = polled(runtime)
    before = produced()

    done = await runtime._queue_batch(state, records)
    gc.collect()
    assert len(made) == 2 and all(ref() is None for ref in made), "outputs held while their acks are pending"
    for ack in batcher.acks:
        ack.set_result(None)
    await asyncio.wait_for(runtime._acknowledge(state, done, [2]), 5)
    assert produced() == before + 2 and state.committable() == 5


async def test_one_record_path_batches_its_outputs_and_counts_them_once_acknowledged(monkeypatch: Any) -> None:
    """The one-record path queues an input's outputs into the Batcher, as the fast path does (not a send()
    per output: its coroutine, partitioner call and future), and the record is done only once their batch is
    acknowledged; a batch that fails with broker trouble (KafkaTimeoutError too, which aiokafka does not mark
    retriable) is queued again, neither dead-lettered nor retried as the handler's failure, and counts once."""
    monkeypatch.setattr("services.common.runtime.asyncio.sleep", _no_wait)
    runtime, batcher = fast_path()
    runtime._sender = Sender(Scripted())  # type: ignore[arg-type]
    state, record = one_record(runtime)
    before = produced()

    task = asyncio.create_task(runtime._process(state, record))
    await until(lambda: len(batcher.acks) == 1)
    assert produced() == before and not task.done(), "queued, not acknowledged yet"
    batcher.acks[0].set_exception(KafkaTimeoutError())
    await until(lambda: len(batcher.acks) == 2)
    batcher.acks[1].set_exception(KafkaConnectionError())
    await until(lambda: len(batcher.acks) == 3)
    assert produced() == before and not task.done()
    batcher.acks[2].set_result(None)
    await asyncio.wait_for(task, 5)

    assert produced() == before + 1
    assert runtime._sender.producer.futures == [], "nothing went through send()"  # type: ignore[attr-defined]
