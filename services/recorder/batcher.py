"""Group commit: many records in flight each add their rows and wait; one writer turns what has
gathered into one batch (two transactions, see services/store/writer.py) and wakes them all.

A handler returns only once its rows are committed, so the runtime commits the record's offset only
after its rows are durable. A batch the database refuses for a reason of its own (a value it cannot
hold) is written again record by record, so that only the guilty record fails (and is dead-lettered)
and the others are stored; a database that cannot be reached, or cannot take writes for now (read-only
after a failover, disk full, too many connections: see `unreachable`), fails every waiter with
DependencyUnavailable, and the runtime pauses and retries in place. So does a store that has not committed
a record's rows within `max_wait_seconds` (a table a migration locks, a connection a failover left
hanging, a batch queued behind such a one): slowness is not the record's fault, while the runtime's
handler timeout, which would come next, dead-letters (the recorder has no retry tiers).

Memory: a record waiting holds its decoded event and its rows (a conversation with a long transcript,
several times its encoded size; a dead letter, its value). `capacity` is 0 while the records waiting
weigh `max_bytes_waiting` or more (their events' JSON and dead letters' values, as the rows carry them):
the recorder's backpressure (services.common.api.Service.capacity), so that a backlog of large records
is not all taken at once, which the window's count alone (2000) would allow: an out-of-memory kill, and
the same records read again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.errors import DependencyUnavailable, PermanentError
from services.common.settings import RuntimeSettings
from services.recorder import metrics
from services.store.db import unreachable
from services.store.rows import Rows

log = logging.getLogger("postcall.recorder")
Write = Callable[[Rows], Awaitable[None]]


@dataclass
class _Waiting:
    rows: Rows
    done: asyncio.Future[None]
    since: float  # the loop's time when it was added


def max_wait(runtime: RuntimeSettings) -> float:
    """How long a record waits for its rows' commit: most of the runtime's handler timeout."""
    return runtime.handler_timeout_seconds * 0.9


def weight(rows: Rows) -> int:
    """About how many bytes of the record the rows hold: the encoded events and dead-letter values."""
    total = 0
    for name, column in _HEAVY:
        for row in getattr(rows, name):
            total += len(row.get(column) or b"")
    return total


_HEAVY = (
    ("conversations", "event"), ("extractions", "payload"), ("decisions", "payload"), ("requests", "payload"),
    ("dead_letters", "value"), ("dead_letters", "headers"),
)  # fmt: skip
DEFAULT_MAX_BYTES_WAITING = 32 * 1024 * 1024
POLL_RECORDS = 64  # records taken at a time while the budget has room


class Batcher:
    def __init__(
        self,
        write: Write,
        *,
        max_records: int = 1000,
        max_delay_seconds: float = 0.02,
        max_wait_seconds: float | None = None,
        max_bytes_waiting: int = DEFAULT_MAX_BYTES_WAITING,
    ) -> None:
        self._write = write
        self._max_records = max_records
        self._max_delay = max_delay_seconds
        self._max_bytes = max_bytes_waiting
        self._bytes = 0  # the weight of the records waiting (queued, or in the batch being written)
        self._max_wait = max_wait(RuntimeSettings()) if max_wait_seconds is None else max_wait_seconds
        self._queue: list[_Waiting] = []
        self._writing: list[_Waiting] = []  # the batch being written
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def add(self, rows: Rows) -> None:
        """Returns once `rows` are committed; raises DependencyUnavailable or PermanentError."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(rows, loop.create_future(), loop.time())
        self._queue.append(waiting)
        self._arrived.set()
        heavy = weight(rows)
        self._bytes += heavy
        try:
            await waiting.done
        finally:
            self._bytes -= heavy

    def capacity(self) -> int:
        """How many more records the recorder takes now (the runtime's backpressure, Service.capacity): none
        while those waiting weigh `max_bytes_waiting` or more, else a poll of POLL_RECORDS (so that the
        budget is passed by one poll's records at most)."""
        return 0 if self._bytes >= self._max_bytes else POLL_RECORDS

    async def __aenter__(self) -> Batcher:
        self._tasks = [
            asyncio.create_task(self._run(), name="recorder-batcher"),
            asyncio.create_task(self._give_up_on_the_late(), name="recorder-batcher-wait"),
        ]
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiting in (*self._writing, *self._queue):  # nobody is left to write them: they stay uncommitted
            if not waiting.done.done():
                waiting.done.set_exception(DependencyUnavailable("the recorder is stopping"))

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if len(self._queue) < self._max_records:
                await asyncio.sleep(self._max_delay)  # let the records in flight join this batch
            # a record given up on (too late, or its handler cancelled) is tried again, or read again after
            # a restart: its rows are not written now
            waiting = [w for w in self._queue if not w.done.done()]
            batch, self._queue = waiting[: self._max_records], waiting[self._max_records :]
            if not self._queue:
                self._arrived.clear()
            if batch:
                self._writing = batch
                try:
                    await self._flush(batch)
                finally:
                    self._writing = []

    async def _give_up_on_the_late(self) -> None:
        """Fail each record whose rows are not committed `max_wait_seconds` after it was added (checked
        every twentieth of that, so always before the handler timeout); one timer for all of them."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._max_wait / 20)
            late = loop.time() - self._max_wait
            for waiting in (*self._writing, *self._queue):  # oldest first
                if waiting.since > late:
                    break
                if not waiting.done.done():
                    waiting.done.set_exception(
                        DependencyUnavailable(f"the store has not committed the record within {self._max_wait:g}s")
                    )

    async def _flush(self, batch: list[_Waiting]) -> None:
        merged = Rows()
        for waiting in batch:
            merged.extend(waiting.rows)
        started = time.perf_counter()
        try:
            await self._write(merged)
        except Exception as exc:
            if unreachable(exc):
                _fail_all(batch, DependencyUnavailable(f"the store is unavailable: {_short(exc)}"))
                return
            log.warning("batch refused, writing its records one by one", extra={"error": _short(exc)})
            await self._one_by_one(batch)
            return
        metrics.observe_batch(merged, len(batch), time.perf_counter() - started)
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_result(None)

    async def _one_by_one(self, batch: list[_Waiting]) -> None:
        for waiting in batch:
            if waiting.done.done():
                continue
            try:
                await self._write(waiting.rows)
            except Exception as exc:
                error: Exception = (
                    DependencyUnavailable(f"the store is unavailable: {_short(exc)}")
                    if unreachable(exc)
                    else PermanentError(f"the store refused this record: {_short(exc)}")
                )
                if not waiting.done.done():  # else: given up on meanwhile
                    waiting.done.set_exception(error)
            else:
                metrics.observe_batch(waiting.rows, 1, 0.0)
                if not waiting.done.done():
                    waiting.done.set_result(None)


def _fail_all(batch: list[_Waiting], error: Exception) -> None:
    for waiting in batch:
        if not waiting.done.done():
            waiting.done.set_exception(error)


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
