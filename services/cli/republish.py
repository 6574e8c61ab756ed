"""Rate-limited republishing with a progress bar: what `dlq replay` and `reextract` share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.progress import Progress

from services.common import codec
from services.common.kafka import producer
from services.common.settings import KafkaSettings


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]


async def republish(
    kafka: KafkaSettings, records: Sequence[Outgoing], rate: float, progress: Progress | None, label: str
) -> int:
    """Send one at a time, each acknowledged (acks=all) before the next, at most `rate` per second
    (0: no limit); returns how many were acknowledged."""
    p = producer(kafka)
    await p.start()
    task = progress.add_task(label, total=len(records)) if progress is not None else None
    interval, next_at, done = 1.0 / rate if rate > 0 else 0.0, time.monotonic(), 0
    try:
        for r in records:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            await (await p.send(r.topic, r.value, key=r.key, headers=codec.header_list(r.headers)))
            done += 1
            if progress is not None and task is not None:
                progress.advance(task)
        return done
    finally:
        await p.stop()
