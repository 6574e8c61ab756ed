"""The consumer lag gauge (postcall_consumer_lag_records), without a broker: a fake consumer's high watermark."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


class Watermarks:
    """The consumer methods the lag report reads: the last high watermark a fetch brought (None: no fetch
    answered since the assignment) and when; the assignment; the position and end offsets a broker gives."""

    def __init__(self, high: int | None = 120, *, position: int = 100, end: int = 120) -> None:
        self.high, self.at_position, self.end = high, position, end
        self.asked: list[list[TopicPartition]] = []

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return None if self.high is None else int(time.time() * 1000)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t, p) for t in ("lag-in", "idle-in", "held-in") for p in range(3)}

    async def position(self, tp: TopicPartition) -> int:
        return self.at_position

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked.append(list(tps))
        return dict.fromkeys(tps, self.end)


def lag(service: str, topic: str, partition: int) -> float | None:
    labels = {"service": service, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("postcall_consumer_lag_records", labels)


def test_the_lag_is_not_shown_while_no_broker_answers() -> None:
    """The high watermark is the last one a fetch brought: while no broker answers it stays, and the gauge
    showed a lag frozen at its last value (a backlog neither growing nor shrinking) for as long as the
    outage lasted. Unknown is shown as no series, as Prometheus' own exporters do; it is back at the first
    report after a broker answers again."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="lag-in", output_topic="o")
    runtime: Runtime = build(settings)
    runtime._consumer = Watermarks()
    state = runtime.partitions[TopicPartition("lag-in", 0)] = PartitionState("lag-in", 0)
    state.accept(99)
    state.finish(99)  # next to commit: 100
    runtime._kafka_answered = time.monotonic()
    runtime._report_lag()
    assert lag(runtime.service, "lag-in", 0) == 20
    runtime._kafka_answered = time.monotonic() - runtime.settings.kafka_ready_seconds - 1
    runtime._report_lag()
    assert lag(runtime.service, "lag-in", 0) is None
    runtime._report_lag()  # still none: nothing to remove
    runtime._kafka_answered = time.monotonic()
    state.accept(109)
    state.finish(109)
    runtime._report_lag()
    assert lag(runtime.service, "lag-in", 0) == 10


async def test_a_partition_no_record_was_read_from_since_its_assignment_has_a_lag_series_from_its_assignment() -> None:
    """walk24 saw the router's six partitions without series after a restart until the next call: the runtime
    learnt a partition's position from its first record and its end from its first fetch, so a partition
    not read since its assignment (stuck, held, or just assigned behind a backlog) was missing from the
    lag an SRE alerts on. At assignment a broker is asked for its position and end offset; the series is
    removed on revocation."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="idle-in", output_topic="o")
    runtime: Runtime = build(settings)
    runtime._consumer = Watermarks(None, position=100, end=130)
    runtime._kafka_answered = time.monotonic()
    tp = TopicPartition("idle-in", 0)
    await runtime.on_assigned({tp})
    await asyncio.gather(*runtime._lag_tasks)
    assert lag(runtime.service, "idle-in", 0) == 30
    runtime.partitions[tp].accept(119)  # its first record: counted from it, against the end a broker gave
    assert runtime._report_lag() == [tp]  # no fetch yet: its end is asked for again
    assert lag(runtime.service, "idle-in", 0) == 11
    await runtime.on_revoked({tp})
    assert lag(runtime.service, "idle-in", 0) is None


async def test_a_partition_paused_since_its_last_fetch_has_its_end_asked_for() -> None:
    """A paused partition is not fetched (a retry tier held for its due time, every partition during a
    dependency outage): its high watermark, and so its lag, stayed at its last fetch while its backlog grew."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="held-in", output_topic="o")
    runtime: Runtime = build(settings)
    runtime._consumer = consumer = Watermarks(120, end=500)
    runtime._kafka_answered = time.monotonic()
    state = runtime.partitions[TopicPartition("held-in", 0)] = PartitionState("held-in", 0)
    state.accept(99)
    state.finish(99)
    consumer.last_poll_timestamp = lambda tp: int(time.time() * 1000) - 60_000  # type: ignore[method-assign]
    runtime._learn_offsets(runtime._report_lag())
    assert lag(runtime.service, "held-in", 0) == 20
    await asyncio.gather(*runtime._lag_tasks)
    assert consumer.asked == [[TopicPartition("held-in", 0)]]
    assert lag(runtime.service, "held-in", 0) == 400
