"""Many stored calls, fast: rows for every table the recorder fills, written with COPY (PostgreSQL) or
executemany in one transaction (SQLite), without going through Kafka or the writer.

Each conversation has what the recorder would keep for a typical call: the event (~0.9 KB of JSON), one
extraction with three values, a decision trace with two flows (and a row per flow), two actions and one
attempt each (a few percent failed, retried, dead-lettered), spread over 400 days, 20 agents with 2
versions, 12 end reasons.
The payload JSON is a template with the ids replaced: the same bytes per row a real call would store.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.topics import CONVERSATION_EXTRACTED, DECISIONS
from services.store.db import Store
from tests.support.calls import action_id, ended, extracted, trace

AGENTS = [f"agent-{i:02d}" for i in range(20)]
END_REASONS = (
    "CUSTOMER_HANGUP", "AGENT_HANGUP", "BLIND_TRANSFER", "CCAAS_TRANSFER", "VOICEMAIL", "NO_ANSWER",
    "BUSY", "TRANSFER_FAILED", "SILENCE_TIMEOUT", "MAX_DURATION", "PLATFORM_ERROR", "UNKNOWN",
)  # fmt: skip
WORDS = [
    "refund",
    "callback",
    "billing",
    "invoice",
    "upgrade",
    "cancel",
    "appointment",
    "demo",
    "delivery",
    "warranty",
    "complaint",
]
NAMES = ["Tom", "Ana", "Li", "Omar", "Eva", "Jon", "Mia", "Raj", "Zoe", "Ivan", "Kim", "Noor"]
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 400

CONVERSATION_COLUMNS = (
    "conversation_id", "event_id", "occurred_at", "account_id", "account_name", "agent_id", "agent_name",
    "agent_version", "channel", "direction", "status", "started_at", "ended_at", "ended_day", "duration_seconds",
    "end_reason", "end_reason_raw", "source_platform", "customer_name", "customer_phone", "customer_email",
    "event", "received_at", "extraction_status", "summary", "needs_review", "flows_fired", "actions_total",
    "actions_delivered", "actions_failed", "actions_dead_lettered", "dead_letters", "has_failure",
    "prompt_tokens", "completion_tokens", "cost_usd", "search_text", "stored_at",
)  # fmt: skip
EXTRACTION_COLUMNS = (
    "kafka_topic", "kafka_partition", "kafka_offset", "conversation_id", "event_id", "extracted_at", "status",
    "reason", "provider", "model", "config_revision", "summary", "needs_review", "truncated", "prompt_tokens",
    "completion_tokens", "cached_prompt_tokens", "cost_usd", "latency_ms", "reextract_of", "payload",
)  # fmt: skip
DECISION_COLUMNS = (
    "kafka_topic", "kafka_partition", "kafka_offset", "conversation_id", "event_id", "agent_id", "agent_version",
    "config_revision", "extraction_status", "decided_at", "flows_fired", "payload",
)  # fmt: skip
DECISION_FLOW_COLUMNS = (
    "event_id", "extraction_status", "flows_held", "flow_id", "agent_id", "agent_version", "config_revision",
    "decided_at", "fired",
)  # fmt: skip
ACTION_COLUMNS = (
    "action_id", "conversation_id", "type", "flow_id", "destination", "topic", "first_seen_at", "final_outcome",
    "attempts", "last_attempt_at",
)  # fmt: skip
ATTEMPT_COLUMNS = (
    "action_id", "conversation_id", "attempt", "outcome", "destination", "status_code", "latency_ms", "error",
    "response_excerpt", "completed_at",
)  # fmt: skip
TABLES = {
    "conversations": CONVERSATION_COLUMNS,
    "extractions": EXTRACTION_COLUMNS,
    "decisions": DECISION_COLUMNS,
    "decision_flows": DECISION_FLOW_COLUMNS,
    "actions": ACTION_COLUMNS,
    "attempts": ATTEMPT_COLUMNS,
}
PLACEHOLDER = "c-PLACEHOLDER"


def conversation_id(i: int) -> str:
    return f"c-{i:09d}"


class Templates:
    """The JSON payloads of one typical call, with a placeholder id to replace per row."""

    def __init__(self) -> None:
        event = ended(PLACEHOLDER, at=START)
        self.event = event.model_dump_json()
        self.extraction = extracted(event).extraction.model_dump_json()
        self.trace = trace(event, [("crm-sync", True, ["webhook", "email"]), ("callback", False, [])])
        self.decision = self.trace.model_dump_json()


def rows(n: int, seed: int = 7) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Batches of rows per table for conversations 0..n-1 (10,000 conversations per batch)."""
    rnd = random.Random(seed)
    tpl = Templates()
    batch: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
    for i in range(n):
        _one(i, rnd, tpl, batch)
        if len(batch["conversations"]) == 10_000:
            yield batch
            batch = {name: [] for name in TABLES}
    if batch["conversations"]:
        yield batch


