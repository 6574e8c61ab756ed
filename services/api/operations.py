"""Operator actions from the store, each audited: replay dead letters, re-extract conversations.

Both republish to Kafka through the command line's rate-limited republisher (one record at a time,
acks=all), so the API and `postcall dlq replay` / `postcall reextract` put exactly the same records on
the topics. The audit row is written whatever happened: how many were chosen, sent, and the error.

An operation sends for as long as its rate says (10,000 records at 50/s: 200 s), longer than a pod's grace
period. `stop` (the API's `app.state.stopping`, set when the server is asked to exit) ends it between two
records, each sent with its follow-up (a letter's replay marker): it answers with an error saying how many
were sent, a replay settles the letters sent and releases the others at once, and the audit row is completed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, Field

from schemas import headers as h
from schemas.topics import CE_TYPES, CONVERSATION_ENDED
from services.api.settings import HttpSettings
from services.cli.dlq import DeadLetter, replay_records, replay_target
from services.cli.republish import RepublishFailed, Stopped, republish
from services.common.codec import Outgoing, now_iso
from services.common.settings import KafkaSettings
from services.store import claims, queries, reextracts, tokens
from services.store.db import Store
from services.store.tokens import Principal

REPLAY_LEASE = HttpSettings().replay_lease  # POSTCALL_API__REPLAY_LEASE_SECONDS's default
SEND_BATCH = 200  # records whose values are read from the store at once while an operation sends
T = TypeVar("T")


class OperationResult(BaseModel):
    matched: int = Field(description="Records the selection chose (at most `limit`).")
    sent: int = Field(description="Records republished and acknowledged by Kafka (0 on a dry run).")
    dry_run: bool
    items: list[str] = Field(
        description="What was chosen and sent (or would be, on a dry run): dead letter coordinates, or "
        "conversation ids."
    )
    skipped: int = Field(
        0,
        description="Chosen but left alone, not in `items`: dead letters another replay is sending (or sent since); "
        "conversations another re-extraction marked at the same moment (or since the console's page showed them).",
    )
    error: str | None = Field(
        None, description="Why it stopped early (Kafka unavailable, or the API shutting down): `sent` were sent."
    )


async def replay_dead_letters(
    store: Store,
    kafka: KafkaSettings,
    who: Principal,
    filters: queries.DeadLetterFilter,
    *,
    limit: int,
    rate: float,
    dry_run: bool,
    lease: timedelta = REPLAY_LEASE,
    as_seen: Mapping[int, datetime | None] | None = None,
    stop: asyncio.Event | None = None,
) -> OperationResult:
    """The chosen letters are claimed for `lease` before any is sent (services/store/claims.py): those
    another replay holds are skipped, so two replays at once send each letter once. `as_seen`: a letter's
    `replayed_at` as the operator saw it (None: pending); one the store no longer holds so is skipped too,
    so that a second click on a page drawn before a replay sends nothing."""
    async with store.read() as conn:
        rows = await queries.dead_letter_records(conn, filters, limit)
    # those `replay_records` leaves out (no valid original topic) are not chosen: each batch's letters sent
    # are the first of those it sends
    chosen = [(row, d) for row, d in ((row, _letter(row)) for row in rows) if replay_target(d) is not None]
    seen = {row.id: (as_seen or {}).get(row.id, row.replayed_at) for row, _ in chosen}
    if dry_run:  # what a replay would take now: the letters no live claim holds, still as seen
        untouched = [(row, d) for row, d in chosen if seen[row.id] == row.replayed_at]
        mine, taken = "", [(row.id, d) for row, d in untouched if not claims.live(row.replay_claimed_until)]
    else:
        mine, got = await claims.claim(store, seen.items(), lease)
        taken = [(row.id, d) for row, d in chosen if row.id in got]
    items = [d.coordinates for _, d in taken]
    result = OperationResult(
        matched=len(chosen), sent=0, dry_run=dry_run, items=items, skipped=len(chosen) - len(taken)
    )
    if dry_run or not taken:
        await _audit(store, who, "replay", _target(filters, limit), result)
        return result
    entry = await _audit(store, who, "replay", _target(filters, limit), result, sending=True)
    sent: list[int] = []
    async with claims.held(store, mine, lease):
        for batch in _batches(taken):
            async with store.read() as conn:
                values = await queries.dead_letter_values(conn, [i for i, _ in batch])
            loaded = [(i, dataclasses.replace(d, value=values[i])) for i, d in batch if i in values]  # not pruned
            records = replay_records([d for _, d in loaded], who.name, via="api")
            result = await _send(kafka, records, rate, result, stop)
            sent += [i for i, _ in loaded[: result.sent - len(sent)]]
            if result.error is not None:
                break
    await claims.settle(store, mine, sent, who.name)
    async with store.write() as conn:
        await tokens.complete_audit(conn, entry, _outcome(result))
    return result


def _batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """What an operation sends, SEND_BATCH at a time: the values of one batch are read from the store as it is
    sent, not every value chosen at once (10,000 letters of 100 KB were a GB in the API's memory)."""
    for start in range(0, len(items), SEND_BATCH):
        yield items[start : start + SEND_BATCH]


async def _audit(
    store: Store, who: Principal, action: str, target: dict[str, Any], result: OperationResult, sending: bool = False
) -> int:
    """The operation's audit row. `sending`: written before the first record goes out (outcome status
    `sending`, completed once the send is over), so an operation interrupted mid-send (a pod stopped past
    its grace period) is still audited: who chose what."""
    outcome = _outcome(result) | ({"sent": None, "status": "sending"} if sending else {})
    async with store.write() as conn:
        return await tokens.audit(conn, who, action, target, outcome, dry_run=result.dry_run)


def _letter(row: Any) -> DeadLetter:
    """The letter as chosen: its value is read when it is sent (`_batches`)."""
    return DeadLetter(
        topic=row.kafka_topic,
        partition=row.kafka_partition,
        offset=row.kafka_offset,
        timestamp_ms=int(row.dead_lettered_at.timestamp() * 1000),
        key=row.key.encode() if row.key is not None else None,
        value=None,
        headers=orjson.loads(row.headers),
    )


async def reextract_conversations(
    store: Store,
    kafka: KafkaSettings,
    who: Principal,
    filters: queries.ConversationFilter,
    *,
    limit: int,
    rate: float,
    dry_run: bool,
    topic: str = CONVERSATION_ENDED,
    redeliver: bool = False,
    stop: asyncio.Event | None = None,
    as_seen: Mapping[str, datetime | None] | None = None,
) -> OperationResult:
    """The stored ConversationEnded of each chosen conversation, republished as `postcall reextract`
    republishes one read from the topic (same key and payload, a fresh ce_id, x-reextract-of, and
    x-redeliver when changed actions are to be sent again). Each is marked re-extracted before it is sent
    (services/store/reextracts.py), and the mark put back if it was not. `as_seen`: a conversation's
    `reextracted_at` as the operator saw it (None: never); one whose mark has changed since is left alone
    (`skipped`), so that a second click on a page drawn before a re-extraction sends nothing."""
    async with store.read() as conn:
        chosen = await queries.events_for(conn, filters, limit)
    seen = as_seen or {}
    if dry_run:  # what a re-extraction would take now: those still as seen
        now = await reextracts.marks(store, [cid for cid, _ in chosen if cid in seen])
        taken = [(cid, eid) for cid, eid in chosen if cid not in now or now[cid].at == seen[cid]]
    else:
        at = datetime.now(UTC)
        before = await reextracts.mark(store, [cid for cid, _ in chosen], seen, at, who.name)
        taken = [(cid, eid) for cid, eid in chosen if cid in before]
    items = [cid for cid, _ in taken]
    result = OperationResult(
        matched=len(chosen), sent=0, dry_run=dry_run, items=items, skipped=len(chosen) - len(taken)
    )
    if dry_run or not taken:
        await _audit(store, who, "reextract", _target(filters, limit), result)
        return result
    entry = await _audit(store, who, "reextract", _target(filters, limit), result, sending=True)
    sent: list[str] = []
    for batch in _batches(taken):
        async with store.read() as conn:
            events = await queries.events_of(conn, [cid for cid, _ in batch])
        loaded = [(cid, eid) for cid, eid in batch if cid in events]  # not pruned since it was chosen
        records = [
            Outgoing(topic, cid.encode(), events[cid].encode(), _reextract_headers(eid, redeliver))
            for cid, eid in loaded
        ]
        result = await _send(kafka, records, rate, result, stop)
        sent += [cid for cid, _ in loaded[: result.sent - len(sent)]]
        if result.error is not None:
            break
    await reextracts.unmark(store, before, at, set(before) - set(sent))
    async with store.write() as conn:
        await tokens.complete_audit(conn, entry, _outcome(result))
    return result


def _reextract_headers(event_id: str, redeliver: bool = False) -> dict[str, str]:
    return ({h.REDELIVER: "1"} if redeliver else {}) | {
        h.CE_ID: str(uuid.uuid4()),
        h.CE_TYPE: CE_TYPES[CONVERSATION_ENDED],
        h.CE_SOURCE: "/postcall/store",
        h.CE_SPECVERSION: h.CE_SPECVERSION_VALUE,
        h.CE_TIME: now_iso(),
        h.CONTENT_TYPE: h.JSON_CONTENT_TYPE,
        h.REEXTRACT_OF: event_id,
    }


async def _send(
    kafka: KafkaSettings, records: list[Outgoing], rate: float, result: OperationResult, stop: asyncio.Event | None
) -> OperationResult:
    """`result` with the records acknowledged added to its `sent` (an operation sends a batch at a time, of
    its `items`)."""
    try:
        sent = await republish(kafka, records, rate, None, "api", stop=stop)
    except RepublishFailed as exc:
        done = result.sent + exc.done
        error = f"Kafka at {kafka.bootstrap_servers} failed after {done}: {exc}"
        return result.model_copy(update={"sent": done, "error": error})
    except Stopped as exc:
        done = result.sent + exc.done
        error = f"the API is shutting down: {done} of {len(result.items)} sent before it stopped; "
        error += "the others were not sent"
        return result.model_copy(update={"sent": done, "error": error})
    return result.model_copy(update={"sent": result.sent + sent})


def _target(filters: Any, limit: int) -> dict[str, Any]:
    chosen = {k: v for k, v in vars(filters).items() if v not in (None, (), [])}
    return {"filters": chosen, "limit": limit}


def _outcome(result: OperationResult) -> dict[str, Any]:
    return result.model_dump(exclude={"items"}) | {"items": result.items[:100]}
