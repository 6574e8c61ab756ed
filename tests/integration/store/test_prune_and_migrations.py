"""Retention and schema: the pruning job, and migrations that build exactly what the models declare."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from schemas import headers as h
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS
from services.store import prune, queries, writer
from services.store import rows as r
from services.store.db import Store, StoreError, current_revision, head_revision, make_engine, migrate
from services.store.models import (
    Action,
    Attempt,
    Base,
    Conversation,
    DeadLetter,
    Decision,
    DecisionFlow,
    Extraction,
    table,
)
from services.store.settings import DatabaseSettings
from tests.support.calls import T0, ended, extracted, result, rows_of, story, trace


def one_per_conversation(rows: Any) -> list[Any]:
    """The conversation rows as a store before 0010 held them (without stored_at)."""
    return list({row["conversation_id"]: row for row in rows.conversations}.values())


async def test_prune_deletes_what_is_older_than_retention_and_keeps_the_rest(store: Store) -> None:
    old = story("old", at=T0)
    new = story("new", at=T0 + timedelta(days=30))
    await writer.write(store, rows_of(old + new))
    deleted = await prune.prune(store, retention_days=10, batch=1, now=T0 + timedelta(days=35))
    assert deleted["conversations"] == 1 and deleted["attempts"] == 2 and deleted["extractions"] == 1
    async with store.read() as conn:
        assert await queries.get_conversation(conn, "old") is None
        kept = await queries.get_conversation(conn, "new")
        for model in (Conversation, Extraction, Decision, Action, Attempt):
            assert (await conn.execute(select(func.count()).select_from(model))).scalar_one() >= 1
    assert kept is not None and kept.summary is not None and kept.summary.actions.total == 2


async def test_a_call_published_long_after_it_ended_is_pruned_with_all_its_rows(store: Store) -> None:
    """The conversation ages by when the call ended; its extraction, decision, actions and attempts (made when
    it was published, 30 days later) went by their own times, so they stayed after it: out of the list, while
    its page answered 200 with no event (walk24). A dead letter of the call keeps its own time."""
    late = rows_of(story("late", at=T0 + timedelta(days=30)))
    for row in late.conversations:  # the call ended 30 days before it was published
        row.update(started_at=T0 - timedelta(minutes=5), ended_at=T0, ended_day=T0.date().isoformat())
    late.extend(
        r.dead_letter(
            r.Source("postcall.router.dlq.v1", 0, 0, int((T0 + timedelta(days=30)).timestamp() * 1000)),
            "router",
            b"late",
            b"{}",
            {h.ORIGINAL_TOPIC: CONVERSATION_EXTRACTED},
        )
    )
    await writer.write(store, late)
    deleted = await prune.prune(store, retention_days=10, batch=1, now=T0 + timedelta(days=31))
    assert deleted["conversations"] == 1 and deleted["extractions"] == 1 and deleted["decisions"] == 1
    assert deleted["actions"] == 2 and deleted["attempts"] == 2 and deleted["dead_letters"] == 0
    async with store.read() as conn:
        left = await queries.get_conversation(conn, "late")  # its dead letter alone, still to be dealt with
        assert left is not None and left.event is None and len(left.dead_letters) == 1
        assert (left.extractions, left.decisions, left.actions) == ([], [], [])
        for model in (Extraction, Decision, Action, Attempt):
            assert (await conn.execute(select(func.count()).select_from(model))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(DeadLetter))).scalar_one() == 1


async def test_a_batch_of_more_calls_than_a_statement_takes_parameters_is_pruned(store: Store) -> None:
    """Each call's rows are deleted by its id, a bound parameter each: asyncpg takes at most 32,767 in a
    statement, so a batch setting above it (prune_batch has no upper bound) stopped the job on PostgreSQL."""
    row = one_per_conversation(rows_of(story("c", at=T0)))[0]
    calls = [{**row, "conversation_id": f"c{i}"} for i in range(32_768)]
    async with store.write() as conn:
        await conn.execute(table(Conversation).insert(), calls)
    deleted = await prune.prune(store, retention_days=10, batch=40_000, now=T0 + timedelta(days=35))
    assert deleted["conversations"] == 32_768


async def test_prune_on_an_empty_store_deletes_nothing(store: Store) -> None:
    assert set((await prune.prune(store, retention_days=1, batch=100)).values()) == {0}


async def test_migrations_build_what_the_models_declare(store: Store) -> None:
    assert await current_revision(store.engine) == head_revision()

    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
        changes = compare_metadata(context, Base.metadata)
        # the trigram index exists on PostgreSQL only, by hand in the migration (not in the models)
        return [c for c in changes if "search_text_trgm" not in str(c)]

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_migrating_again_is_harmless(store: Store) -> None:
    await writer.write(store, rows_of([(CONVERSATION_EXTRACTED, extracted(ended("c1")))]))
    await migrate(store.engine)
    async with store.read() as conn:
        assert await queries.get_conversation(conn, "c1") is not None


async def test_text_stored_lower_cased_in_ascii_only_is_lower_cased_again(store: Store) -> None:
    """What SQLite's own lower() left in search_text ("Émile") is folded by the migration that gave SQLite
    a Unicode lower(), so a search typed in lower case finds the calls stored before it too."""
    await writer.write(store, rows_of([(CONVERSATION_EXTRACTED, extracted(ended("c1", customer="Émile Zola")))]))
    async with store.write() as conn:
        head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        await conn.execute(text("UPDATE conversations SET search_text = 'Émile zola'"))
        await conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    await migrate(store.engine, "0006")  # that migration alone: the later ones' changes are in place already
    async with store.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    async with store.read() as conn:
        page = await queries.list_conversations(conn, queries.ConversationFilter(text="émile"))
    assert [c.conversation_id for c in page.items] == ["c1"]


async def test_a_store_migrated_by_a_newer_version_is_refused_saying_so(database_url: str) -> None:
    """An older pod starting after a newer one migrated (a rolling deploy, a rollback): alembic's "Can't
    locate revision identified by '0099'" escaped as a traceback, and the check without migrating said
    to run `postcall store migrate`, which cannot help."""
    settings = DatabaseSettings(url=database_url)
    async with Store.open(settings) as opened, opened.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    for migrate_on_start in (True, False):
        with pytest.raises(StoreError) as refused:
            async with Store.open(settings.model_copy(update={"migrate_on_start": migrate_on_start})):
                pass
        message = str(refused.value)
        assert "0099" in message and "newer" in message and "postcall store migrate" not in message, message


async def test_migrating_a_store_that_holds_copies_of_events_keeps_the_first_and_fixes_the_summaries(
    database_url: str,
) -> None:
    """Before 0008 an extraction or decision produced again after an upstream crash (same event id, new
    offset) was stored twice and its tokens counted twice: the migration removes the later copies and
    recomputes the sums, and keeps what only shares the event id (a failed extraction and its replayed
    success; a decision holding flows and the `postcall held release` that ran them)."""
    event = ended("c1")
    held = trace(event, [("crm-sync", False, [])]).model_copy(update={"extraction_status": "failed"})
    held.flows[0] = held.flows[0].model_copy(update={"held": True, "reason": "extraction failed: held"})
    released = trace(event, [("crm-sync", True, ["webhook"])], at=T0 + timedelta(minutes=5))
    ok = trace(event, [("crm-sync", True, ["webhook"])], at=T0 + timedelta(hours=1))
    failed = extracted(event, status="failed", at=T0 + timedelta(seconds=2), tokens=(10, 0), cost=0.0)
    records = [
        (CONVERSATION_ENDED, event),
        (CONVERSATION_EXTRACTED, failed),
        (DECISIONS, held),
        (DECISIONS, released.model_copy(update={"extraction_status": "failed"})),
        (CONVERSATION_EXTRACTED, extracted(event, at=T0 + timedelta(hours=1))),
        (DECISIONS, ok),
        (CONVERSATION_EXTRACTED, extracted(event, at=T0 + timedelta(hours=2), summary="A copy.")),
        (DECISIONS, ok.model_copy(update={"decided_at": T0 + timedelta(hours=2)})),
        (DECISIONS, held.model_copy(update={"decided_at": T0 + timedelta(hours=3)})),
    ]
    rows = rows_of(records)
    engine = make_engine(DatabaseSettings(url=database_url), writer=True)
    try:
        await migrate(engine, "0007")
        async with engine.begin() as conn:
            await conn.execute(table(Conversation).insert(), one_per_conversation(rows))  # as 0007 did
            await conn.execute(table(Extraction).insert(), rows.extractions)
            older = [{k: v for k, v in d.items() if k != "flows_held"} for d in rows.decisions]
            await conn.execute(table(Decision).insert(), older)
            await writer.refresh_conversations(conn, {"c1"})
        async with engine.connect() as conn:  # the store at 0007: get_conversation reads later revisions' columns
            c = table(Conversation).c
            before = await conn.scalar(select(c.prompt_tokens).where(c.conversation_id == "c1"))
        assert before == 250
        await migrate(engine)
        async with engine.connect() as conn:
            after = await queries.get_conversation(conn, "c1")
    finally:
        await engine.dispose()
    assert after is not None and after.summary is not None
    assert [(x.status, x.extracted_at) for x in after.extractions] == [
        ("failed", T0 + timedelta(seconds=2)),
        ("ok", T0 + timedelta(hours=1)),
    ]
    assert [(d.extraction_status, d.decided_at) for d in after.decisions] == [
        ("failed", T0 + timedelta(seconds=3)),
        ("failed", T0 + timedelta(minutes=5)),
        ("ok", T0 + timedelta(hours=1)),
    ]
    assert (after.summary.usage.prompt_tokens, after.summary.usage.cost_usd) == (130, 0.0004)
    assert after.summary.summary == "Customer asked for a callback." and after.summary.flows_fired == 1


async def test_conversations_stored_before_0010_are_stored_at_their_received_time(database_url: str) -> None:
    """The console asks for new calls by `stored_at` (0010): the rows stored before it take their received_at,
    and a newer event for one of them keeps it."""
    rows = rows_of(story("c1") + story("c2", at=T0 + timedelta(minutes=1)))
    engine = make_engine(DatabaseSettings(url=database_url), writer=True)
    c = table(Conversation).c
    try:
        await migrate(engine, "0009")
        async with engine.begin() as conn:
            await conn.execute(table(Conversation).insert(), one_per_conversation(rows))
        await migrate(engine)
        async with engine.begin() as conn:
            newer = rows_of([(CONVERSATION_ENDED, ended("c1", at=T0 + timedelta(hours=1)))])
            await writer.insert_records(conn, newer)
            stored = (await conn.execute(select(c.conversation_id, c.stored_at, c.received_at, c.ended_at))).all()
    finally:
        await engine.dispose()
    assert {cid: at == received for cid, at, received, _ in stored} == {"c1": True, "c2": True}
    assert {cid: ended_at for cid, _, _, ended_at in stored}["c1"] == T0 + timedelta(hours=1)  # the newer event


async def test_decisions_stored_before_0012_get_their_per_flow_rows(database_url: str) -> None:
    """The agents page counts fires from decision_flows (0012): the traces of its window stored before it are
    read once by the migration, a row per flow, as the recorder writes them from then on. Older traces are not
    (the page never counts them): filling a year of them made the first start after the upgrade outlast its
    startup probe (the migration runs at start, in one transaction)."""
    records: list[tuple[str, Any]] = []
    recent = datetime.now(UTC) - timedelta(days=6)
    for i in range(5):
        event = ended(f"c{i}", at=recent + timedelta(minutes=i))
        records.append((DECISIONS, trace(event, [("crm-sync", True, ["webhook"]), ("callback", i % 2 == 0, [])])))
    old = ended("c-old", at=recent - timedelta(days=30))
    records.append((DECISIONS, trace(old, [("crm-sync", True, ["webhook"])])))
    rows = rows_of(records)
    engine = make_engine(DatabaseSettings(url=database_url), writer=True)
    f = table(DecisionFlow).c
    try:
        await migrate(engine, "0011")
        async with engine.begin() as conn:
            await conn.execute(table(Decision).insert(), rows.decisions)
        await migrate(engine)
        async with engine.begin() as conn:
            found = (await conn.execute(select(f.event_id, f.flow_id, f.fired, f.decided_at, f.flows_held))).all()
    finally:
        await engine.dispose()
    written = {(r["event_id"], r["flow_id"], r["fired"], r["decided_at"], r["flows_held"]) for r in rows.decision_flows}
    assert len(found) == 10 and set(found) == {w for w in written if w[3] >= recent}
    assert sum(fired for _, flow, fired, _, _ in found if flow == "callback") == 3


async def test_attempts_stored_before_0014_keep_their_deferrals_apart_from_real_failures(database_url: str) -> None:
    """0014 marks the deferrals stored so far (a `Deferred:` failure), so that the real failure of the same attempt
    that follows one is stored beside it; a recorder of the version before (a rolling upgrade) still writes its
    attempts, as real ones (the column's default)."""
    deferral = "Deferred: rate limit of destination crm reached"
    old = rows_of([
        (ACTION_RESULTS, result("a1", "c1", "failed", 1, status_code=None, error=deferral)),
        (ACTION_RESULTS, result("a2", "c1", "failed", 1, status_code=500, error="HTTP 500: Deferred: not ours")),
    ]).attempts  # fmt: skip
    for row in old:
        del row["deferred"]  # as the writer before 0014 made them
    later = rows_of([(ACTION_RESULTS, result("a1", "c1", "failed", 1, status_code=503, error="HTTP 503: busy"))])
    t = table(Attempt).c
    engine = make_engine(DatabaseSettings(url=database_url), writer=True)
    try:
        await migrate(engine, "0013")
        async with engine.begin() as conn:
            await conn.execute(table(Attempt).insert(), old)
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(table(Attempt).insert(), [{**old[1], "action_id": "a3"}])  # an older recorder's row
        async with Store.open(DatabaseSettings(url=database_url), writer=True) as store:
            await writer.write(store, later)
        async with engine.begin() as conn:
            found = (await conn.execute(select(t.action_id, t.status_code, t.deferred).order_by(t.id))).all()
    finally:
        await engine.dispose()
    assert [tuple(f) for f in found] == [("a1", None, True), ("a2", 500, False), ("a3", 500, False), ("a1", 503, False)]


async def test_a_recorder_of_the_version_before_0010_still_stores_conversations_after_it(database_url: str) -> None:
    """A rolling upgrade: the first new pod migrates, the old recorder pods keep writing until they are rolled
    (docs/operations.md). They insert conversations without stored_at, which 0010 made NOT NULL: the store
    fills it with its own time instead of refusing the row."""
    rows = one_per_conversation(rows_of(story("c1")))
    c = table(Conversation).c
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as store:
        async with store.write() as conn:
            await conn.execute(table(Conversation).insert(), rows)  # as the 0009-era writer: no stored_at
        async with store.read() as conn:
            stored = (await conn.execute(select(c.conversation_id, c.stored_at))).all()
    assert [cid for cid, _ in stored] == ["c1"] and stored[0][1] is not None


def test_the_command_lines_store_commands_create_a_schema_but_upgrade_one_only_when_asked(database_url: str) -> None:
    """`postcall api token ...`, `store prune` and `dlq replay --database-url` migrated the store they were
    pointed at: an operator's newer CLI upgraded a running store outside a rollout, and the running
    version's pods then refused to restart. Now only `store migrate` upgrades; the others create a schema
    where there is none yet (the first token before the first rollout) and refuse an older one."""
    from typer.testing import CliRunner

    from services.cli.main import app

    settings = DatabaseSettings(url=database_url)

    async def at(revision: str | None = None) -> str | None:
        engine = make_engine(settings)
        try:
            if revision is not None:
                await migrate(engine, revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(at("0009")) == "0009"
    cli, where = CliRunner(), ["--database-url", database_url]
    refused = cli.invoke(app, ["api", "token", "create", "ops", "--role", "operator", *where])
    assert refused.exit_code == 2, refused.output
    assert f"at schema revision 0009, this version needs {head_revision()}: run `postcall store migrate`" in (
        refused.output
    )
    assert cli.invoke(app, ["store", "prune", *where]).exit_code == 2
    assert asyncio.run(at()) == "0009"  # not upgraded
    upgraded = cli.invoke(app, ["store", "migrate", *where])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"migrated from schema revision 0009 to {head_revision()}" in upgraded.output  # not "is up to date"
    assert asyncio.run(at()) == head_revision()
    again = cli.invoke(app, ["store", "migrate", *where])
    assert f"is up to date (schema revision {head_revision()})" in again.output, again.output
    assert cli.invoke(app, ["api", "token", "create", "ops", "--role", "operator", *where]).exit_code == 0


def test_the_first_token_creates_the_schema_of_a_store_that_has_none(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    made = CliRunner().invoke(app, ["api", "token", "create", "ops", "--role", "operator", "--database-url", url])
    assert made.exit_code == 0, made.output
    listed = CliRunner().invoke(app, ["api", "token", "list", "--database-url", url])
    assert listed.exit_code == 0 and "ops" in listed.output, listed.output
