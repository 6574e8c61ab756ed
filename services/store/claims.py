"""Replay claims: a replay (the API's, the console's, and `postcall dlq replay` when a store is
configured) holds the dead letters it sends for a lease, so that two replays of the same letters at once
(a double click, two operators, two API replicas, an operator's command line) send each letter once.

A replay `claim`s the letters it chose with one compare-and-set per letter: it takes a letter only if no
live claim holds it and it is still as it was chosen (pending, or replayed at the same time), so a
replay that chose a letter another replay has since sent leaves it too. While it sends, `held` renews
the lease; `settle` then marks the sent letters replayed and releases the rest, which are pending again
at once (Kafka failed part-way). A replay that dies mid-send settles nothing: its claim expires after
the lease, and then its unsent letters are pending again, while those it sent are marked replayed by
the recorder from their replay markers. Claiming without a lease would hide them as replayed for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from services.store.db import Store
from services.store.models import DeadLetter, UTCDateTime, table

log = logging.getLogger("postcall.store.claims")


async def claim(store: Store, chosen: Iterable[tuple[int, datetime | None]], lease: timedelta) -> tuple[str, set[int]]:
    """Claim the chosen letters (id, replayed_at as chosen) for `lease`: the claim's id, and the ids it
    got; the others are held by another replay, or were replayed since they were chosen."""
    mine, now = uuid.uuid4().hex, datetime.now(UTC)
    t = table(DeadLetter).c
    take = (
        update(table(DeadLetter))
        .where(
            t.id == bindparam("b_id"),
            t.replayed_at.is_not_distinct_from(bindparam("b_seen", type_=UTCDateTime())),
            or_(t.replay_claimed_until.is_(None), t.replay_claimed_until <= now),
        )
        .values(replay_claimed_until=now + lease, replay_claim=mine)
    )
    params = [{"b_id": i, "b_seen": seen} for i, seen in chosen]
    if not params:
        return mine, set()
    async with store.write() as conn:
        await conn.execute(take, params)
        got = await conn.execute(select(t.id).where(t.replay_claim == mine))
        return mine, {row.id for row in got}


class Stored(NamedTuple):
    """A dead letter as the store holds it, for a replay that chose it from its topic."""

    id: int
    replayed_at: datetime | None
    claimed_until: datetime | None


Coordinates = tuple[str, int, int]  # topic, partition, offset
BATCH = 500  # offsets per statement: SQLite allows 32,766 bound parameters, PostgreSQL 65,535


async def stored(store: Store, letters: Iterable[Coordinates]) -> dict[Coordinates, Stored]:
    """The stored dead letters at these Kafka coordinates (`postcall dlq replay` chooses from the topics,
    then claims through the store as the API does); a letter the recorder has not stored is not in it."""
    t = table(DeadLetter).c
    wanted: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in letters:
        wanted.setdefault((topic, partition), []).append(offset)
    found: dict[Coordinates, Stored] = {}
    async with store.read() as conn:
        for (topic, partition), offsets in wanted.items():
            for start in range(0, len(offsets), BATCH):
                batch = offsets[start : start + BATCH]
                rows = await conn.execute(
                    select(t.kafka_offset, t.id, t.replayed_at, t.replay_claimed_until).where(
                        t.kafka_topic == topic, t.kafka_partition == partition, t.kafka_offset.in_(batch)
                    )
                )
                found.update({(topic, partition, o): Stored(id_, at, until) for o, id_, at, until in rows})
    return found


def live(claimed_until: datetime | None) -> bool:
    """Whether a letter's claim still holds it (a dry run leaves such a letter out, as a replay would)."""
    return claimed_until is not None and claimed_until > datetime.now(UTC)


@contextlib.asynccontextmanager
async def held(store: Store, mine: str, lease: timedelta) -> AsyncIterator[None]:
    """Renew the claim every third of the lease while the body runs (a replay at 1/s outlasts any lease)."""

    async def renewing() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                async with store.write() as conn:
                    await conn.execute(
                        update(table(DeadLetter))
                        .where(table(DeadLetter).c.replay_claim == mine)
                        .values(replay_claimed_until=datetime.now(UTC) + lease)
                    )
            # the next renewal may succeed; the send goes on meanwhile. OSError: StoreUnavailable, an unreachable
            # database (asyncpg's socket errors are not SQLAlchemy's)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew replay claim %s: %s", mine, exc)

    renewer = asyncio.create_task(renewing())
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


async def settle(store: Store, mine: str, sent: Iterable[int], by: str) -> None:
    """Mark the sent letters replayed at once (the next page must not list them, and the recorder may
    read their markers only later) and release the claim on every letter, sent or not."""
    t = table(DeadLetter).c
    now = datetime.now(UTC)
    async with store.write() as conn:
        ids = [{"b_id": i} for i in sent]
        if ids:
            mark = update(table(DeadLetter)).where(t.id == bindparam("b_id")).values(replayed_at=now, replayed_by=by)
            await conn.execute(mark, ids)
        await conn.execute(
            update(table(DeadLetter)).where(t.replay_claim == mine).values(replay_claimed_until=None, replay_claim=None)
        )
