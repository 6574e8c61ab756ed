"""A dependency outage without a broker: the record waits in place, and the processed counter counts it
once, whatever the number of waits (a scripted producer and batcher stand in for aiokafka's)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from services.common.api import Context, DependencyUnavailable, Event, PermanentError, Service
from services.common.kafka import PartitionState, Sender
from services.common.runtime import Runtime
from services.common.settings import RuntimeSettings
from tests.support.worker import Done, Job, WorkerSettings, route

WAITS = 4  # the dependency answers as unavailable this many times per record, then works


class Acked:
    """aiokafka's send() with the brokers acknowledging at once."""

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class AckedBatcher:
    def add_nowait(self, records: Any) -> list[asyncio.Future[None]]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return [future]

    def flush(self) -> None:
        pass


def scripted(handle: Any) -> Runtime:
    """The worker's route on a runtime whose producer and batcher acknowledge at once, with `handle`."""
    settings = WorkerSettings(
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # type: ignore[arg-type]
        runtime=RuntimeSettings(metrics_port=0, unavailable_backoff_seconds=0.01),
        input_topic="in",
        output_topic="out",
    )
    run = Runtime(Service(route(settings), handle), kafka=settings.kafka, settings=settings.runtime)
    run._producer = Acked()
    run._sender = Sender(run._producer)
    run._batcher = AckedBatcher()  # type: ignore[assignment]
    return run


def runtime() -> Runtime:
    calls: Counter[str] = Counter()

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        calls[job.id] += 1
        if calls[job.id] <= WAITS:
            raise DependencyUnavailable("the LLM's circuit is open")
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]

    return scripted(handle)


def processed(outcome: str) -> float:
    return REGISTRY.get_sample_value("postcall_records_processed_total", {"service": "worker", "outcome": outcome}) or 0


def records(state: PartitionState, offsets: range) -> list[Any]:
    out = [ConsumerRecord("in", 0, o, 0, 0, b"k", b'{"id": "%d"}' % o, None, 1, 11, ()) for o in offsets]
    for record in out:
        state.accept(record.offset)
    return out


async def test_a_record_that_waits_for_a_dependency_counts_as_unavailable_once_not_at_every_wait() -> None:
    """postcall_records_processed_total counts records: the dashboard's "Records processed / s" stacks its
    outcomes. A record that waited out four pauses of an LLM outage and then went through is one
    `unavailable` and one `ok`, not four and one (during an outage the panel grew with every pause)."""
    run = runtime()
    state = run.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    unavailable, ok = processed("unavailable"), processed("ok")

    for record in records(state, range(0, 2)):  # the one-record path
        await asyncio.wait_for(run._process(state, record), 5)
    run.in_flight = 3
    done = await asyncio.wait_for(run._queue_batch(state, records(state, range(2, 5))), 5)  # the fast path
    await asyncio.wait_for(run._acknowledge(state, done, [3]), 5)

    assert processed("ok") - ok == 5
    assert processed("unavailable") - unavailable == 5


async def test_the_end_of_an_outage_is_logged_once(caplog: Any) -> None:
    """The pauses were logged ("dependency unavailable, pausing", then at most once a minute) and nothing said
    when they ended: an operator reading a recorder's log after a store outage (walk24) could not tell when
    it resumed. The first record through after the outage says so, once, however many records waited."""
    store = {"down": True}

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        if store["down"]:
            raise DependencyUnavailable("the store is unavailable")
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]

    run = scripted(handle)
    state = run.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    caplog.set_level("INFO", logger="postcall.runtime")

    def resumed() -> list[Any]:
        return [r for r in caplog.records if r.getMessage() == "dependency available again, resuming"]

    for outage in range(2):
        waiting = [
            asyncio.create_task(run._process(state, r)) for r in records(state, range(outage * 3, outage * 3 + 3))
        ]
        await asyncio.sleep(0.1)
        assert not resumed()
        store["down"] = False
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        (line,) = resumed()
        assert line.paused_seconds >= 0.1
        caplog.clear()
        store["down"] = True
    run.in_flight = 3
    batch = asyncio.create_task(run._queue_batch(state, records(state, range(6, 9))))  # the fast path
    await asyncio.sleep(0.1)
    assert not resumed()
    store["down"] = False
    done = await asyncio.wait_for(batch, 5)
    await asyncio.wait_for(run._acknowledge(state, done, [3]), 5)
    assert len(resumed()) == 1


