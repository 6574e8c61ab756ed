"""The idempotency ledger over a fake results partition reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from services.common.errors import DependencyUnavailable
from services.dispatcher.ledger import Ledger


@dataclass
class Rec:
    offset: int
    value: bytes | None


class Results:
    """results partitions as lists; records what was read from where."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[Rec]] = {}
        self.reads: list[tuple[int, int | None]] = []

    def add(self, partition: int, action_id: str, outcome: str) -> None:
        log = self.partitions.setdefault(partition, [])
        log.append(Rec(len(log), orjson.dumps({"action_id": action_id, "outcome": outcome})))

    async def read(self, topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        self.reads.append((partition, from_offset))
        for rec in self.partitions.get(partition, []):
            if from_offset is None or rec.offset >= from_offset:
                yield rec


async def test_restore_loads_only_outcomes_that_mean_done() -> None:
    results = Results()
    for aid, outcome in [
        ("a", "delivered"),
        ("b", "failed"),
        ("c", "published"),
        ("d", "dead_lettered"),
        ("e", "skipped_duplicate"),
    ]:
        results.add(0, aid, outcome)
    results.partitions[0].append(Rec(5, None))  # a tombstone
    results.partitions[0].append(Rec(6, b"not json"))
    ledger = Ledger(results.read)
    await ledger.restore([("postcall.actions.webhook.v1", 0)])
    assert [await ledger.is_done(0, a) for a in "abcde"] == [True, False, True, False, True]
    assert ledger.size(0) == 3


async def test_restore_catches_up_from_where_it_stopped() -> None:
    results = Results()
    results.add(1, "a", "delivered")
    ledger = Ledger(results.read)
    await ledger.restore([("t1", 1)])
    assert await ledger.is_done(1, "a")
    results.add(1, "b", "delivered")
    await ledger.restore([("t2", 1)])
    assert await ledger.is_done(1, "b")
    assert results.reads == [(1, None), (1, 1)]


async def test_drop_forgets_a_partition_only_when_no_assigned_topic_uses_it() -> None:
    results = Results()
    results.add(2, "a", "delivered")
    ledger = Ledger(results.read)
    await ledger.restore([("webhook", 2), ("email", 2)])
    assert await ledger.is_done(2, "a")
    await ledger.drop([("webhook", 2)])
    assert ledger.size(2) == 1
    await ledger.drop([("email", 2)])
    assert ledger.size(2) == 0


async def test_an_unassigned_partition_is_loaded_on_first_use() -> None:
    results = Results()
    results.add(2, "a", "delivered")
    ledger = Ledger(results.read)
    assert await ledger.is_done(2, "a")
    assert results.reads == [(2, None)]


async def test_recorded_actions_are_done_at_once() -> None:
    ledger = Ledger(Results().read)
    assert not await ledger.is_done(0, "x")
    ledger.record(0, "x")
    assert await ledger.is_done(0, "x")


async def test_restore_does_not_wait_for_the_read_but_checks_do() -> None:
    gate = asyncio.Event()
    results = Results()
    results.add(0, "a", "delivered")

    async def slow(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        await gate.wait()
        async for rec in results.read(topic, partition, from_offset):
            yield rec

    ledger = Ledger(slow)
    await asyncio.wait_for(ledger.restore([("webhook", 0)]), 1)  # returns while the read is blocked
    check = asyncio.create_task(ledger.is_done(0, "a"))
    await asyncio.sleep(0.01)
    assert not check.done()
    gate.set()
    assert await check


async def test_unreadable_ledger_is_a_dependency_outage_and_is_read_again_later() -> None:
    results = Results()
    results.add(0, "a", "delivered")
    failures = [OSError("broker down")]

    async def flaky(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        if failures:
            raise failures.pop()
        async for rec in results.read(topic, partition, from_offset):
            yield rec

    ledger = Ledger(flaky)
    with pytest.raises(DependencyUnavailable, match="broker down"):
        await ledger.is_done(0, "a")
    assert await ledger.is_done(0, "a")


async def test_claim_serialises_attempts_of_one_action_id_only() -> None:
    ledger = Ledger(Results().read)
    events: list[str] = []

    async def attempt(aid: str, tag: str) -> None:
        async with ledger.claim(aid):
            events.append(f"{tag}+")
            await asyncio.sleep(0.02)
            events.append(f"{tag}-")

    await asyncio.gather(attempt("x", "1"), attempt("x", "2"), attempt("y", "3"))
    assert events.index("1-") < events.index("2+")
    assert events.index("3+") < events.index("1-")  # another action_id does not wait
    assert ledger._in_flight == {}


async def test_revoking_during_a_read_cancels_it_and_a_later_check_reads_again() -> None:
    gate = asyncio.Event()
    results = Results()
    results.add(0, "a", "delivered")

    async def blocked(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        await gate.wait()
        async for rec in results.read(topic, partition, from_offset):
            yield rec

    ledger = Ledger(blocked)
    await ledger.restore([("webhook", 0)])
    await ledger.restore([("email", 0)])  # a second read queued behind the first
    await asyncio.sleep(0)
    await ledger.drop([("webhook", 0), ("email", 0)])
    assert ledger.size(0) == 0
    gate.set()
    assert await ledger.is_done(0, "a")
    assert results.reads == [(0, None)]  # the cancelled reads never read; the new one read once
