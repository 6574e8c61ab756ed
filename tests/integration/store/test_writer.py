"""The writer on SQLite and PostgreSQL: idempotent by identity, order-independent, every attempt kept."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

from sqlalchemy import func, select

from schemas import headers as h
from schemas.events import MAX_COUNT, MAX_ID_LENGTH, RESPONSE_EXCERPT_CHARS, RESULT_ID_CHARS, Account, ActionCompleted
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS
from services.store import queries, tokens, writer
from services.store import rows as r
from services.store.db import Store
from services.store.models import Action, Attempt, Conversation, Decision, Extraction
from tests.support.calls import T0, action_id, ended, extracted, result, rows_of, story, trace


async def counts(store: Store) -> dict[str, int]:
    out = {}
    async with store.read() as conn:
        for model in (Conversation, Extraction, Decision, Action, Attempt):
            out[model.__tablename__] = (await conn.execute(select(func.count()).select_from(model))).scalar_one()
    return out


async def test_writing_the_same_records_twice_adds_no_row(store: Store) -> None:
    records = story("c1") + story("c2", at=T0 + timedelta(minutes=1))
    await writer.write(store, rows_of(records))
    first = await counts(store)
    await writer.write(store, rows_of(records))
    assert (
        await counts(store)
        == first
        == {
            "conversations": 2,
            "extractions": 2,
            "decisions": 2,
            "actions": 4,
            "attempts": 4,
        }
    )


async def test_results_before_their_conversation_are_summarised_when_it_arrives(store: Store) -> None:
    records = story("c1")
    by_topic = {t: [r for r in records if r[0] == t] for t in (ACTION_RESULTS, DECISIONS, CONVERSATION_ENDED)}
    await writer.write(store, rows_of(by_topic[ACTION_RESULTS]))
    await writer.write(store, rows_of(by_topic[DECISIONS]))
    async with store.read() as conn:
        assert (await queries.get_conversation(conn, "c1")).summary is None  # type: ignore[union-attr]
    await writer.write(store, rows_of(by_topic[CONVERSATION_ENDED]))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c1")
    assert detail is not None and detail.summary is not None
    assert detail.summary.actions.total == 2 and detail.summary.actions.delivered == 2
    assert detail.summary.flows_fired == 1
    assert {a.flow_id for a in detail.actions} == {"crm-sync"}  # the trace filled what the result could not


async def test_every_attempt_is_kept_and_the_final_outcome_follows_them(store: Store) -> None:
    event = ended("c1")
    aid = action_id("c1", "crm-sync")
    records = [
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "c1", "failed", 1, status_code=503, error="HTTP 503: busy")),
    ]
    await writer.write(store, rows_of(records))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c1")
    assert detail is not None and detail.summary is not None
    assert detail.actions[0].final_outcome == "failed" and detail.summary.has_failure
    later = [
        (ACTION_RESULTS, result(aid, "c1", "failed", 2, status_code=500, at=T0 + timedelta(seconds=70))),
        (ACTION_RESULTS, result(aid, "c1", "delivered", 3, at=T0 + timedelta(seconds=700))),
    ]
    await writer.write(store, rows_of(later, first_offset=5))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c1")
    assert detail is not None and detail.summary is not None
    action = detail.actions[0]
    assert [(a.attempt, a.outcome, a.status_code) for a in action.attempts] == [
        (1, "failed", 503),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    assert action.attempts[0].error == "HTTP 503: busy"
    assert action.final_outcome == "delivered"
    assert not detail.summary.has_failure and detail.summary.actions.delivered == 1


async def test_the_newest_extraction_decides_status_summary_and_review(store: Store) -> None:
    event = ended("c1")
    failed = extracted(event, status="failed", at=T0 + timedelta(seconds=2))
    repaired = extracted(event, summary="Wants a callback on Friday.", review=True, at=T0 + timedelta(days=1))
    await writer.write(store, rows_of([(CONVERSATION_EXTRACTED, repaired)]))
    await writer.write(store, rows_of([(CONVERSATION_EXTRACTED, failed)], first_offset=1))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c1")
    assert detail is not None and detail.summary is not None
    assert [x.status for x in detail.extractions] == ["failed", "ok"]
    assert detail.summary.extraction_status == "ok" and detail.summary.needs_review
    assert detail.summary.summary == "Wants a callback on Friday."
    assert detail.summary.usage.prompt_tokens == 240  # both extractions were paid for
    value = detail.extractions[1].fields["follow_up_required"]
    assert value.evidence == "Please call me back tomorrow." and value.needs_review


async def test_nul_characters_from_callers_are_stored(store: Store) -> None:
    event = ended("c\x00nul", customer="Tom\x00Becker")
    await writer.write(store, rows_of([(CONVERSATION_ENDED, event), (CONVERSATION_EXTRACTED, extracted(event))]))
    async with store.read() as conn:
        page = await queries.list_conversations(conn, queries.ConversationFilter(text="tom"))
    assert [i.customer.name for i in page.items] == ["Tom\ufffdBecker"]


async def test_two_writers_on_one_conversation_leave_a_correct_summary(store: Store, database_url: str) -> None:
    """Two recorders writing the same conversations at once: whichever commits last sees both."""
    from services.store.settings import DatabaseSettings

    events = [ended(f"race-{i}") for i in range(60)]
    await writer.write(store, rows_of([(CONVERSATION_ENDED, e) for e in events]))
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as other:

        async def results(w: Store, index: int) -> None:
            for e in events:
                aid = action_id(e.conversation_id, "crm-sync", index)
                done = result(aid, e.conversation_id, "delivered", kind=("webhook", "email")[index])
                await writer.write(w, rows_of([(ACTION_RESULTS, done)], first_offset=100 * index))

        await asyncio.gather(results(store, 0), results(other, 1))
    async with store.read() as conn:
        page = await queries.list_conversations(
            conn, queries.ConversationFilter(ids=[e.conversation_id for e in events])
        )
    assert {(i.actions.total, i.actions.delivered) for i in page.items} == {(2, 2)}


async def test_a_command_line_replay_is_audited_once_however_often_its_marker_is_read(store: Store) -> None:
    letter = r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 9, 0), "router", b"c3", b"{}", {})
    await writer.write(store, letter)
    cli = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:0:9", h.REPLAYED_BY: "ops@box", h.REPLAYED_VIA: "cli"}
    api = {**cli, h.REPLAYED_BY: "alice", h.REPLAYED_VIA: "api"}  # the API wrote its own audit row
    for offset, headers in enumerate([cli, api]):
        marker = r.replay_marker(headers, r.Source("postcall.router.dlq.v1", 0, 10 + offset, 0))
        await writer.write(store, marker)
        await writer.write(store, marker)  # a restart before the offset commit reads it again
    async with store.read() as conn:
        page = await tokens.list_audit(conn)
        letters = await queries.list_dead_letters(conn, queries.DeadLetterFilter(state="replayed"))
    assert [(a.actor, a.role, a.action, a.target) for a in page.items] == [
        ("ops@box", "command line", "replay", {"dead_letter": "postcall.router.dlq.v1:0:9",
                                               "marker": "postcall.router.dlq.v1:0:10"}),
    ]  # fmt: skip
    assert [(d.key, d.replayed_by) for d in letters.items] == [("c3", "ops@box")]


async def test_a_command_line_reextraction_is_audited_once_per_copy(store: Store) -> None:
    event = ended("c-re")
    copy = {h.REEXTRACT_OF: event.event_id, h.REEXTRACTED_BY: "ops@box"}
    for _ in range(2):  # read again after a restart: no second row
        await writer.write(store, r.ended(event, r.Source(CONVERSATION_ENDED, 1, 7, 0), copy))
    await writer.write(store, r.ended(event, r.Source(CONVERSATION_ENDED, 1, 8, 0), copy))  # re-extracted again
    async with store.read() as conn:
        page = await tokens.list_audit(conn)
    assert [(a.actor, a.action, a.target["record"]) for a in page.items] == [
        ("ops@box", "reextract", f"{CONVERSATION_ENDED}:1:8"),
        ("ops@box", "reextract", f"{CONVERSATION_ENDED}:1:7"),
    ]


async def test_a_replayed_dead_letter_no_longer_counts_as_a_failure_of_its_conversation(store: Store) -> None:
    """The replay marker names only the dead letter (topic:partition:offset), not its conversation; the
    conversation's summary (dead_letters, has_failure: the list's failure filter) was not recomputed, so it
    went on counting the replayed dead letter until some other record of that conversation came."""
    await writer.write(store, rows_of(story("c1")))
    value = extracted(ended("c1")).model_dump_json().encode()
    await writer.write(store, r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 9, 0), "router", b"c1", value, {}))
    async with store.read() as conn:
        before = await queries.get_conversation(conn, "c1")
    assert before is not None and before.summary is not None and before.summary.dead_letters == 1
    marker = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:0:9", h.REPLAYED_BY: "ops@box", h.REPLAYED_VIA: "cli"}
    await writer.write(store, r.replay_marker(marker, r.Source("postcall.router.dlq.v1", 0, 10, 0)))
    async with store.read() as conn:
        after = await queries.get_conversation(conn, "c1")
        failing = await queries.list_conversations(conn, queries.ConversationFilter(failed=True))
    assert after is not None and after.summary is not None
    assert (after.summary.dead_letters, after.summary.has_failure, failing.items) == (0, False, [])


async def test_the_timeline_orders_actions_the_same_whichever_topic_was_read_first(store: Store) -> None:
    """An action is first seen in its decision trace; a result read before the trace (the recorder reads the
    topics in no set order) set first_seen_at to the result's completion time and kept it, so the timeline
    listed the action that completed first first: the order depended on which topic the recorder read first."""
    for cid, results_first in (("c-trace-first", False), ("c-results-first", True)):
        event = ended(cid)
        decided = rows_of([(DECISIONS, trace(event, [("crm-sync", True, ["webhook", "email"])]))])
        slow = result(action_id(cid, "crm-sync", 0), cid, "delivered", at=T0 + timedelta(minutes=5))
        fast = result(action_id(cid, "crm-sync", 1), cid, "published", at=T0 + timedelta(seconds=4), kind="email")
        results = rows_of([(ACTION_RESULTS, slow), (ACTION_RESULTS, fast)])
        for rows in (results, decided) if results_first else (decided, results):
            await writer.write(store, rows)
        await writer.write(store, rows_of([(CONVERSATION_ENDED, event)]))
    async with store.read() as conn:
        orders = {
            cid: [a.type for a in detail.actions]
            for cid in ("c-trace-first", "c-results-first")
            if (detail := await queries.get_conversation(conn, cid)) is not None
        }
    assert orders == {"c-trace-first": ["webhook", "email"], "c-results-first": ["webhook", "email"]}


async def test_a_dead_letter_with_a_long_key_and_no_conversation_in_its_value_is_stored(store: Store) -> None:
    """The key names the conversation when the value does not; a key longer than PostgreSQL's index entries
    allow (8 kB; the dead_letters.conversation_id index) made the database refuse the dead letter, and again
    each time the recorder read it from its own dead-letter topic (before ded05cf: forever)."""
    key = secrets.token_hex(5_000).encode()  # incompressible: PostgreSQL compresses index entries
    await writer.write(store, r.dead_letter(r.Source("postcall.extractor.dlq.v1", 0, 1, 0), "extractor", key, b"{", {}))
    forged = {h.DLQ_SERVICE: secrets.token_hex(5_000)}  # the service is indexed too (anyone may write a DLQ topic)
    await writer.write(store, r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 1, 0), "router", b"c1", b"{", forged))
    async with store.read() as conn:
        letters = await queries.list_dead_letters(conn, queries.DeadLetterFilter())
    assert sorted(d.key or "" for d in letters.items) == sorted([key.decode(), "c1"])


async def test_an_extraction_and_a_decision_produced_again_after_a_crash_are_stored_once(store: Store) -> None:
    """An extractor or router that dies after producing and before committing its input's offset produces
    the same event (same event id) again, at a new offset; keyed by the offset alone, the timeline showed it
    twice and the conversation's tokens and cost counted both. Once across batches (c1) and within one (c2)."""
    for cid, one_batch in (("c1", False), ("c2", True)):
        event = ended(cid)
        first = [
            (CONVERSATION_ENDED, event),
            (CONVERSATION_EXTRACTED, extracted(event)),
            (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        ]
        again = [
            (CONVERSATION_EXTRACTED, extracted(event, at=T0 + timedelta(minutes=1), tokens=(150, 40), cost=0.0005)),
            (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])], at=T0 + timedelta(minutes=1))),
        ]
        if one_batch:
            await writer.write(store, rows_of(first + again, first_offset=10))
        else:
            await writer.write(store, rows_of(first))
            await writer.write(store, rows_of(again, first_offset=1))
    async with store.read() as conn:
        details = [await queries.get_conversation(conn, cid) for cid in ("c1", "c2")]
    for detail in details:
        assert detail is not None and detail.summary is not None
        assert [x.extracted_at for x in detail.extractions] == [T0 + timedelta(seconds=2)]  # the first is kept
        assert [d.decided_at for d in detail.decisions] == [T0 + timedelta(seconds=3)]
        usage = detail.summary.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cost_usd) == (120, 30, 0.0004)
    assert (await counts(store))["extractions"] == 2


