"""Writes merged `Rows` in one transaction: the records' own rows, then the summaries they change.

1. Inserts keyed by identity (see models.py): `ON CONFLICT DO NOTHING` for records, `DO UPDATE` for a
   conversation only when the incoming event is newer (its `stored_at` stays the first insert's), and for
   an action only to fill what was unknown.
2. Then each touched action's final outcome and each touched conversation's summary columns are
   recomputed from the children, by the database (one UPDATE with correlated subqueries per chunk).

Two recorders writing the same conversation stay correct: on PostgreSQL the transaction first takes a
transaction-scoped advisory lock per touched conversation (in sorted order, so never a deadlock), so the
second waits for the first to commit and its recompute (a later statement, a later snapshot in READ
COMMITTED) sees the first one's rows. SQLite has one writer at a time (BEGIN IMMEDIATE). A crash before
the commit leaves the Kafka offsets uncommitted: the records are read again and written then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, false, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.db import Store
from services.store.models import (
    Action,
    ActionRequest,
    Attempt,
    AuditEntry,
    Conversation,
    DeadLetter,
    Decision,
    DecisionFlow,
    Extraction,
    ScheduledRetry,
    Task,
    TeamAlert,
    table,
)
from services.store.rows import DONE_OUTCOMES, Row, Rows, clean

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
        touched = rows.conversation_ids | await _replayed_conversations(conn, rows.replays)
        await _lock_conversations(conn, touched)
        await insert_records(conn, rows)
        await refresh_actions(conn, rows.action_ids)
        await refresh_conversations(conn, touched)


async def _replayed_conversations(conn: AsyncConnection, markers: list[Row]) -> set[str]:
    """The conversations of the dead letters these replay markers name (a marker names only the dead
    letter): a replayed dead letter no longer counts in its conversation's summary. A dead letter
    written in this same batch brings its conversation itself."""
    t = table(DeadLetter).c
    found: set[str] = set()
    for i in range(0, len(markers), CHUNK):
        keys = [(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) for r in markers[i : i + CHUNK]]
        query = select(t.conversation_id).where(
            tuple_(t.kafka_topic, t.kafka_partition, t.kafka_offset).in_(keys), t.conversation_id.is_not(None)
        )
        found.update((await conn.execute(query)).scalars())
    return found


async def _lock_conversations(conn: AsyncConnection, conversation_ids: Iterable[str]) -> None:
    """PostgreSQL: serialize the transactions that touch the same conversations (see the docstring)."""
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({clean(i) for i in conversation_ids})
    if ids:
        await conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(h) FROM "
                "(SELECT DISTINCT hashtext(id) AS h FROM unnest(CAST(:ids AS text[])) AS id ORDER BY h) AS sorted"
            ),
            {"ids": ids},
        )


async def insert_records(conn: AsyncConnection, rows: Rows) -> None:
    if rows.conversations:
        await _upsert_conversations(conn, _newest(rows.conversations, "conversation_id", "occurred_at"))
    for target, records in (
        (table(Extraction), rows.extractions),
        (table(Decision), rows.decisions),
        (table(DecisionFlow), rows.decision_flows),
        (table(DeadLetter), rows.dead_letters),
        (table(Attempt), rows.attempts),
        (table(ActionRequest), rows.requests),
        (table(Task), rows.tasks),
        (table(TeamAlert), rows.alerts),
    ):
        if records:
            await conn.execute(_insert(conn, target).on_conflict_do_nothing(), records)
    if rows.retries:
        await _upsert_retries(conn, rows.retries)
    if rows.actions:
        await _upsert_actions(conn, rows.actions)
    if rows.replays:
        await _mark_replayed(conn, rows.replays)
    if rows.audits:
        await _insert_audits(conn, rows.audits)


async def _insert_audits(conn: AsyncConnection, records: list[Row]) -> None:
    """Once per record: the target names the record's coordinates, and the audit table has no key of its
    own (the API's rows have none), so the records already audited are looked up first."""
    audit = table(AuditEntry)
    fresh = {r["target"]: r for r in records}
    for chunk in _chunks(list(fresh)):
        query = select(audit.c.target).where(audit.c.role == "command line", audit.c.target.in_(chunk))
        for seen in (await conn.execute(query)).scalars():
            fresh.pop(seen, None)
    if fresh:
        await conn.execute(audit.insert(), list(fresh.values()))


async def store_clock(conn: AsyncConnection) -> datetime:
    """The store's time: PostgreSQL's own (one clock for every recorder, whatever their hosts' say), read
    inside the transaction after its locks; for SQLite, a local file, the host's."""
    if conn.dialect.name == "postgresql":
        now: datetime = (await conn.execute(select(func.clock_timestamp()))).scalar_one()
        return now
    return datetime.now(UTC)


async def _upsert_conversations(conn: AsyncConnection, records: list[Row]) -> None:
    """`stored_at` (when the row arrived, what the console's new calls are asked by) is set on the first
    insert only: a newer event for the same conversation replaces the event's columns, not it."""
    now = await store_clock(conn)
    records = [{**r, "stored_at": now} for r in records]
    stmt = _insert(conn, table(Conversation))
    event_columns = [c for c in records[0] if c not in ("conversation_id", "search_text", "stored_at")]
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversation_id"],
        set_={c: stmt.excluded[c] for c in event_columns},
        where=stmt.excluded.occurred_at > table(Conversation).c.occurred_at,
    )
    await conn.execute(stmt, records)


