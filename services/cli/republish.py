"""Rate-limited republishing with a progress bar: what `dlq replay` and `reextract` share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from rich.progress import Progress

from services.common import codec
from services.common.codec import Outgoing
from services.common.kafka import producer
from services.common.settings import KafkaSettings


async def republish(
    kafka: KafkaSettings, records: Sequence[Outgoing], rate: float, progress: Progress | None, label: str
) -> int:
    """Send one at a time, each acknowledged (acks=all) before the next, at most `rate` per second
    (0: no limit); returns how many were acknowledged (with their follow-up record, if any)."""
    p = producer(kafka)
    try:
        await p.start()
    except KafkaError as exc:
        await p.stop()
        raise RepublishFailed(0, exc) from exc
    task = progress.add_task(label, total=len(records)) if progress is not None else None
    interval, next_at, done = 1.0 / rate if rate > 0 else 0.0, time.monotonic(), 0
    try:
        for r in records:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            await _send(p, r)
            done += 1
            if r.then is not None:
                await _send(p, r.then)
            if progress is not None and task is not None:
                progress.advance(task)
        return done
    except KafkaError as exc:
        raise RepublishFailed(done, exc) from exc
    finally:
        await p.stop()


class RepublishFailed(Exception):
    """Raised when Kafka failed part-way: `done` records were acknowledged before it did."""

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.done = done


async def _send(p: Any, r: Outgoing) -> None:
    await (await p.send(r.topic, r.value, key=r.key, partition=r.partition, headers=codec.header_list(r.headers)))
