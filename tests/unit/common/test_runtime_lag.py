"""The consumer lag gauge (postcall_consumer_lag_records), without a broker: a fake consumer's high watermark."""

from __future__ import annotations

import time

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


class Watermarks:
    """The one consumer method the lag report reads: the last high watermark a fetch brought."""

    def highwater(self, tp: TopicPartition) -> int:
        return 120


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


def test_a_partition_no_record_was_read_from_since_its_assignment_has_no_lag_series() -> None:
    """What docs/runbooks.md (PostcallConsumerLagGrowing) tells an operator a missing series means: besides a pod
    no broker answers, a partition idle since it was assigned (after a restart or a rebalance: walk24 saw the
    router's six partitions without series until the next call), whose position the runtime learns from its
    first record."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="idle-in", output_topic="o")
    runtime: Runtime = build(settings)
    runtime._consumer = Watermarks()
    state = runtime.partitions[TopicPartition("idle-in", 0)] = PartitionState("idle-in", 0)
    runtime._kafka_answered = time.monotonic()
    runtime._report_lag()
    assert lag(runtime.service, "idle-in", 0) is None
    state.accept(119)
    runtime._report_lag()
    assert lag(runtime.service, "idle-in", 0) == 1
