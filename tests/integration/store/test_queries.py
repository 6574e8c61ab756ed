"""Queries on SQLite and PostgreSQL: every filter, keyset pagination, dead letters, statistics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schemas import headers as h
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS
from services.store import queries, writer
from services.store import rows as r
from services.store.db import Store
from services.store.queries import ConversationFilter, DeadLetterFilter, QueryError
from tests.support.calls import T0, action_id, ended, extracted, result, rows_of, story, trace


def dead_letter(offset: int, service: str, key: str, reason: str, category: str = "poison", minutes: int = 0) -> r.Rows:
    source = r.Source(
        f"postcall.{service}.dlq.v1", 0, offset, int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    )
    headers = {
        h.DLQ_SERVICE: service,
        h.ORIGINAL_TOPIC: "postcall.conversation-ended.v1",
        h.ORIGINAL_PARTITION: "0",
        h.ORIGINAL_OFFSET: str(offset),
        h.EXCEPTION_MESSAGE: reason,
        h.DLQ_FAILURE_CATEGORY: category,
        h.ATTEMPTS: "1",
    }
    return r.dead_letter(source, service, key.encode(), b'{"not": "a conversation"}', headers)


@pytest.fixture
async def calls(store: Store) -> Store:
    """Twelve calls, one per minute: two agents, three end reasons, one failed extraction, one needing
    review, one dead-lettered action, one extractor dead letter."""
    records: list[tuple[str, Any]] = []
    for i in range(12):
        cid = f"c{i:02d}"
        agent = "sales-line" if i % 3 == 0 else "support-line"
        reason = ("CUSTOMER_HANGUP", "VOICEMAIL", "BLIND_TRANSFER")[i % 3]
        event = ended(cid, agent=agent, end_reason=reason, at=T0 + timedelta(minutes=i), customer=f"Customer {i}",
                      version="2" if i == 6 else "3")  # fmt: skip
        records.append((CONVERSATION_ENDED, event))
        records.append(
            (CONVERSATION_EXTRACTED, extracted(event, status="failed" if i == 5 else "ok", review=i == 8,
                                               summary=f"Summary of call {i}" + (" about a refund" if i == 9 else "")))
        )  # fmt: skip
        records.append((DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])))
        outcome = "dead_lettered" if i == 10 else "delivered"
        records.append((ACTION_RESULTS, result(action_id(cid, "crm-sync"), cid, outcome, at=event.ended_at)))
    rows = rows_of(records)
    rows.extend(dead_letter(0, "extractor", "c11", "InvalidRecord: not valid JSON"))
    rows.extend(dead_letter(1, "extractor", "zz", "InvalidRecord: not valid JSON", minutes=30))
    rows.extend(dead_letter(2, "router", "c03", "RetryableError: config missing", "retryable-exhausted", minutes=40))
    await writer.write(store, rows)
    return store


async def ids(store: Store, **filters: object) -> list[str]:
    async with store.read() as conn:
        page = await queries.list_conversations(conn, ConversationFilter(**filters), limit=100)  # type: ignore[arg-type]
    return [i.conversation_id for i in page.items]


async def test_every_filter_of_the_conversation_list(calls: Store) -> None:
    assert await ids(calls) == [f"c{i:02d}" for i in reversed(range(12))]  # newest first
    assert await ids(calls, agent="sales-line") == ["c09", "c06", "c03", "c00"]
    assert await ids(calls, agent="sales-line", agent_version="2") == ["c06"]
    assert await ids(calls, end_reasons=["VOICEMAIL"]) == ["c10", "c07", "c04", "c01"]
    assert await ids(calls, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == ["c03", "c02"]
    assert await ids(calls, extraction_status="failed") == ["c05"]
    assert await ids(calls, failed=True) == ["c11", "c10", "c03"]  # dead-lettered action, dead letters
    assert await ids(calls, needs_review=True) == ["c08"]
    assert await ids(calls, text="REFUND") == ["c09"]
    assert await ids(calls, text="customer 1") == ["c11", "c10", "c01"]
    assert await ids(calls, text="100%") == []  # LIKE wildcards are text
    assert await ids(calls, agent="support-line", end_reasons=["VOICEMAIL"], failed=True) == ["c10"]


async def test_text_search_and_the_reason_filter_ignore_case_beyond_ascii_on_both_databases(store: Store) -> None:
    """SQLite's lower() folds ASCII only: "émile" did not find "Émile Zola" there (PostgreSQL found it), nor
    "ärger" a dead letter whose reason says "Ärger"."""
    event = ended("c1", customer="Émile Zola")
    rows = rows_of([(CONVERSATION_ENDED, event), (CONVERSATION_EXTRACTED, extracted(event, summary="Über Öl"))])
    rows.extend(dead_letter(0, "extractor", "c1", "InvalidRecord: Ärger mit JSON"))
    await writer.write(store, rows)
    for text in ("émile", "ÉMILE", "Émile", "über öl", "ÜBER ÖL"):
        assert await ids(store, text=text) == ["c1"], text
    async with store.read() as conn:
        for reason in ("ärger", "ÄRGER"):
            page = await queries.list_dead_letters(conn, DeadLetterFilter(reason=reason))
            assert [d.key for d in page.items] == ["c1"], reason


async def test_cursor_pagination_returns_every_row_once_in_order(calls: Store) -> None:
    for order in ("desc", "asc"):
        seen, cursor = [], None
        async with calls.read() as conn:
            while True:
                page = await queries.list_conversations(conn, ConversationFilter(), limit=5, cursor=cursor, order=order)
                seen += [i.conversation_id for i in page.items]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        expected = [f"c{i:02d}" for i in range(12)]
        assert seen == (expected if order == "asc" else expected[::-1])


async def test_a_malformed_cursor_is_a_query_error(calls: Store) -> None:
    async with calls.read() as conn:
        for bad in ("nonsense", "W10", "WyJ4IiwxXQ"):
            with pytest.raises(QueryError, match="malformed cursor"):
                await queries.list_conversations(conn, ConversationFilter(), cursor=bad)


async def test_one_conversation_in_full(calls: Store) -> None:
    async with calls.read() as conn:
        detail = await queries.get_conversation(conn, "c10")
        missing = await queries.get_conversation(conn, "nope")
        only_letter = await queries.get_conversation(conn, "zz")
    assert missing is None
    assert detail is not None and detail.event is not None and detail.summary is not None
    assert detail.event.conversation_id == "c10" and detail.event.messages
    assert detail.extractions[0].fields["follow_up_required"].confidence == 0.93
    assert detail.decisions[0].flows[0].conditions[0].kind == "end_reason"
    assert [(a.flow_id, a.final_outcome) for a in detail.actions] == [("crm-sync", "dead_lettered")]
    assert only_letter is not None and only_letter.summary is None
    assert [d.reason for d in only_letter.dead_letters] == ["InvalidRecord: not valid JSON"]


async def test_dead_letters_filters_and_counts_by_reason(calls: Store) -> None:
    async with calls.read() as conn:
        everything = await queries.list_dead_letters(conn, DeadLetterFilter())
        extractor = await queries.list_dead_letters(conn, DeadLetterFilter(services=["extractor"]))
        retryable = await queries.list_dead_letters(conn, DeadLetterFilter(reason="EXHAUSTED"))
        late = await queries.list_dead_letters(conn, DeadLetterFilter(since=T0 + timedelta(minutes=20)))
        by_key = await queries.list_dead_letters(conn, DeadLetterFilter(key="c11"))
        counts = await queries.dead_letter_counts(conn, DeadLetterFilter())
        first = await queries.list_dead_letters(conn, DeadLetterFilter(), limit=2)
        rest = await queries.list_dead_letters(conn, DeadLetterFilter(), limit=2, cursor=first.next_cursor)
    assert [d.key for d in everything.items] == ["c03", "zz", "c11"]
    assert everything.items[0].coordinates == "postcall.router.dlq.v1:0:2"
    assert [d.key for d in extractor.items] == ["zz", "c11"]
    assert [d.key for d in retryable.items] == ["c03"]
    assert [d.key for d in late.items] == ["c03", "zz"]
    assert [d.key for d in by_key.items] == ["c11"]
    assert [(c.service, c.reason, c.count) for c in counts] == [
        ("extractor", "InvalidRecord: not valid JSON", 2),
        ("router", "RetryableError: config missing", 1),
    ]
    assert counts[0].last_at - counts[0].first_at == timedelta(minutes=30)
    assert [d.key for d in first.items + rest.items] == ["c03", "zz", "c11"] and rest.next_cursor is None


@pytest.mark.parametrize(
    "filters",
    [DeadLetterFilter(key="c11"), DeadLetterFilter(services=["dispatcher"], key="c11")],
    ids=["key-filter", "redeliver"],
)
async def test_the_key_filter_reads_the_key_and_conversation_indexes(calls: Store, filters: DeadLetterFilter) -> None:
    """`key = X OR conversation_id = X` (the key filter, the console's "Redeliver failed actions") scanned every
    dead letter while `key` had no index (0011): 100k letters, 80 ms on SQLite and 42 ms on PostgreSQL a page."""
    letters = [row for i in range(300) for row in dead_letter(10 + i, "dispatcher", f"k{i}", "HTTP 410").dead_letters]
    await writer.write(calls, r.Rows(dead_letters=letters))
    async with calls.engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE"))  # the planner's statistics: 303 letters, one per key
    async with calls.read() as conn:
        query = queries.dead_letters_query(filters, 50)
        sql = str(query.compile(conn.engine.sync_engine, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            plan = [row[-1] for row in await conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql))]
        else:
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # a few pages: a scan is cheaper, not chosen
            plan = [row[0] for row in await conn.execute(sa.text("EXPLAIN " + sql))]
    used = " ".join(plan)
    assert "ix_dead_letters_key" in used and "ix_dead_letters_conversation_id" in used, plan


async def test_a_replayed_dead_letter_leaves_the_pending_list(calls: Store) -> None:
    marker = {h.DLQ_REPLAYED: "postcall.extractor.dlq.v1:0:1", h.REPLAYED_BY: "alice", h.REPLAYED_AT: T0.isoformat()}
    await writer.write(calls, r.replay_marker(marker, r.Source("postcall.extractor.dlq.v1", 0, 5, 0)))
    async with calls.read() as conn:
        pending = await queries.list_dead_letters(conn, DeadLetterFilter())
        replayed = await queries.list_dead_letters(conn, DeadLetterFilter(state="replayed"))
    assert [d.key for d in pending.items] == ["c03", "c11"]
    assert [(d.key, d.replayed_by) for d in replayed.items] == [("zz", "alice")]


async def test_a_dead_letter_keeps_its_value_and_headers(calls: Store) -> None:
    async with calls.read() as conn:
        page = await queries.list_dead_letters(conn, DeadLetterFilter(key="c03"))
        detail = await queries.get_dead_letter(conn, page.items[0].id)
    assert detail is not None
    assert detail.value == {"not": "a conversation"}
    assert detail.headers[h.DLQ_FAILURE_CATEGORY] == "retryable-exhausted"


async def test_stats_per_agent_and_day(calls: Store) -> None:
    later = ended("d1", agent="sales-line", at=T0 + timedelta(days=1))
    failed = result(action_id("d1", "crm-sync"), "d1", "failed", status_code=503, error="HTTP 503")
    records = [(CONVERSATION_ENDED, later), (CONVERSATION_EXTRACTED, extracted(later, tokens=(1000, 100), cost=0.5))]
    await writer.write(calls, rows_of([*records, (ACTION_RESULTS, failed)], 100))
    async with calls.read() as conn:
        days = await queries.stats(conn, T0 - timedelta(days=1), T0 + timedelta(days=2))
        sales = await queries.stats(conn, T0 - timedelta(days=1), T0 + timedelta(days=2), agent="sales-line")
    table = {(d.day, d.agent_id): d for d in days}
    support = table[("2026-03-10", "support-line")]
    assert (support.conversations, support.extraction_failures) == (8, 1)
    assert (support.actions_delivered, support.actions_dead_lettered) == (7, 1)
    assert support.prompt_tokens == 8 * 120 and support.completion_tokens == 8 * 30
    assert support.cost_usd == pytest.approx(8 * 0.0004)
    next_day = table[("2026-03-11", "sales-line")]
    assert (next_day.conversations, next_day.prompt_tokens, next_day.cost_usd) == (1, 1000, 0.5)
    assert (next_day.actions_delivered, next_day.actions_failed, next_day.actions_dead_lettered) == (0, 1, 0)
    assert support.actions_failed == 0
    assert {d.agent_id for d in sales} == {"sales-line"}


async def test_events_for_reextraction_come_from_the_store(calls: Store) -> None:
    async with calls.read() as conn:
        chosen = await queries.events_for(conn, ConversationFilter(extraction_status="failed"), limit=10)
        events = await queries.events_of(conn, [cid for cid, _ in chosen])
    assert chosen == [("c05", "evt-c05")]
    assert list(events) == ["c05"] and '"conversation_id":"c05"' in events["c05"]


async def test_a_story_written_record_by_record_reads_the_same(store: Store) -> None:
    for offset, record in enumerate(story("s1")):
        await writer.write(store, rows_of([record], first_offset=offset))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "s1")
    assert detail is not None and detail.summary is not None
    assert detail.summary.actions.total == 2 and detail.summary.actions.delivered == 2
