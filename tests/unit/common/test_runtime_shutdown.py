"""The runtime's shutdown without a broker: scripted clients stand in for aiokafka's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.common import runtime as runtime_module
from services.common.kafka import PartitionState
from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build

TP = TopicPartition("in", 0)


class FetcherCancelledConsumer:
    """aiokafka 0.14's consumer.stop() during a broker outage: its fetcher cancels a fetch task sleeping
    out a connection error's backoff and awaits it, so stop() raises that task's CancelledError
    (aiokafka/consumer/fetcher.py Fetcher.close: `x.cancel(); await x`)."""

    def __init__(self) -> None:
        self.stopped = False

    async def commit(self, offsets: object) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True
        fetch = asyncio.create_task(asyncio.sleep(0.1))  # _proc_fetch_request in its retry backoff
        await asyncio.sleep(0)
        fetch.cancel()
        await fetch


class Producer:
    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


def runtime_with(consumer: FetcherCancelledConsumer) -> tuple[Runtime, Producer]:
    settings = WorkerSettings(kafka={"bootstrap_servers": "127.0.0.1:1"}, input_topic="in", output_topic="out")  # type: ignore[arg-type]
    runtime: Runtime = build(settings)
    runtime._consumer = consumer  # type: ignore[assignment]
    producer = runtime._producer = Producer()
    return runtime, producer


async def test_a_consumer_stop_that_raises_its_fetchers_cancellation_still_stops_the_producer_and_returns() -> None:
    """SIGTERM while the brokers were away (tests/integration/runtime/test_probes.py): the consumer's stop()
    raised the CancelledError of its own fetch task, so the producer was never stopped (nothing flushed,
    its connections left) and run() ended with that CancelledError: a traceback and exit status 1 for a
    clean stop. Probe: a worker SIGTERMed 12 s and 30 s into an outage exited 1 both times."""
    consumer = FetcherCancelledConsumer()
    runtime, producer = runtime_with(consumer)

    await asyncio.wait_for(runtime._shutdown(), 5)  # raised CancelledError before

    assert consumer.stopped and producer.stopped


async def test_a_shutdown_that_is_itself_cancelled_stays_cancelled() -> None:
    """Only a cancellation the task was not asked for is the consumer's own: one addressed to the task
    (the event loop closing, a caller's timeout) still ends it."""
    consumer = FetcherCancelledConsumer()
    runtime, producer = runtime_with(consumer)

    async def slow_stop() -> None:
        consumer.stopped = True
        await asyncio.sleep(60)

    consumer.stop = slow_stop  # type: ignore[method-assign]
    task = asyncio.create_task(runtime._shutdown())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.stopped, "the producer is stopped on the way out all the same"


class OutageConsumer:
    """aiokafka's consumer while no broker answers: its commit waits for a group coordinator for ever
    (GroupCoordinator.ensure_coordinator_known loops until the consumer closes); polls return nothing."""

    def __init__(self) -> None:
        self.commits = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(min(timeout_ms / 1000, 0.01))
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        pass


class OutageProducer:
    """aiokafka's producer.stop() while no broker answers: it waits for its buffered batches for ever."""

    async def stop(self) -> None:
        await asyncio.sleep(3600)


async def test_a_stop_during_a_broker_outage_is_heard_and_ends_although_no_commit_or_flush_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy worker SIGTERMed 5 s into a broker outage (/tmp/review14c/probe_commit.py) never exited: its
    poll loop was inside a commit that waits for a coordinator for ever, so the stop was never heard; and
    once heard, the last commit and the producer's flush would each wait for ever too. Each is given up
    after a bound (the records concerned are left uncommitted, read again after the restart)."""
    monkeypatch.setattr(runtime_module, "COMMIT_TIMEOUT_SECONDS", 0.05, raising=False)
    monkeypatch.setattr(runtime_module, "CLIENT_STOP_SECONDS", 0.05, raising=False)
    consumer = OutageConsumer()
    runtime, _ = runtime_with(consumer)  # type: ignore[arg-type]
    runtime._producer = OutageProducer()
    runtime.settings.commit_interval_seconds = 0.01
    state = runtime.partitions[TP] = PartitionState(TP.topic, TP.partition)
    state.accept(7)
    state.finish(7)  # offset 8 is to be committed

    loop = asyncio.create_task(runtime._loop())
    await asyncio.sleep(0.1)
    assert consumer.commits >= 1 and not loop.done()
    runtime.stop()
    await asyncio.wait_for(loop, 2)  # never returned before
    await asyncio.wait_for(runtime._shutdown(), 2)  # the last commit, then the producer's stop
    assert state.committed is None, "nothing was committed"
