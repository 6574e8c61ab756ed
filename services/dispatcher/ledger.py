"""The idempotency ledger, kept in Kafka: postcall.action-results.v1 (compacted, key = action_id).

A result is written on the same partition number as the action's input partition. When partitions are
assigned, results partition p is read from where we last stopped to its end, and the action_ids whose
outcome says the side effect happened (delivered, published, or an earlier skip) go into an in-memory
set for p. A redelivered action found there is skipped instead of performed again. The reads run in the
background (the rebalance is not held up) and every check of partition p waits for p's read. Partitions
other than the assigned ones are loaded on first use (a retry-tier record names its original partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from schemas.topics import ACTION_RESULTS
from services.common.errors import DependencyUnavailable
from services.common.kafka import read_partition
from services.common.settings import KafkaSettings
from services.dispatcher.metrics import LEDGER_ENTRIES

log = logging.getLogger(__name__)

DONE_OUTCOMES = frozenset({"delivered", "published", "skipped_duplicate"})
# read_partition(topic, partition, from_offset) -> records with .offset and .value
Reader = Callable[[str, int, int | None], AsyncIterator[Any]]


class _Partition:
    def __init__(self) -> None:
        self.done: set[str] = set()
        self.next_offset: int | None = None
        self.loading: asyncio.Task[None] | None = None  # the latest read; earlier ones are in `reads`
        self.reads: set[asyncio.Task[None]] = set()


class Ledger:
    def __init__(self, reader: Reader, topic: str = ACTION_RESULTS) -> None:
        self._reader = reader
        self._topic = topic
        self._partitions: dict[int, _Partition] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._in_flight: dict[str, tuple[asyncio.Lock, int]] = {}  # action_id -> (lock, holders+waiters)

    async def restore(self, assigned: list[tuple[str, int]]) -> None:
        """Lifecycle.on_assigned: start catching up every partition number the consumer now reads.

        The reads run in the background so the rebalance is not held up; `is_done` waits for them.
        """
        self._assigned.update(assigned)
        for partition in sorted({p for _, p in assigned}):
            self._catch_up(partition)

    async def drop(self, revoked: list[tuple[str, int]]) -> None:
        """Lifecycle.on_revoked: forget partition numbers no assigned topic uses any more."""
        self._assigned.difference_update(revoked)
        still = {p for _, p in self._assigned}
        for partition in {p for _, p in revoked} - still:
            state = self._partitions.pop(partition, None)
            if state is not None:
                for task in state.reads:
                    task.cancel()
                with contextlib.suppress(KeyError):  # never reported if no read finished
                    LEDGER_ENTRIES.remove(str(partition))

    async def is_done(self, partition: int, action_id: str) -> bool:
        """Whether the action's side effect already happened; waits for the partition's catch-up."""
        state = self._partitions.get(partition)
        task = self._catch_up(partition) if state is None else state.loading
        if task is not None and not (task.done() and not task.cancelled() and task.exception() is None):
            if task.done():  # the last read failed or was cancelled: read again
                task = self._catch_up(partition)
            try:
                await asyncio.shield(task)
            except Exception as exc:
                # never perform a side effect unchecked; the runtime pauses and retries in place
                raise DependencyUnavailable(f"idempotency ledger unreadable: {type(exc).__name__}: {exc}") from exc
        return action_id in self._partitions[partition].done

    def record(self, partition: int, action_id: str) -> None:
        """Our own result: known done before the runtime has produced it (a partition not held is
        left alone: its next catch-up reads the result from Kafka)."""
        state = self._partitions.get(partition)
        if state is not None:
            state.done.add(action_id)
            LEDGER_ENTRIES.labels(str(partition)).set(len(state.done))

    @contextlib.asynccontextmanager
    async def claim(self, action_id: str) -> AsyncIterator[None]:
        """One attempt per action_id at a time in this process (duplicates of a record in flight wait)."""
        lock, users = self._in_flight.get(action_id, (asyncio.Lock(), 0))
        self._in_flight[action_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._in_flight[action_id]
            if users == 1:
                del self._in_flight[action_id]
            else:
                self._in_flight[action_id] = (lock, users - 1)

    def size(self, partition: int) -> int:
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.done)

    def _catch_up(self, partition: int) -> asyncio.Task[None]:
        """Read results partition `partition` from where the last read stopped to its current end."""
        state = self._partitions.setdefault(partition, _Partition())
        task = asyncio.create_task(self._read(partition, state, state.loading))
        state.loading = task
        state.reads.add(task)
        task.add_done_callback(state.reads.discard)
        task.add_done_callback(_report)
        return task

    async def _read(self, partition: int, state: _Partition, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # reads of one partition run one after the other
        before = len(state.done)
        async for record in self._reader(self._topic, partition, state.next_offset):
            state.next_offset = record.offset + 1
            _apply(state.done, record.value)
        LEDGER_ENTRIES.labels(str(partition)).set(len(state.done))
        added = len(state.done) - before
        log.info("ledger partition %d caught up: %d done (+%d)", partition, len(state.done), added)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("ledger read failed: %s", task.exception())


def _apply(done: set[str], value: bytes | None) -> None:
    if not value:
        return  # a tombstone
    try:
        result = orjson.loads(value)
        if result.get("outcome") in DONE_OUTCOMES:
            done.add(str(result["action_id"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError):
        log.warning("ledger skips an unreadable result record")


def kafka_reader(kafka: KafkaSettings) -> Reader:
    """Reads with services.common.kafka.read_partition."""

    def read(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        return read_partition(kafka, topic, partition, from_offset=from_offset)

    return read
