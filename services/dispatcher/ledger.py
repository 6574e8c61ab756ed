"""The idempotency ledger, kept in Kafka: postcall.action-results.v1 (compacted, key = action_id).

A result is written on the same partition number as the action's input partition. When partitions are
assigned, results partition p is read from where we last stopped to its end, and the action_ids whose
outcome says the side effect happened (delivered, published, or an earlier skip) go into an in-memory
set for p. A redelivered action found there is skipped instead of performed again. Partitions other
than the assigned ones are loaded on first use (a retry-tier record names its original partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from schemas.topics import ACTION_RESULTS
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
        self.lock = asyncio.Lock()


class Ledger:
    def __init__(self, reader: Reader, topic: str = ACTION_RESULTS) -> None:
        self._reader = reader
        self._topic = topic
        self._partitions: dict[int, _Partition] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._in_flight: dict[str, tuple[asyncio.Lock, int]] = {}  # action_id -> (lock, holders+waiters)

    async def restore(self, assigned: list[tuple[str, int]]) -> None:
        """Lifecycle.on_assigned: catch up every partition number the consumer now reads."""
        self._assigned.update(assigned)
        for partition in sorted({p for _, p in assigned}):
            await self._catch_up(partition)

    async def drop(self, revoked: list[tuple[str, int]]) -> None:
        """Lifecycle.on_revoked: forget partition numbers no assigned topic uses any more."""
        self._assigned.difference_update(revoked)
        still = {p for _, p in self._assigned}
        for partition in {p for _, p in revoked} - still:
            if self._partitions.pop(partition, None) is not None:
                LEDGER_ENTRIES.remove(str(partition))

    async def is_done(self, partition: int, action_id: str) -> bool:
        state = self._partitions.get(partition)
        if state is None:
            state = await self._catch_up(partition)
        return action_id in state.done

    def record(self, partition: int, action_id: str) -> None:
        """Our own result: known done before the runtime has produced it."""
        state = self._partitions.setdefault(partition, _Partition())
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

    async def _catch_up(self, partition: int) -> _Partition:
        state = self._partitions.setdefault(partition, _Partition())
        async with state.lock:
            before = len(state.done)
            async for record in self._reader(self._topic, partition, state.next_offset):
                state.next_offset = record.offset + 1
                _apply(state.done, record.value)
        LEDGER_ENTRIES.labels(str(partition)).set(len(state.done))
        added = len(state.done) - before
        log.info("ledger partition %d caught up: %d done (+%d)", partition, len(state.done), added)
        return state


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
