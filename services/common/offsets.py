"""Per-partition bookkeeping: which offsets are in flight, and the highest offset safe to commit.

Records of a partition are accepted in offset order; they may finish in any order. The committable
offset is the lowest unfinished offset (or one past the last accepted when nothing is unfinished),
so a commit never passes a record whose outcome is not durable (Parallel Consumer's "highest
committable offset").
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(eq=False)
class PartitionState:
    topic: str
    partition: int
    pending: OrderedDict[int, None] = field(default_factory=OrderedDict)
    next_offset: int | None = None  # one past the last accepted offset
    committed: int | None = None  # last offset committed by this owner
    due_at: float = 0.0  # wall-clock time before which a retry-tier partition stays paused
    revoked: bool = False
    revoking: bool = False  # being revoked: records finishing now still count, waits give up
    ready: bool = True  # False while the service's on_assigned hook restores state for this partition
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    tail: asyncio.Future[None] | None = None  # done when the fast path's last batch has queued its outputs

    def accept(self, offset: int) -> None:
        self.pending[offset] = None
        self.next_offset = offset + 1

    def finish(self, offset: int) -> None:
        self.pending.pop(offset, None)

    def finish_all(self, offsets: Iterable[int]) -> None:
        pop = self.pending.pop
        for offset in offsets:
            pop(offset, None)

    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart), or None if nothing new."""
        if self.pending:
            offset = next(iter(self.pending))
        elif self.next_offset is not None:
            offset = self.next_offset
        else:
            return None
        return offset if self.committed is None or offset > self.committed else None

    def waiting_for_due_time(self) -> bool:
        return self.due_at > time.time()

    @property
    def in_flight(self) -> int:
        return len(self.pending)