async def _upsert_retries(conn: AsyncConnection, records: list[Row]) -> None:
    """When attempt N is due: the latest its copies say. A copy a rate limit deferred comes back as the same
    attempt, due later than the copy it deferred (whose row, kept, showed a deferral's next retry already past);
    a copy read late (another tier's partition) never moves it earlier."""
    best: dict[tuple[str, int], Row] = {}
    for row in records:
        seen = best.get((row["action_id"], row["attempt"]))
        if seen is None or row["due_at"] > seen["due_at"]:
            best[(row["action_id"], row["attempt"])] = row
    stmt = _insert(conn, table(ScheduledRetry))
    stmt = stmt.on_conflict_do_update(
        index_elements=["action_id", "attempt"],
        set_={"due_at": stmt.excluded.due_at},
        where=stmt.excluded.due_at > table(ScheduledRetry).c.due_at,
    )
    await conn.execute(stmt, list(best.values()))


async def _upsert_actions(conn: AsyncConnection, records: list[Row]) -> None:
    """The decision trace knows the flow and topic, a result may name the destination actually used; an
    action is first seen at the earliest time either says (the trace's, whichever was read first)."""
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
            "first_seen_at": case(
                (stmt.excluded.first_seen_at < columns.first_seen_at, stmt.excluded.first_seen_at),
                else_=columns.first_seen_at,
            ),
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


# PostgreSQL: the same recompute with one lateral join per child table (one index scan each) instead of
# one correlated subquery per column; SQLite (no LATERAL) runs the portable statements below.
_OUTCOMES = (*DONE_OUTCOMES, "dead_lettered", "failed")  # in precedence order
_COUNTS = ", ".join(f"count(*) FILTER (WHERE outcome = '{o}') AS {o}" for o in _OUTCOMES)
_PG_REFRESH_ACTIONS = text(f"""
UPDATE actions AS a SET
  final_outcome = CASE
    {" ".join(f"WHEN s.{o} > 0 THEN '{o}'" for o in _OUTCOMES)}
    ELSE 'pending' END,
  attempts = COALESCE(s.most, 0),
  last_attempt_at = s.last
FROM unnest(CAST(:ids AS text[])) AS ids(id)
CROSS JOIN LATERAL (
  SELECT {_COUNTS},
         max(attempt) FILTER (WHERE outcome <> 'skipped_duplicate') AS most,
         max(completed_at) AS last
  FROM attempts WHERE action_id = ids.id
) AS s
WHERE a.action_id = ids.id AND a.action_id = ANY(CAST(:ids AS text[]))
""")  # noqa: S608 - the interpolated names are constants
_DONE = ", ".join(f"'{o}'" for o in DONE_OUTCOMES)
_PG_REFRESH_CONVERSATIONS = text(f"""
UPDATE conversations AS c SET
  extraction_status = x.status,
  summary = x.summary,
  needs_review = COALESCE(x.needs_review, false),
  prompt_tokens = COALESCE(xs.prompt, 0),
  completion_tokens = COALESCE(xs.completion, 0),
  cost_usd = COALESCE(xs.cost, 0),
  flows_fired = COALESCE(d.flows_fired, 0),
  actions_total = act.total,
  actions_delivered = act.delivered,
  actions_failed = act.failed,
  actions_dead_lettered = act.dead,
  dead_letters = l.n,
  has_failure = act.failed + act.dead + l.n > 0,
  search_text = trim(lower(COALESCE(x.summary, '') || ' ' || COALESCE(c.customer_name, '') || ' '
                || COALESCE(c.customer_phone, '') || ' ' || COALESCE(c.customer_email, '')))
FROM unnest(CAST(:ids AS text[])) AS ids(id)
LEFT JOIN LATERAL (
  SELECT status, summary, needs_review FROM extractions WHERE conversation_id = ids.id
  ORDER BY extracted_at DESC, id DESC LIMIT 1
) AS x ON true
CROSS JOIN LATERAL (
  SELECT sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion, sum(cost_usd) AS cost
  FROM extractions WHERE conversation_id = ids.id
) AS xs
LEFT JOIN LATERAL (
  SELECT flows_fired FROM decisions WHERE conversation_id = ids.id ORDER BY decided_at DESC, id DESC LIMIT 1
) AS d ON true
CROSS JOIN LATERAL (
  SELECT count(*) AS total,
         count(*) FILTER (WHERE final_outcome IN ({_DONE})) AS delivered,
         count(*) FILTER (WHERE final_outcome = 'failed') AS failed,
         count(*) FILTER (WHERE final_outcome = 'dead_lettered') AS dead
  FROM actions WHERE conversation_id = ids.id
) AS act
CROSS JOIN LATERAL (
  SELECT count(*) AS n FROM dead_letters WHERE conversation_id = ids.id AND replayed_at IS NULL
) AS l
WHERE c.conversation_id = ids.id AND c.conversation_id = ANY(CAST(:ids AS text[]))
""")  # noqa: S608 - the interpolated names are constants


