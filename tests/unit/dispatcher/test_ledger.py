"""The idempotency ledger over a fake results partition reader."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from services.common.errors import DependencyUnavailable
from services.dispatcher.ledger import Ledger
from services.dispatcher.ledger_index import DoneIndex


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
        """Like ResultsReader: up to the partition's end at the time of the call."""
        self.reads.append((partition, from_offset))
        log = list(self.partitions.get(partition, []))
        for rec in log:
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


async def test_its_own_results_read_back_are_not_written_to_the_index_again() -> None:
    results = Results()
    index = DoneIndex()
    written: list[str] = []
    add = index.add

    def counting_add(partition: int, action_ids: list[str], at_ms: list[int | None] | None = None) -> None:
        written.extend(action_ids)
        add(partition, action_ids, at_ms)

    index.add = counting_add  # type: ignore[method-assign]
    ledger = Ledger(results.read, index=index)
    assert not await ledger.is_done(0, "mine")
    ledger.record(0, "mine")
    results.add(0, "other", "delivered")  # another replica's, written before ours
    results.add(0, "mine", "delivered")  # ours, as the runtime produces it
    results.add(0, "mine-again", "delivered")
    written.clear()
    assert not await ledger.is_done(0, "new")  # reads the three back
    assert written == ["other", "mine-again"]
    assert await ledger.is_done(0, "mine") and await ledger.is_done(0, "other")
    assert ledger.size(0) == 3
    results.add(0, "mine", "delivered")  # a second result for it (a copy on another replica): written again
    assert not await ledger.is_done(0, "new")
    assert written == ["other", "mine-again", "mine"] and ledger.size(0) == 3
    ledger.close()


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


async def test_a_check_sees_results_another_consumer_wrote_after_the_first_read() -> None:
    # X failed here, another replica delivered it from retry-1 and wrote `delivered` to this partition
    results = Results()
    results.add(1, "other", "delivered")
    ledger = Ledger(results.read)
    await ledger.restore([("postcall.actions.webhook.v1", 1)])
    assert not await ledger.is_done(1, "x")
    results.add(1, "x", "failed")
    results.add(1, "x", "delivered")
    assert await ledger.is_done(1, "x")  # a duplicate of X is skipped
    assert results.reads[-1] == (1, 1)  # caught up from where the last read stopped


async def test_an_action_known_done_is_answered_without_a_read() -> None:
    results = Results()
    results.add(0, "a", "delivered")
    ledger = Ledger(results.read)
    assert await ledger.is_done(0, "a")
    ledger.record(0, "b")
    assert await ledger.is_done(0, "a") and await ledger.is_done(0, "b")
    assert results.reads == [(0, None)]