async def test_a_failed_extraction_its_replayed_success_and_a_release_of_its_held_flows_are_all_kept(
    store: Store,
) -> None:
    """Not copies, though they share the event id: the `failed` extraction written when the input was
    dead-lettered and the `ok` one after the dead letter's replay (same input, same ce_id, same revision);
    the decision that held flows on the failed extraction and the one `postcall held release` made on the
    same extraction record to run them; and the decision on the successful extraction."""
    event = ended("c1")
    failed = extracted(event, status="failed", at=T0 + timedelta(seconds=2))
    held = trace(event, [("crm-sync", False, [])]).model_copy(update={"extraction_status": "failed"})
    held.flows[0] = held.flows[0].model_copy(update={"held": True, "reason": "extraction failed: held"})
    released = trace(event, [("crm-sync", True, ["webhook"])], at=T0 + timedelta(minutes=5))
    released = released.model_copy(update={"extraction_status": "failed"})
    repaired = extracted(event, at=T0 + timedelta(hours=1))
    decided = trace(event, [("crm-sync", True, ["webhook"])], at=T0 + timedelta(hours=1, seconds=1))
    records = [
        (CONVERSATION_ENDED, event),
        (CONVERSATION_EXTRACTED, failed),
        (DECISIONS, held),
        (CONVERSATION_EXTRACTED, failed),  # `postcall held release` republishes the extraction record
        (DECISIONS, released),
        (CONVERSATION_EXTRACTED, repaired),
        (DECISIONS, decided),
    ]
    await writer.write(store, rows_of(records))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c1")
    assert detail is not None and detail.summary is not None
    assert [x.status for x in detail.extractions] == ["failed", "ok"]
    assert [(d.extraction_status, [f.held for f in d.flows]) for d in detail.decisions] == [
        ("failed", [True]),
        ("failed", [False]),
        ("ok", [False]),
    ]
    assert detail.summary.usage.prompt_tokens == 240 and detail.summary.extraction_status == "ok"