def _one(i: int, rnd: random.Random, tpl: Templates, out: dict[str, list[tuple[Any, ...]]]) -> None:
    cid = conversation_id(i)
    agent = rnd.choice(AGENTS)
    version = rnd.choice(("1", "2"))
    reason = rnd.choice(END_REASONS)
    ended_at = START + timedelta(seconds=rnd.randrange(DAYS * 86_400), microseconds=rnd.randrange(1_000_000))
    name = f"{rnd.choice(NAMES)} {rnd.choice(NAMES)}son"
    summary = f"Customer called about {rnd.choice(WORDS)} and {rnd.choice(WORDS)}."
    failed_extraction = rnd.random() < 0.03
    review = not failed_extraction and rnd.random() < 0.05
    outcomes = ["dead_lettered" if rnd.random() < 0.01 else "failed" if rnd.random() < 0.01 else "delivered",
                "published"]  # fmt: skip
    delivered = sum(o in ("delivered", "published") for o in outcomes)
    failed, dead = outcomes.count("failed"), outcomes.count("dead_lettered")
    phone = f"+1630555{i % 10_000:04d}"
    email = f"{name.split()[0].lower()}@example.com"
    out["conversations"].append(
        (cid, f"evt-{cid}", ended_at + timedelta(seconds=5), "acct-1", "Copperline", agent, agent.title(), version,
         "phone", "inbound", "completed", ended_at - timedelta(minutes=3), ended_at, ended_at.strftime("%Y-%m-%d"),
         180.0, reason, reason.lower(), "vapi", name, phone, email, tpl.event.replace(PLACEHOLDER, cid),
         ended_at + timedelta(seconds=6), "failed" if failed_extraction else "ok",
         None if failed_extraction else summary, review, 1, 2, delivered, failed, dead, 0, bool(failed or dead),
         120, 30, 0.0004, f"{'' if failed_extraction else summary.lower()} {name.lower()} {phone} {email}",
         ended_at + timedelta(seconds=7))
    )  # fmt: skip
    out["extractions"].append(
        (CONVERSATION_EXTRACTED, i % 12, i, cid, f"evt-{cid}", ended_at + timedelta(seconds=2),
         "failed" if failed_extraction else "ok", "LLM unavailable" if failed_extraction else None, "openai",
         "gpt-4o-mini", "rev-1", None if failed_extraction else summary, review, False, 120, 30, 0, 0.0004, 850.0,
         None, tpl.extraction)
    )  # fmt: skip
    out["decisions"].append(
        (DECISIONS, i % 12, i, cid, f"evt-{cid}", agent, version, "rev-1", "ok", ended_at + timedelta(seconds=3), 1,
         tpl.decision.replace(PLACEHOLDER, cid))
    )  # fmt: skip
    for flow in tpl.trace.flows:  # as the recorder writes them beside the trace (services/store/rows.py)
        out["decision_flows"].append(
            (f"evt-{cid}", "ok", 0, flow.flow_id, agent, version, "rev-1", ended_at + timedelta(seconds=3), flow.fired)
        )
    for index, (kind, outcome) in enumerate(zip(("webhook", "email"), outcomes, strict=True)):
        aid = action_id(cid, "crm-sync", index)
        at = ended_at + timedelta(seconds=4)
        out["actions"].append(
            (aid, cid, kind, "crm-sync", "crm" if kind == "webhook" else None,
             f"postcall.actions.{kind}.v1", ended_at + timedelta(seconds=3), outcome, 1, at)
        )  # fmt: skip
        error = "HTTP 503: upstream busy" if outcome in ("failed", "dead_lettered") else None
        out["attempts"].append(
            (aid, cid, 1, outcome, "crm", 503 if error else 200, 42.0, error, '{"ok": true}', at)
        )  # fmt: skip


async def load(store: Store, n: int) -> None:
    """Write n conversations with their children, then refresh the planner's statistics."""
    async with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await _copy(conn, n)
        else:
            await _executemany(conn, n)


async def _copy(conn: AsyncConnection, n: int) -> None:
    """COPY with the secondary indexes dropped, then built once (as a bulk load is done)."""
    raw = await conn.get_raw_connection()
    pg: Any = raw.driver_connection
    found = await pg.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY($1::text[]) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        list(TABLES),
    )
    for index in found:
        await pg.execute(f'DROP INDEX "{index["indexname"]}"')
    for batch in rows(n):
        for table, records in batch.items():
            await pg.copy_records_to_table(table, records=records, columns=TABLES[table])
    for index in found:
        await pg.execute(index["indexdef"])
    await pg.execute("ANALYZE")


async def _executemany(conn: AsyncConnection, n: int) -> None:
    raw = await conn.get_raw_connection()
    sqlite: Any = raw.driver_connection  # aiosqlite's connection
    names = ", ".join(f"'{t}'" for t in TABLES)
    cursor = await sqlite.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                  f"AND tbl_name IN ({names})")  # fmt: skip
    found = await cursor.fetchall()
    for name, _ in found:
        await sqlite.execute(f'DROP INDEX "{name}"')
    for batch in rows(n):
        await sqlite.execute("BEGIN")  # the store's connections run without implicit transactions
        for table, records in batch.items():
            columns = TABLES[table]
            converted = [tuple(_sqlite(v) for v in r) for r in records]
            placeholders = ", ".join("?" for _ in columns)
            await sqlite.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", converted)
        await sqlite.commit()
    for _, sql in found:
        await sqlite.execute(sql)
    await sqlite.execute("ANALYZE")


def _sqlite(value: Any) -> Any:
    """What UTCDateTime stores on SQLite: naive UTC text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value
