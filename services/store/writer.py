"""Writes merged `Rows` in two transactions: the records' own rows, then the summaries they change.

1. Inserts keyed by identity (see models.py): `ON CONFLICT DO NOTHING` for records, `DO UPDATE` for a
   conversation only when the incoming event is newer, and for an action only to fill what was unknown.
2. After that commit, each touched action's final outcome and each touched conversation's summary
   columns are recomputed from the committed children. Recomputing after the commit (not in the same
   transaction) keeps two recorders writing the same conversation correct: whichever recomputes last
   sees both commits. A crash between the two leaves the Kafka offsets uncommitted, so the records
   are read again and the summaries recomputed then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.db import Store
from services.store.models import (
    Action,
    ActionRequest,
    Attempt,
    Conversation,
    DeadLetter,
    Decision,
    Extraction,
    ScheduledRetry,
    Task,
    TeamAlert,
    table,
)
from services.store.rows import DONE_OUTCOMES, Row, Rows, clean, final_outcome, search_text

CHUNK = 500  # ids per IN (...) list


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _newest(rows: Iterable[Row], key: str, order: str) -> list[Row]:
    """One row per key (the greatest `order`): one statement may not upsert a row twice."""
    best: dict[Any, Row] = {}
    for row in rows:
        seen = best.get(row[key])
        if seen is None or row[order] > seen[order]:
            best[row[key]] = row
    return list(best.values())


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    items = sorted({clean(i) for i in ids})
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


async def write(store: Store, rows: Rows) -> None:
    if not len(rows):
        return
    async with store.write() as conn:
        await insert_records(conn, rows)
    async with store.write() as conn:
        await refresh_actions(conn, rows.action_ids)
        await refresh_conversations(conn, rows.conversation_ids)


async def insert_records(conn: AsyncConnection, rows: Rows) -> None:
    if rows.conversations:
        await _upsert_conversations(conn, _newest(rows.conversations, "conversation_id", "occurred_at"))
    for target, records in (
        (table(Extraction), rows.extractions),
        (table(Decision), rows.decisions),
        (table(DeadLetter), rows.dead_letters),
        (table(Attempt), rows.attempts),
        (table(ScheduledRetry), rows.retries),
        (table(ActionRequest), rows.requests),
        (table(Task), rows.tasks),
        (table(TeamAlert), rows.alerts),
    ):
        if records:
            await conn.execute(_insert(conn, target).on_conflict_do_nothing(), records)
    if rows.actions:
        await _upsert_actions(conn, rows.actions)
    if rows.replays:
        await _mark_replayed(conn, rows.replays)


async def _upsert_conversations(conn: AsyncConnection, records: list[Row]) -> None:
    stmt = _insert(conn, table(Conversation))
    event_columns = [c for c in records[0] if c not in ("conversation_id", "search_text")]
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversation_id"],
        set_={c: stmt.excluded[c] for c in event_columns},
        where=stmt.excluded.occurred_at > table(Conversation).c.occurred_at,
    )
    await conn.execute(stmt, records)


async def _upsert_actions(conn: AsyncConnection, records: list[Row]) -> None:
    """The decision trace knows the flow and topic, a result may name the destination actually used."""
    merged: dict[str, Row] = {}
    for row in records:
        have = merged.setdefault(row["action_id"], dict(row))
        for column in ("flow_id", "topic", "destination"):
            have[column] = have[column] or row[column]
        have["first_seen_at"] = min(have["first_seen_at"], row["first_seen_at"])
    stmt = _insert(conn, table(Action))
    columns = table(Action).c
    stmt = stmt.on_conflict_do_update(
        index_elements=["action_id"],
        set_={
            "flow_id": func.coalesce(columns.flow_id, stmt.excluded.flow_id),
            "topic": func.coalesce(columns.topic, stmt.excluded.topic),
            "destination": func.coalesce(columns.destination, stmt.excluded.destination),
        },
    )
    await conn.execute(stmt, list(merged.values()))


async def _mark_replayed(conn: AsyncConnection, records: list[Row]) -> None:
    t = table(DeadLetter).c
    stmt = (
        update(table(DeadLetter))
        .where(
            and_(
                t.kafka_topic == bindparam("b_topic"),
                t.kafka_partition == bindparam("b_partition"),
                t.kafka_offset == bindparam("b_offset"),
                t.replayed_at.is_(None),
            )
        )
        .values(replayed_at=bindparam("b_at"), replayed_by=bindparam("b_by"))
    )
    params = [
        {
            "b_topic": r["kafka_topic"],
            "b_partition": r["kafka_partition"],
            "b_offset": r["kafka_offset"],
            "b_at": r["replayed_at"],
            "b_by": r["replayed_by"],
        }
        for r in records
    ]
    await conn.execute(stmt, params)


# ── summaries ──────────────────────────────────────────────────────────────────────────────────────


async def refresh_actions(conn: AsyncConnection, action_ids: Iterable[str]) -> None:
    t = table(Attempt).c
    updates = []
    for chunk in _chunks(action_ids):
        found: dict[str, list[tuple[int, str, datetime]]] = {i: [] for i in chunk}
        query = select(t.action_id, t.attempt, t.outcome, t.completed_at).where(t.action_id.in_(chunk))
        for action_id, attempt, outcome, at in await conn.execute(query):
            found[action_id].append((attempt, outcome, at))
        for action_id, attempts in found.items():
            updates.append(
                {
                    "b_id": action_id,
                    "final_outcome": final_outcome([(a, o) for a, o, _ in attempts]),
                    "attempts": max((a for a, o, _ in attempts if o != "skipped_duplicate"), default=0),
                    "last_attempt_at": max((at for *_, at in attempts), default=None),
                }
            )
    if updates:
        a = table(Action)
        await conn.execute(update(a).where(a.c.action_id == bindparam("b_id")), updates)


async def refresh_conversations(conn: AsyncConnection, conversation_ids: Iterable[str]) -> None:
    updates: list[Row] = []
    for chunk in _chunks(conversation_ids):
        updates.extend(await _summaries(conn, chunk))
    if updates:
        c = table(Conversation)
        await conn.execute(update(c).where(c.c.conversation_id == bindparam("b_id")), updates)


async def _summaries(conn: AsyncConnection, ids: list[str]) -> list[Row]:
    c, x, d, a, dl = (table(m).c for m in (Conversation, Extraction, Decision, Action, DeadLetter))
    customers = {
        r.conversation_id: r
        for r in await conn.execute(
            select(c.conversation_id, c.customer_name, c.customer_phone, c.customer_email).where(
                c.conversation_id.in_(ids)
            )
        )
    }
    if not customers:
        return []  # children arrived first: summarised when the conversation itself arrives
    wanted = list(customers)
    extractions: dict[str, list[Any]] = {}
    for r in await conn.execute(
        select(
            x.conversation_id, x.extracted_at, x.id, x.status, x.summary, x.needs_review,
            x.prompt_tokens, x.completion_tokens, x.cost_usd,
        ).where(x.conversation_id.in_(wanted))
    ):  # fmt: skip
        extractions.setdefault(r.conversation_id, []).append(r)
    fired: dict[str, tuple[datetime, int]] = {}
    for t in await conn.execute(
        select(d.conversation_id, d.decided_at, d.flows_fired).where(d.conversation_id.in_(wanted))
    ):
        if t.conversation_id not in fired or t.decided_at >= fired[t.conversation_id][0]:
            fired[t.conversation_id] = (t.decided_at, t.flows_fired)
    outcomes: dict[str, Counter[str]] = {}
    for o in await conn.execute(
        select(a.conversation_id, a.final_outcome, func.count())
        .where(a.conversation_id.in_(wanted))
        .group_by(a.conversation_id, a.final_outcome)
    ):
        outcomes.setdefault(o[0], Counter())[o[1]] = o[2]
    letters = dict(
        (r[0], r[1])
        for r in await conn.execute(
            select(dl.conversation_id, func.count())
            .where(dl.conversation_id.in_(wanted), dl.replayed_at.is_(None))
            .group_by(dl.conversation_id)
        )
    )
    out = []
    for conversation_id, customer in customers.items():
        runs = sorted(extractions.get(conversation_id, []), key=lambda r: (r.extracted_at, r.id))
        latest = runs[-1] if runs else None
        counts = outcomes.get(conversation_id, Counter())
        failed, dead, pending_letters = counts["failed"], counts["dead_lettered"], letters.get(conversation_id, 0)
        summary = latest.summary if latest else None
        out.append(
            {
                "b_id": conversation_id,
                "extraction_status": latest.status if latest else None,
                "summary": summary,
                "needs_review": bool(latest.needs_review) if latest else False,
                "flows_fired": fired.get(conversation_id, (None, 0))[1],
                "actions_total": sum(counts.values()),
                "actions_delivered": sum(counts[o] for o in DONE_OUTCOMES),
                "actions_failed": failed,
                "actions_dead_lettered": dead,
                "dead_letters": pending_letters,
                "has_failure": bool(failed or dead or pending_letters),
                "prompt_tokens": sum(r.prompt_tokens for r in runs),
                "completion_tokens": sum(r.completion_tokens for r in runs),
                "cost_usd": round(sum(r.cost_usd for r in runs), 6),
                "search_text": search_text(
                    summary, customer.customer_name, customer.customer_phone, customer.customer_email
                ),
            }
        )
    return out


def horizon(retention_days: float, now: datetime | None = None) -> datetime:
    """Records older than this are neither stored nor kept."""
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)