def incompressible(chars: int) -> str:
    """`chars` random characters of four UTF-8 bytes each: the longest bytes a contract id can have, which
    PostgreSQL cannot compress in an index entry."""
    return "".join(chr(0x20000 + secrets.randbelow(0xA000)) for _ in range(chars))


async def test_a_call_with_every_id_and_result_at_the_contracts_longest_is_stored(store: Store) -> None:
    """Ids of MAX_ID_LENGTH four-byte characters are 1 KiB each; the conversations index on (agent_id,
    ended_at, conversation_id) holds two of them, under PostgreSQL's index entry limit (2,704 bytes)."""
    cid, agent = incompressible(MAX_ID_LENGTH), incompressible(MAX_ID_LENGTH)
    event = ended(cid, agent=agent, event_id=incompressible(MAX_ID_LENGTH)).model_copy(
        update={"account": Account(id=incompressible(MAX_ID_LENGTH))}
    )
    done = result(action_id(cid, "crm-sync", 0), cid, "delivered").model_copy(
        update={
            "result_id": incompressible(RESULT_ID_CHARS),
            "response_excerpt": incompressible(RESPONSE_EXCERPT_CHARS),
        }
    )
    records = [
        (CONVERSATION_ENDED, event),
        (CONVERSATION_EXTRACTED, extracted(event)),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, ActionCompleted.model_validate(done.model_dump())),  # valid against the contract
    ]
    await writer.write(store, rows_of(records))
    assert await counts(store) == {"conversations": 1, "extractions": 1, "decisions": 1, "actions": 1, "attempts": 1}
    async with store.read() as conn:
        page = await queries.list_conversations(conn, queries.ConversationFilter(agent=agent))
        [attempt] = (await conn.execute(select(Attempt.result_id))).scalars().all()
    assert [i.conversation_id for i in page.items] == [cid] and attempt == done.result_id


async def test_a_conversations_extractions_with_the_contracts_largest_token_counts_are_stored_and_summed(
    store: Store,
) -> None:
    """The conversation's token counts are the sum of its extractions' (a re-extraction adds one): in a
    64-bit column, as SQLite and PostgreSQL hold integers. Counts had no maximum: one of 2**63 from an LLM
    server made the extraction a record no store holds (OverflowError on SQLite, DataError on PostgreSQL)."""
    event = ended("c-tokens")
    first = extracted(event, tokens=(MAX_COUNT, MAX_COUNT))
    again = extracted(event, tokens=(MAX_COUNT, MAX_COUNT), at=first.extracted_at + timedelta(minutes=1))
    again = again.model_copy(update={"event_id": "evt-c-tokens-again"})
    await writer.write(store, rows_of([(CONVERSATION_ENDED, event), (CONVERSATION_EXTRACTED, first)]))
    await writer.write(store, rows_of([(CONVERSATION_EXTRACTED, again)], first_offset=1))
    async with store.read() as conn:
        row = (await conn.execute(select(Conversation.prompt_tokens, Conversation.completion_tokens))).one()
    assert tuple(row) == (2 * MAX_COUNT, 2 * MAX_COUNT)