async def test_the_end_of_an_outage_is_logged_when_the_record_that_waited_then_fails_otherwise(caplog: Any) -> None:
    """The dependency answered, with an error of another kind (the record's own: dead-lettered, or retried
    later): the outage ended all the same. Nothing said so, and the next outage's end counted its pause from
    this one's start (paused_seconds the hours between them) when no record waited in between."""
    store = {"down": True}

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        if store["down"]:
            raise DependencyUnavailable("the store is unavailable")
        raise PermanentError("no such agent")

    run = scripted(handle)
    state = run.partitions[TopicPartition("in", 0)] = PartitionState("in", 0)
    caplog.set_level("INFO", logger="postcall.runtime")

    def resumed() -> list[Any]:
        return [r for r in caplog.records if r.getMessage() == "dependency available again, resuming"]

    (one,) = records(state, range(0, 1))
    waiting = asyncio.create_task(run._process(state, one))  # the one-record path
    await asyncio.sleep(0.1)
    store["down"] = False
    await asyncio.wait_for(waiting, 5)
    assert len(resumed()) == 1
    store["down"] = True
    run.in_flight = 1
    batch = asyncio.create_task(run._queue_batch(state, records(state, range(1, 2))))  # the fast path
    await asyncio.sleep(0.1)
    store["down"] = False
    await asyncio.wait_for(batch, 5)
    assert len(resumed()) == 2


async def test_an_outage_whose_waiting_records_were_revoked_or_stopped_does_not_stretch_the_next_one(
    caplog: Any,
) -> None:
    """review24b: a record waiting for the dependency left by Stopped (its partition revoked, or the service
    stopping) kept the outage open, its end never seen: with no other record waiting, the next outage's
    'resuming' line counted paused_seconds from the first one's start. The last waiting record leaving so
    now ends it, saying its end was not seen; one leaving while another still waits does not."""
    store = {"down": True}

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        if store["down"]:
            raise DependencyUnavailable("the store is unavailable")
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]

    run = scripted(handle)
    caplog.set_level("INFO", logger="postcall.runtime")

    def lines(message: str) -> list[Any]:
        return [r for r in caplog.records if r.getMessage() == message]

    def partition(number: int) -> PartitionState:
        state = run.partitions[TopicPartition("in", number)] = PartitionState("in", number)
        return state

    # the one-record path: two partitions wait; the first revoked leaves the outage open (the other waits)
    first, second = partition(0), partition(1)
    waiting = [asyncio.create_task(run._process(s, r)) for s in (first, second) for r in records(s, range(0, 1))]
    await asyncio.sleep(0.1)
    first.revoking = True
    await asyncio.wait_for(asyncio.gather(waiting[0], return_exceptions=True), 5)  # Stopped: left uncommitted
    assert not lines("no record waits for the dependency any more, its end not seen")
    second.revoking = True
    await asyncio.wait_for(asyncio.gather(waiting[1], return_exceptions=True), 5)
    (unseen,) = lines("no record waits for the dependency any more, its end not seen")
    assert unseen.paused_seconds >= 0.1
    # the fast path, on a new assignment: the stop while it waits ends the outage as well
    caplog.clear()
    third = partition(2)
    run.in_flight = 1
    batch = asyncio.create_task(run._queue_batch(third, records(third, range(0, 1))))
    await asyncio.sleep(0.1)
    run.stop()
    await asyncio.wait_for(asyncio.gather(batch, return_exceptions=True), 5)
    assert len(lines("no record waits for the dependency any more, its end not seen")) == 1
    run._stopping.clear()
    # the dependency answered meanwhile, unseen; a later outage counts its own pause only
    store["down"] = False
    await asyncio.sleep(0.5)
    store["down"] = True
    fourth = partition(3)
    (record,) = records(fourth, range(0, 1))
    later = asyncio.create_task(run._process(fourth, record))
    await asyncio.sleep(0.1)
    store["down"] = False
    await asyncio.wait_for(later, 5)
    (resumed,) = lines("dependency available again, resuming")
    assert 0.1 <= resumed.paused_seconds < 0.4
