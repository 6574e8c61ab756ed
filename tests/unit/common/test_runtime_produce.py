"""Producing a record's outcome without a broker: a scripted producer stands in for aiokafka's."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


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
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    record = ConsumerRecord("in", 0, 7, 0, 0, b"k", b'{"id": "a"}', None, 1, 11, ())
    state.accept(record.offset)

    await asyncio.wait_for(runtime._process(state, record), 5)

    assert producer.sent == ["out"], "the output is produced once the buffer drains, nothing else"


_real_sleep = asyncio.sleep


async def _no_wait(delay: float, *args: Any) -> Any:
    return await _real_sleep(0, *args)