class Gated(Results):
    """Reads wait at the gate after taking the partition's end, as a read waits on the broker."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def read(self, topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        self.started += 1
        records = [r async for r in super().read(topic, partition, from_offset)]  # the end, as of now
        await self.gate.wait()
        for rec in records:
            yield rec


async def test_checks_waiting_together_share_one_read() -> None:
    results = Gated()
    results.add(0, "a", "delivered")
    ledger = Ledger(results.read)
    checks = [asyncio.create_task(ledger.is_done(0, aid)) for aid in ["a", "b", "c", "d", "e"] * 4]
    await asyncio.sleep(0.01)
    results.gate.set()
    assert [await c for c in checks] == [True, False, False, False, False] * 4
    assert results.started == 1


async def test_a_check_arriving_during_a_read_waits_for_the_next_read() -> None:
    results = Gated()
    ledger = Ledger(results.read)
    first = asyncio.create_task(ledger.is_done(0, "x"))
    await asyncio.sleep(0.01)  # the first read has taken the end offset: x is not there yet
    results.add(0, "x", "delivered")
    second = asyncio.create_task(ledger.is_done(0, "x"))
    third = asyncio.create_task(ledger.is_done(0, "x"))
    await asyncio.sleep(0.01)
    results.gate.set()
    assert (await first, await second, await third) == (False, True, True)
    assert results.reads == [(0, None), (0, None)]  # the first read applied nothing: the second starts at 0
    assert results.started == 2  # the second and third checks shared one read


async def test_sets_are_kept_across_a_rebalance_and_caught_up_from_where_they_stopped() -> None:
    results = Results()
    results.add(2, "a", "delivered")
    ledger = Ledger(results.read)
    await ledger.restore([("webhook", 2)])
    assert await ledger.is_done(2, "a")
    results.add(2, "b", "delivered")  # written by the next owner while partition 2 was elsewhere
    await ledger.restore([("webhook", 2)])  # assigned again
    assert await ledger.is_done(2, "a") and await ledger.is_done(2, "b")
    assert results.reads == [(2, None), (2, 1)]


async def test_the_ledgers_ids_are_not_held_in_the_process_heap() -> None:
    """Every id in a Python set cost ~124 MiB per million: about two actions a second for the topic's 30
    days filled the pod's limit. The index keeps them on disk; the heap does not grow with them."""
    results = Results()
    for i in range(100_000):
        results.add(0, str(uuid.UUID(int=i)), "delivered")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger = Ledger(results.read)
        await ledger.restore([("postcall.actions.webhook.v1", 0)])
        assert await ledger.is_done(0, str(uuid.UUID(int=99_999)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert ledger.size(0) == 100_000
    assert held < 1 << 20, f"{held / 2**20:.1f} MiB of Python heap for 100,000 ids"
    ledger.close()


@pytest.mark.parametrize(
    "action_id", ["6f1c1a9e-3b0f-5d7e-9a55-0c3f5e8b2d11", "not-a-uuid", "6F1C1A9E-3B0F-5D7E-9A55-0C3F5E8B2D11"]
)
def test_ids_are_exact_whatever_their_form(action_id: str) -> None:
    index = DoneIndex()
    index.add(0, [action_id])
    assert action_id in index
    assert "6f1c1a9e-3b0f-5d7e-9a55-0c3f5e8b2d12" not in index
    assert (action_id.lower() in index) == (action_id == action_id.lower())  # no two texts share a key
    index.close()


def test_generations_older_than_the_retention_are_dropped_whole(tmp_path: Path) -> None:
    day = 86_400_000
    now = 400 * day
    index = DoneIndex(tmp_path, retention_ms=30 * day)
    index.add(3, ["old"], [now - 60 * day])
    index.add(3, ["recent", "also-recent"], [now - 2 * day, now - 1])
    assert index.count(3) == 3 and "old" in index
    assert index.expire(now) == 1
    assert "old" not in index and "recent" in index and index.count(3) == 2
    assert index.size_bytes() > 0
    index.close()
    assert list(tmp_path.iterdir()) == []  # the file goes with the process


def test_a_file_left_by_a_killed_process_is_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "postcall-ledger-deadbeef.sqlite3").write_bytes(b"stale")
    index = DoneIndex(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [index.path.name] if index.path else False
    index.close()


async def test_the_index_size_is_exported() -> None:
    results = Results()
    results.add(0, "a", "delivered")
    ledger = Ledger(results.read)
    await ledger.restore([("t", 0)])
    assert await ledger.is_done(0, "a")
    assert REGISTRY.get_sample_value("postcall_ledger_index_bytes") > 0
    assert REGISTRY.get_sample_value("postcall_ledger_entries", {"partition": "0"}) == 1
    ledger.close()


async def test_content_last_delivered_is_read_back_from_the_results_in_order() -> None:
    results = Results()
    log = results.partitions.setdefault(0, [])
    for value in (
        {"action_id": "a", "outcome": "delivered", "content_digest": "d1"},
        {"action_id": "a-2", "outcome": "delivered", "content_digest": "d2", "supersedes": "a"},
        # a plain repeat's skip delivers nothing: its digest (an older router's) is the repeat copy's
        {"action_id": "a", "outcome": "skipped_duplicate", "content_digest": "d3"},
        {"action_id": "b-2", "outcome": "published", "content_digest": "e2", "supersedes": "b"},
        {"action_id": "c", "outcome": "delivered", "content_digest": "f1"},
        # a re-delivery's skip is written only when its digest is the content last delivered, and compaction
        # leaves it where that re-delivery's own delivered result was (c-2: f2, then skipped as unchanged)
        {"action_id": "c-2", "outcome": "skipped_duplicate", "content_digest": "f2", "supersedes": "c"},
    ):
        log.append(Rec(len(log), orjson.dumps(value)))
    ledger = Ledger(results.read)
    assert not await ledger.is_done(0, "zzz")  # catches the partition up
    assert [ledger.last_content(a) for a in ("a", "b", "c")] == ["d2", "e2", "f2"]
    assert await ledger.is_done(0, "b")  # superseded: a plain copy of it is a repeat
    assert not await ledger.is_done(0, "a-2")  # a correction's own id is never a reason to skip
    ledger.close()
