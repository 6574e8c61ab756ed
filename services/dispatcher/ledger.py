"""The idempotency ledger, kept in Kafka: postcall.action-results.v1 (compacted).

A result is written on the same partition number as the action's input partition, by whichever
consumer handled the action: the owner of that partition of any action topic, or the consumer that took
a retry-tier copy whose original partition it was. So a results partition changes under us, and a
snapshot read once would let a repeat through (X delivered from retry-1 by another replica, then a
duplicate of X arrives here). Before it decides an action is NOT done, a check therefore brings its
partition's set up to the partition's end offset as of the check: one catch-up read from where the last
one stopped, shared by every check that arrived before that read asked for the end offset (a check
that arrives later waits for the next read). An action already known done needs no read.

The ids whose outcome says the side effect happened (delivered, published, an earlier skip) are kept
in a DoneIndex (services/dispatcher/ledger_index.py): on disk, so memory stays bounded however many
there are, for as long as the results topic keeps them (older generations are dropped as the topic's
retention drops their records). Across rebalances a partition assigned again is caught up from where
its last read stopped, not re-read from 0. `restore` (on assignment) starts those reads in the
background so the rebalance is not held up.

Compaction keeps the last record per key. Results meaning done are keyed by action_id; failed and
dead_lettered results by `<action_id>/attempt-<n>` (see services.dispatcher.handler), so a failure
written after a delivery (two copies in flight on two replicas) can never erase the delivered record.

Left open by design: a copy performed on another replica whose result is not yet written (the runtime
produces it after the handler returns) is not seen; the receiver's dedupe by webhook-id / Message-ID
is the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.topics import ACTION_RESULTS, DONE_OUTCOMES
from services.common.errors import DependencyUnavailable
from services.dispatcher.ledger_index import DoneIndex
from services.dispatcher.metrics import LEDGER_BYTES, LEDGER_ENTRIES

log = logging.getLogger(__name__)

DELIVERED_OUTCOMES = frozenset({"delivered", "published"})  # content went out (a skip sends nothing)
BATCH = 1000  # ids written to the index per transaction while catching up
EXPIRE_EVERY_SECONDS = 3600.0
SIZE_EVERY_SECONDS = 1.0  # the index's size on disk (a gauge) is read at most this often
# ids recorded here whose results have not been read back yet (each is read back by the next check of its
# partition); beyond this many the set starts again: an id missing from it is only written to the index twice
RECORDED_LIMIT = 10_000
# reader(topic, partition, from_offset) -> records with .offset and .value, up to the end at call time
Reader = Callable[[str, int, int | None], AsyncIterator[Any]]


class _Partition:
    def __init__(self) -> None:
        self.next_offset: int | None = None
        self.latest: asyncio.Task[None] | None = None  # reads of a partition run one after the other
        self.pending: asyncio.Task[None] | None = None  # a read that has not yet asked for the end offset


class Ledger:
    def __init__(self, reader: Reader, topic: str = ACTION_RESULTS, index: DoneIndex | None = None) -> None:
        self._reader = reader
        self._topic = topic
        self._index = index if index is not None else DoneIndex()
        self._expired_at = time.monotonic()
        self._sized_at = -SIZE_EVERY_SECONDS
        self._partitions: dict[int, _Partition] = {}
        self._in_flight: dict[str, tuple[asyncio.Lock, int]] = {}  # action_id -> (lock, holders+waiters)
        self._recorded: set[str] = set()  # in the index by `record`, its result not read back yet
        self._entries: dict[int, Any] = {}  # LEDGER_ENTRIES by partition
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self, assigned: list[tuple[str, int]]) -> None:
        """Service.on_assigned: start catching up every partition number the consumer now reads."""
        for partition in sorted({p for _, p in assigned}):
            self._next_read(partition)

    async def is_done(self, partition: int, action_id: str) -> bool:
        """Whether the action's side effect already happened, as of the partition's end offset now."""
        if action_id in self._index:
            return True  # done is for good: no read needed
        await self.catch_up(partition)
        return action_id in self._index

    async def catch_up(self, partition: int) -> None:
        """Read the partition up to its end offset as of now."""
        try:
            await asyncio.shield(self._next_read(partition))
        except Exception as exc:
            # never perform a side effect unchecked; the runtime pauses and retries in place
            raise DependencyUnavailable(f"idempotency ledger unreadable: {type(exc).__name__}: {exc}") from exc

    def record(
        self,
        partition: int,
        action_id: str,
        supersedes: str | None = None,
        digest: str | None = None,
        requested_at: datetime | None = None,
    ) -> None:
        """Our own result: known done before the runtime has produced it. A superseding delivery makes the
        action it supersedes done (a later plain copy of it is a repeat) and its content the last, with when
        that correction was written (`requested_at`; not an original's: a correction is compared only with
        corrections, which separate `reextract --redeliver` runs write far apart next to the skew of two
        router replicas' clocks); its own id is not kept: whether a re-delivery goes out is decided by
        content and that time (A, B, then A again sends A again; a retry of A after B went out does not).
        The side effect has happened: a file that cannot take it (its volume full) must not turn the
        delivery into a failure that is sent again; the result on the topic carries it, and the next check
        that cannot write what it reads fails (DependencyUnavailable), never unchecked."""
        done = action_id if supersedes is None else supersedes
        try:
            self._index.add(partition, [done])
            if digest is not None:
                written = requested_at.timestamp() if supersedes is not None and requested_at is not None else None
                self._index.set_content([(supersedes or action_id, digest, None, written)])
        except sqlite3.Error as exc:
            log.warning("ledger file could not record a delivery (the results topic will): %s", exc)
            return
        if len(self._recorded) >= RECORDED_LIMIT:
            self._recorded.clear()
        self._recorded.add(done)
        self._report(partition)

    def last_content(self, action_id: str) -> str | None:
        """The content digest last delivered for the action (after `is_done` caught its partition up)."""
        last = self._index.content(action_id)
        return None if last is None else last[0]

    def last_delivered(self, action_id: str) -> tuple[str, float | None] | None:
        """(content digest, when the correction that delivered it was written, epoch seconds, or None for
        the action's own delivery or a result from before that was recorded) last delivered for it."""
        return self._index.content(action_id)

    @contextlib.asynccontextmanager
    async def claim(self, action_id: str) -> AsyncIterator[None]:
        """One attempt per action_id at a time in this process (duplicates of a record in flight wait; the
        handler claims a correction by the id it supersedes, so an action and its corrections take turns)."""
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
        return self._index.count(partition)

    def close(self) -> None:
        self._index.close()

    def _report(self, partition: int) -> None:
        if time.monotonic() - self._expired_at > EXPIRE_EVERY_SECONDS:
            self._expired_at = time.monotonic()
            if gone := self._index.expire():
                log.info("ledger dropped %d ids older than the results topic's retention", gone)
        entries = self._entries.get(partition)
        if entries is None:  # labelled once: labels() takes a lock and validates, on every delivery
            entries = self._entries[partition] = LEDGER_ENTRIES.labels(str(partition))
        entries.set(self._index.count(partition))
        if (now := time.monotonic()) - self._sized_at >= SIZE_EVERY_SECONDS:  # 3 queries: not per delivery
            self._sized_at = now
            LEDGER_BYTES.set(self._index.size_bytes())

    def _state(self, partition: int) -> _Partition:
        return self._partitions.setdefault(partition, _Partition())

    def _next_read(self, partition: int) -> asyncio.Task[None]:
        """A read that will ask for the end offset after now: the pending one, or a new one queued."""
        state = self._state(partition)
        if state.pending is None or state.pending.done():  # done before it began: cancelled at shutdown
            task = asyncio.create_task(self._read(partition, state, state.latest))
            state.latest = state.pending = task
            self._tasks.add(task)  # a reference until it ends, whoever waits for it
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_report)
        return state.pending

    async def _read(self, partition: int, state: _Partition, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        state.pending = None  # checks from now on need a read that starts after them
        initial, before = state.next_offset is None, self._index.count(partition)
        pending: list[str] = []
        stamps: list[int | None] = []
        contents: list[tuple[str, str, int | None, float | None]] = []
        last: int | None = None
        try:
            async for record in self._reader(self._topic, partition, state.next_offset):
                last = record.offset + 1
                at = getattr(record, "timestamp", None)
                done, content = _done(record.value)
                if done and done[0] in self._recorded:
                    # our own result, read back: `record` put its id in the index already, and the ids are
                    # a set (adding it again changes nothing but the CPU spent, a transaction per read)
                    self._recorded.discard(done[0])
                    done = []
                pending.extend(done)
                stamps.extend([at] * len(done))
                if content is not None:
                    contents.append((content[0], content[1], at, content[2]))
                if len(pending) >= BATCH:
                    self._write(partition, pending, stamps, contents)
                    pending, stamps, contents = [], [], []
                if not pending:
                    state.next_offset = last
        finally:
            # what was read is known done even when the read failed; the offset moves only past what is written
            self._write(partition, pending, stamps, contents)
            if last is not None:
                state.next_offset = last
        self._report(partition)
        count = self._index.count(partition)
        level = logging.INFO if initial else logging.DEBUG
        log.log(level, "ledger partition %d caught up: %d done (+%d)", partition, count, count - before)

    def _write(
        self,
        partition: int,
        done: list[str],
        stamps: list[int | None],
        contents: list[tuple[str, str, int | None, float | None]],
    ) -> None:
        self._index.add(partition, done, stamps)
        self._index.set_content(contents)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("ledger read failed: %s", task.exception())


def _done(value: bytes | None) -> tuple[list[str], tuple[str, str, float | None] | None]:
    """The id a result makes done (its action's, or the one it supersedes), and (that id, content digest,
    when the correction was written) when it delivered content or is a re-delivery's skip (its content
    unchanged); nothing for any other record."""
    if not value:
        return [], None  # a tombstone
    try:
        result = orjson.loads(value)
        if result.get("outcome") not in DONE_OUTCOMES:
            return [], None
        action_id, supersedes, digest = str(result["action_id"]), result.get("supersedes"), result.get("content_digest")
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        log.warning("ledger skips an unreadable result record")
        return [], None
    done = [supersedes] if isinstance(supersedes, str) else [action_id]
    # a re-delivery's skip is written only when its digest is the content last delivered for what it
    # supersedes, and compaction leaves it in place of that re-delivery's own delivered result (one key):
    # it says the content as well. Not a plain repeat's skip: its digest (an older router's, of the repeat
    # copy) need not be what was delivered.
    says_content = result.get("outcome") in DELIVERED_OUTCOMES or isinstance(supersedes, str)
    if not (says_content and isinstance(digest, str)):
        return done, None
    if not isinstance(supersedes, str):
        return done, (action_id, digest, None)
    return done, (supersedes, digest, _epoch(result.get("requested_at")))


def _epoch(value: object) -> float | None:
    """An RFC 3339 time as epoch seconds; None when absent (a result from before it was written) or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
