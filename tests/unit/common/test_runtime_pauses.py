"""The runtime's pause for an unavailable dependency (an LLM or store outage), without a broker."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition

from services.common.api import DependencyUnavailable
from services.common.kafka import PartitionState
from services.common.observability import RepeatFilter
from services.common.runtime import Runtime, pauses_log
from tests.support.worker import WorkerSettings, build


async def test_an_outage_logs_its_pause_once_not_at_every_wait_of_every_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every waiting record logged "dependency unavailable, pausing" at each of its waits: about 13 lines a
    second per pod for as long as an LLM outage lasted. The first is logged (with its reason), the repeats
    are counted on the next line let through, at most a minute later."""
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    runtime.settings.unavailable_backoff_seconds = 0.001
    state = runtime.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    caplog.set_level(logging.INFO)
    for f in pauses_log.filters:  # forget an earlier test's pauses in this process
        if isinstance(f, RepeatFilter):
            f._shown.clear()
    for attempt in range(40):
        exc = DependencyUnavailable(f"llm: connection refused ({attempt})")
        await runtime._wait_for_dependency(state, exc, first=attempt % 4 == 0)
    pauses = [r for r in caplog.records if r.getMessage() == "dependency unavailable, pausing"]
    assert len(pauses) == 1, f"{len(pauses)} lines for one outage"
    assert pauses[0].reason == "llm: connection refused (0)"  # type: ignore[attr-defined]