async def refresh_actions(conn: AsyncConnection, action_ids: Iterable[str]) -> None:
    """Each action's final outcome, attempt count and last attempt, from its attempts: one statement
    (correlated subqueries the database answers from its indexes), no rows fetched into Python."""
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(action_ids):
            await conn.execute(_PG_REFRESH_ACTIONS, {"ids": chunk})
        return
    a, t = table(Action), table(Attempt).c

    def attempts(*where: Any) -> Any:
        return select(func.count()).where(t.action_id == a.c.action_id, *where).scalar_subquery()

    def has(*outcomes: str) -> Any:
        return attempts(t.outcome.in_(outcomes)) > 0

    outcome = case(
        *((has(done), done) for done in DONE_OUTCOMES),
        (has("dead_lettered"), "dead_lettered"),
        (has("failed"), "failed"),
        else_="pending",
    )
    values = {
        "final_outcome": outcome,
        "attempts": func.coalesce(
            select(func.max(t.attempt))
            .where(t.action_id == a.c.action_id, t.outcome != "skipped_duplicate")
            .scalar_subquery(),
            0,
        ),
        "last_attempt_at": select(func.max(t.completed_at)).where(t.action_id == a.c.action_id).scalar_subquery(),
    }
    for chunk in _chunks(action_ids):
        await conn.execute(update(a).where(a.c.action_id.in_(chunk)).values(values))


async def refresh_conversations(conn: AsyncConnection, conversation_ids: Iterable[str]) -> None:
    """The conversations' summary columns from their children, in one statement per chunk (a
    conversation whose row has not arrived yet is summarised when it does: its id is touched then)."""
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(conversation_ids):
            await conn.execute(_PG_REFRESH_CONVERSATIONS, {"ids": chunk})
        return
    c = table(Conversation)
    values = _summary_values(c)
    for chunk in _chunks(conversation_ids):
        await conn.execute(update(c).where(c.c.conversation_id.in_(chunk)).values(values))


def _summary_values(c: Table) -> dict[str, Any]:
    x, d, a, dl = (table(m).c for m in (Extraction, Decision, Action, DeadLetter))
    mine = x.conversation_id == c.c.conversation_id

    def newest(column: Any) -> Any:
        return select(column).where(mine).order_by(x.extracted_at.desc(), x.id.desc()).limit(1).scalar_subquery()

    def total(column: Any) -> Any:
        return func.coalesce(select(func.sum(column)).where(mine).scalar_subquery(), 0)

    def actions(*outcomes: str) -> Any:
        where = [a.conversation_id == c.c.conversation_id]
        if outcomes:
            where.append(a.final_outcome.in_(outcomes))
        return select(func.count()).where(*where).scalar_subquery()

    letters = (
        select(func.count())
        .where(dl.conversation_id == c.c.conversation_id, dl.replayed_at.is_(None))
        .scalar_subquery()
    )
    summary = newest(x.summary)
    text = func.lower(
        func.coalesce(summary, "")
        + " "
        + func.coalesce(c.c.customer_name, "")
        + " "
        + func.coalesce(c.c.customer_phone, "")
        + " "
        + func.coalesce(c.c.customer_email, "")
    )
    return {
        "extraction_status": newest(x.status),
        "summary": summary,
        "needs_review": func.coalesce(newest(x.needs_review), false()),
        "flows_fired": func.coalesce(
            select(d.flows_fired)
            .where(d.conversation_id == c.c.conversation_id)
            .order_by(d.decided_at.desc(), d.id.desc())
            .limit(1)
            .scalar_subquery(),
            0,
        ),
        "actions_total": actions(),
        "actions_delivered": actions(*DONE_OUTCOMES),
        "actions_failed": actions("failed"),
        "actions_dead_lettered": actions("dead_lettered"),
        "dead_letters": letters,
        "has_failure": (actions("failed", "dead_lettered") + letters) > 0,
        "prompt_tokens": total(x.prompt_tokens),
        "completion_tokens": total(x.completion_tokens),
        "cost_usd": total(x.cost_usd),
        "search_text": func.trim(text),
    }


def horizon(retention_days: float, now: datetime | None = None) -> datetime:
    """Records older than this are neither stored nor kept."""
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)
