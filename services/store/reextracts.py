"""Re-extraction marks: when and by whom each conversation was last sent for extraction again from the store
(conversations.reextracted_at/by), so that the console's Re-extract acts on a call as its page showed it.

A re-extraction `mark`s the conversations it chose before it sends them, each with one compare-and-set: a
conversation whose mark is no longer as the page saw it (a second click once the first re-extraction was
sent, a second tab or operator) is left out, so it is sent once (each is an LLM call). Once the send is over
`unmark` puts back the marks of those not sent (Kafka failed, the API was asked to stop), so the page does
not claim a re-extraction that did not happen. A re-extraction that dies mid-send leaves its marks: the
page then says it was sent, and the operator reloads it to re-extract again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, select, update

from services.store.db import Store
from services.store.models import Conversation, UTCDateTime, table

BATCH = 500  # conversations per statement: SQLite allows 32,766 bound parameters, PostgreSQL 65,535


class Mark(NamedTuple):
    at: datetime | None
    by: str | None


async def marks(store: Store, conversation_ids: Sequence[str]) -> dict[str, Mark]:
    """The marks of these conversations still in the store (a dry run compares them with what was seen)."""
    c = table(Conversation).c
    found: dict[str, Mark] = {}
    async with store.read() as conn:
        for start in range(0, len(conversation_ids), BATCH):
            batch = list(conversation_ids[start : start + BATCH])
            rows = await conn.execute(
                select(c.conversation_id, c.reextracted_at, c.reextracted_by).where(c.conversation_id.in_(batch))
            )
            found.update({cid: Mark(at, by) for cid, at, by in rows})
    return found


async def mark(
    store: Store, conversation_ids: Sequence[str], seen: Mapping[str, datetime | None], at: datetime, by: str
) -> dict[str, Mark]:
    """Mark the chosen conversations sent at `at` by `by`, each only if its mark is still as `seen` (when seen
    names it; otherwise whatever it is): the conversations marked, with the mark each had before."""
    before = await marks(store, conversation_ids)
    expected = {cid: Mark(seen[cid], None) if cid in seen else was for cid, was in before.items()}
    c = table(Conversation).c
    take = (
        update(table(Conversation))
        .where(
            c.conversation_id == bindparam("b_id"),
            c.reextracted_at.is_not_distinct_from(bindparam("b_seen", type_=UTCDateTime())),
        )
        .values(reextracted_at=at, reextracted_by=by)
    )
    params = [{"b_id": cid, "b_seen": was.at} for cid, was in expected.items()]
    if not params:
        return {}
    async with store.write() as conn:
        await conn.execute(take, params)
    now = await marks(store, list(expected))
    # the mark each had is the one compared with: its `by` as read (a mark's time is never written twice)
    return {cid: before[cid] for cid, m in now.items() if m == (at, by) and before[cid].at == expected[cid].at}


async def unmark(store: Store, taken: Mapping[str, Mark], at: datetime, not_sent: Iterable[str]) -> None:
    """Put back the mark each of `not_sent` had before `mark` took it, unless another re-extraction has since."""
    c = table(Conversation).c
    back = (
        update(table(Conversation))
        .where(
            c.conversation_id == bindparam("b_id"),
            c.reextracted_at == bindparam("b_mine", type_=UTCDateTime()),
        )
        .values(reextracted_at=bindparam("b_at", type_=UTCDateTime()), reextracted_by=bindparam("b_by"))
    )
    params = [{"b_id": cid, "b_mine": at, "b_at": taken[cid].at, "b_by": taken[cid].by} for cid in not_sent]
    if params:
        async with store.write() as conn:
            await conn.execute(back, params)
