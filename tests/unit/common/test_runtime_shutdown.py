"""The runtime's shutdown without a broker: scripted clients stand in for aiokafka's."""

from __future__ import annotations

import asyncio

import pytest

from services.common.runtime import Runtime
from tests.support.worker import WorkerSettings, build


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
