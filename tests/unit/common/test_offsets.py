"""The committable offset never passes an unfinished record (nor, on the fast path, an unacknowledged output)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


def test_commit_stops_at_the_lowest_unfinished_offset() -> None:
    state = PartitionState("t", 0)
    for offset in (5, 6, 7, 8):
        state.accept(offset)
    state.finish(6)
    state.finish(8)
    assert state.committable() == 5  # 5 still runs: 6 and 8 are done but must wait
    state.finish(5)
    assert state.committable() == 7
    state.finish(7)
    assert state.committable() == 9


def test_nothing_to_commit_before_any_record_or_after_a_commit() -> None:
    state = PartitionState("t", 0)
    assert state.committable() is None
    state.accept(0)
    state.finish(0)
    state.committed = 1
    assert state.committable() is None


async def test_the_fast_path_finishes_records_as_their_own_outputs_are_acknowledged() -> None:
    """A polled batch's records leave the window and become committable in offset order as soon as the
    record batches holding their own outputs are acknowledged, not when the last output of the poll is;
    never past a record whose outputs are not acknowledged yet."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    records = [ConsumerRecord("in", 0, offset, 0, 0, b"k", b"{}", None, 1, 2, ()) for offset in range(10, 14)]
    for record in records:
        state.accept(record.offset)
    runtime.in_flight = window_before = len(records)
    window = [len(records)]
    acks = [[first], [first], [first, second], [second]]
    done = [(record, record_acks, ()) for record, record_acks in zip(records, acks, strict=True)]
    task = asyncio.create_task(runtime._acknowledge(state, done, window))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert state.committable() == 10 and runtime.in_flight == window_before  # nothing acknowledged yet
    first.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert state.committable() == 12, "records 10 and 11 are durable; 12 still waits for its second batch"
    assert runtime.in_flight == 2 and window == [2]
    second.set_result(None)
    await asyncio.wait_for(task, 5)
    assert state.committable() == 14 and runtime.in_flight == 0 and window == [0]
