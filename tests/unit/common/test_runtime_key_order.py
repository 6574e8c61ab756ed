"""Key-ordered records on the one-record path, without a broker: a record waiting for its key's
predecessor when a revoke's drain times out is cancelled with it, not run."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from aiokafka import TopicPartition

from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build

Record = namedtuple("Record", "topic partition offset key value headers")
TP = TopicPartition("in", 0)


class Consumer:
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass


def key_ordered_runtime() -> Runtime:
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")
    settings.runtime.ordering = "key"
    settings.runtime.drain_timeout_seconds = 0.05
    runtime = build(settings)
    runtime._consumer = Consumer()
    return runtime


def started_two(runtime: Runtime, first: Any) -> list[int]:
    """Two records of one key on the one-record path, the first handled by `first`; the offsets handled."""
    state = runtime.partitions[TP] = PartitionState(TP.topic, TP.partition)
    handled: list[int] = []

    async def process(state: PartitionState, record: Any) -> None:
        handled.append(record.offset)
        if record.offset == 0:
            await first()

    runtime._process = process  # type: ignore[method-assign]
    for offset in (0, 1):
        runtime._start(state, Record(TP.topic, TP.partition, offset, b"same-key", b"{}", []))
    return handled


async def test_a_record_waiting_for_its_keys_predecessor_is_not_handled_after_a_drain_cancels_it() -> None:
    """The waiting record swallowed its own cancellation (it suppressed every exception of the wait for its
    predecessor, its own CancelledError too) and ran its handler while the partition was being revoked:
    outputs produced for a record left uncommitted, which the next owner handles and produces again."""
    runtime = key_ordered_runtime()
    handled = started_two(runtime, lambda: asyncio.sleep(60))  # a slow handler: the drain gives up on it
    await asyncio.sleep(0.01)
    assert handled == [0]  # the second waits for the first
    await runtime.on_revoked({TP})
    await asyncio.sleep(0.05)
    assert handled == [0], "the waiting record ran its handler after the revoke cancelled it"
    assert runtime.in_flight == 0


async def test_a_record_runs_after_its_keys_predecessor_failed() -> None:
    """A predecessor that ends with an error (not a cancellation of the waiting record) does not stop it."""
    runtime = key_ordered_runtime()
    runtime.stop = lambda: None  # type: ignore[method-assign]  # the internal-error path stops the service

    async def failing() -> None:
        raise RuntimeError("a bug in the handler's wrapper")

    handled = started_two(runtime, failing)
    await asyncio.sleep(0.05)
    assert handled == [0, 1]
