"""The consumer lag gauge on the real broker, read from the metrics endpoint: a series for every partition the
consumer holds from its assignment on (read or not), current while its partitions are paused, and gone
from the partitions a rebalance takes away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from services.common.api import Context, DependencyUnavailable, Event, Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings
from services.devkit.kafka import free_port
from tests.integration.runtime.test_runtime import jobs, make_topics, worker_settings
from tests.support.kafka import produce
from tests.support.worker import Done, Job, route

Lags = dict[tuple[str, int], float]


async def lags(port: int, service: str) -> Lags:
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    except httpx.ConnectError:  # not serving yet
        return {}
    return {
        (sample.labels["topic"], int(sample.labels["partition"])): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "postcall_consumer_lag_records"
        for sample in family.samples
        if sample.labels["service"] == service
    }


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)


async def ends(kafka: KafkaSettings, topic: str, partitions: int = 3) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    try:
        found = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in found.items()}


async def test_every_assigned_partition_has_a_current_lag_from_its_assignment_until_its_revocation(
    kafka: KafkaSettings,
) -> None:
    """walk24 saw partitions without a lag series after a restart: the runtime learnt a partition's position
    from its first record and its end from its first fetch, so one not read since its assignment (held by
    the service's assignment hook here, as the dispatcher's ledger restore holds it; or stuck) was missing
    from the lag an SRE alerts on, and a paused one (a dependency outage here) showed the lag of its last
    fetch while its backlog grew."""
    t = await make_topics(kafka)
    await produce(kafka, t.input, jobs(90))
    backlog = await ends(kafka, t.input)
    port = free_port()
    settings = worker_settings(kafka, t, metrics_host="127.0.0.1")
    settings.runtime.metrics_port = port
    held, down = asyncio.Event(), {"now": True}

    async def hold(partitions: list[tuple[str, int]]) -> None:
        await held.wait()

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        if down["now"]:
            raise DependencyUnavailable("the store is unavailable")
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]

    runtime = Runtime(Service(route(settings), handle, on_assigned=hold), kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        main = {(t.input, p): float(n) for p, n in backlog.items()}

        async def the_backlog_unread() -> bool:
            got = await lags(port, t.service)
            return {k: v for k, v in got.items() if k[0] == t.input} == main

        await until(the_backlog_unread, "a lag series for each partition held since its assignment")
        assert runtime.partitions and all(state.next_offset is None for state in runtime.partitions.values())
        got = await lags(port, t.service)
        assert {k for k, v in got.items() if k[0] != t.input and v == 0} == {
            (topic, p) for topic in runtime.retry_topics for p in range(3)
        }
        held.set()  # read now, but the dependency is down: every partition paused
        await asyncio.sleep(2)
        await produce(kafka, t.input, jobs(60, prefix="late"))
        grown = {(t.input, p): float(n) for p, n in (await ends(kafka, t.input)).items()}

        async def the_backlog_grown() -> bool:
            got = await lags(port, t.service)
            return {k: v for k, v in got.items() if k[0] == t.input} == grown

        await until(the_backlog_grown, "the lag of paused partitions grows with their backlog")
        down["now"] = False

        async def drained() -> bool:
            return set((await lags(port, t.service)).values()) == {0.0}

        await until(drained, "no lag once everything is read")
        other = AIOKafkaConsumer(
            t.input, *runtime.retry_topics, bootstrap_servers=kafka.bootstrap_servers, group_id=f"postcall-{t.service}"
        )
        await other.start()  # takes some of the partitions: theirs are no longer this consumer's series
        try:

            async def shared() -> bool:
                got = set(await lags(port, t.service))
                mine = {(tp.topic, tp.partition) for tp in runtime.partitions}
                return bool(other.assignment()) and got == mine and len(mine) < 3 * 3

            await until(shared, "the series of revoked partitions removed")
        finally:
            await other.stop()
    finally:
        held.set()
        runtime.stop()
        await asyncio.wait_for(task, 60)
