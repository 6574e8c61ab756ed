"""The recorder on the real broker and a real store (SQLite and PostgreSQL): every topic it reads ends up
in the store, a record that does not fit is dead-lettered, and kill -9 mid-stream loses and repeats nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from schemas import headers as h
from schemas.routes import EXTRACTOR, RECORDER, registry
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS
from services.cli import dlq as cli_dlq
from services.common.kafka import ensure_topics, partitions_of
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.devkit.stack import skip_backlog
from services.recorder.batcher import Batcher
from services.recorder.handler import Recorder
from services.store import queries, tokens, writer
from services.store.db import Store
from services.store.models import Action, Attempt, Conversation, DeadLetter, Decision, Extraction
from services.store.rows import Rows
from services.store.settings import DatabaseSettings
from tests.support.calls import T0, ended, story
from tests.support.kafka import committed, create_topics, produce, read_all, unique
from tests.support.procs import start

MS = int(T0.timestamp() * 1000)


async def counts(store: Store) -> dict[str, int]:
    out = {}
    async with store.read() as conn:
        for model in (Conversation, Extraction, Decision, Action, Attempt, DeadLetter):
            out[model.__tablename__] = (await conn.execute(select(func.count()).select_from(model))).scalar_one()
    return out


async def run_recorder(
    kafka: KafkaSettings, store: Store, route: Any, idle_exit: float = 1.5, *, refuse: str | None = None,
    group: str | None = None,
) -> None:  # fmt: skip
    """Until idle, on a group of its own unless `group`; `refuse`: the store refuses that conversation's rows."""

    async def write(rows: Rows) -> None:
        if any(row["conversation_id"] == refuse for row in rows.conversations):
            raise ValueError(f"cannot store {refuse}")  # not an outage: the record is dead-lettered at once
        await writer.write(store, rows)

    settings = RuntimeSettings(
        **{
            **route.runtime_defaults(),
            "metrics_port": 0,
            "idle_exit_seconds": idle_exit,
            "commit_interval_seconds": 0.2,
        }
    )
    async with Batcher(write, max_delay_seconds=0.01) as batcher:
        recorder = Recorder(batcher, retention_days=100_000, route=route)
        runtime = Runtime(recorder.service(), kafka=kafka, settings=settings, group_id=group or unique("rec"))
        await asyncio.wait_for(runtime.run(), 120)


async def test_a_backlog_of_large_records_is_taken_as_the_store_writes_it_not_all_at_once(kafka: KafkaSettings) -> None:
    """The window counts records (2000 for the recorder), not bytes: a backlog of large records, with the
    store slower than Kafka, was all taken and held at once, each with its decoded event and its rows (a
    conversation of about 100 KB holds about 0.7 MiB until written): past the pod's memory limit, and read
    again after the restart. The recorder now takes no more while the records waiting weigh its budget."""
    prefix = unique("t") + "."
    route = RECORDER.renamed(lambda name: prefix + name)
    await create_topics(kafka, route.topics())
    dlq = prefix + "postcall.router.dlq.v1"
    letters = 240
    value = b'{"conversation_id": "big", "pad": "' + b"x" * (256 * 1024) + b'"}'
    for first in range(0, letters, 40):
        await produce(kafka, dlq, [(f"c{i}", value) for i in range(first, first + 40)])
    gate, seen = asyncio.Event(), []

    class SlowStore:
        written = 0

        async def write(self, rows: Any) -> None:
            await gate.wait()
            self.written += len(rows.dead_letters)

    store = SlowStore()
    settings = RuntimeSettings(**route.runtime_defaults(), metrics_port=0, idle_exit_seconds=1.5)
    async with Batcher(store.write, max_delay_seconds=0.01, max_bytes_waiting=2 * 1024 * 1024) as batcher:
        runtime = Runtime(
            Recorder(batcher, 100_000, route=route).service(), kafka=kafka, settings=settings, group_id=unique("rec")
        )
        task = asyncio.create_task(runtime.run())
        deadline = time.monotonic() + 60
        while runtime.in_flight < 64 and time.monotonic() < deadline:  # the first poll's records
            await asyncio.sleep(0.05)
        for _ in range(40):  # the store writes nothing for 2 s: what more does the runtime take meanwhile?
            seen.append(runtime.in_flight)
            await asyncio.sleep(0.05)
        gate.set()
        await asyncio.wait_for(task, 120)
    assert store.written == letters, "every record is written in the end"
    assert max(seen) <= 128, f"records held at once while the store wrote nothing: {max(seen)} of {letters}"


async def test_every_topic_the_recorder_reads_is_stored(kafka: KafkaSettings, database_url: str) -> None:
    prefix = unique("t") + "."
    route = RECORDER.renamed(lambda name: prefix + name)
    await create_topics(kafka, route.topics())
    for topic, value in story("c1") + story("c2"):
        await produce(kafka, prefix + topic, [(key_of(topic, value), value)])
    dlq = prefix + "postcall.extractor.dlq.v1"
    dead = {h.EXCEPTION_MESSAGE: "InvalidRecord: not valid JSON", h.ORIGINAL_TOPIC: CONVERSATION_ENDED}
    await produce(kafka, dlq, [("c3", b"{not json")], headers=dead)
    # the marker `postcall dlq replay` writes after a replay: the recorder audits it
    marker = cli_dlq.replay_marker(cli_dlq.DeadLetter(dlq, 0, 0, 0, b"c3", None, {}), "ops@box")
    await produce(kafka, dlq, [("c3", marker.value)], headers=marker.headers)
    retry = {h.ATTEMPTS: "1", h.RETRY_DUE_AT: str(time.time() + 60)}
    copy = {"action_id": "a", "conversation_id": "c1"}
    await produce(kafka, prefix + "postcall.dispatcher.retry-1.v1", [("c1", copy)], headers=retry)
    await produce(kafka, prefix + CONVERSATION_ENDED, [("bad", b'{"conversation_id": "bad"}')])
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as store:
        await run_recorder(kafka, store, route)
        assert await counts(store) == {
            "conversations": 2,
            "extractions": 2,
            "decisions": 2,
            "actions": 4,
            "attempts": 4,
            "dead_letters": 2,  # the extractor's, and the recorder's own of the record that did not fit
        }
        async with store.read() as conn:
            detail = await queries.get_conversation(conn, "c3")
            own = await queries.list_dead_letters(conn, queries.DeadLetterFilter(services=["recorder"]))
            audit = await tokens.list_audit(conn)
    assert detail is not None and detail.dead_letters[0].reason == "InvalidRecord: not valid JSON"
    assert [d.key for d in own.items] == ["bad"] and "schema violation" in own.items[0].reason
    assert [(a.actor, a.action, a.target["dead_letter"]) for a in audit.items] == [("ops@box", "replay", f"{dlq}:0:0")]
    (poison,) = await read_all(kafka, route.dead_letter_topic, expect=1)
    assert poison.key == "bad" and "schema violation" in poison.headers[h.EXCEPTION_MESSAGE]


async def test_an_upstream_that_produced_again_after_a_crash_is_recorded_once(
    kafka: KafkaSettings, database_url: str
) -> None:
    """The extractor and the router, dying after producing and before committing, produce the same
    extraction and trace again (same event id) at later offsets: stored twice, counted twice, before."""
    prefix = unique("t") + "."
    route = RECORDER.renamed(lambda name: prefix + name)
    await create_topics(kafka, route.topics())
    records = story("c1")
    again = [(topic, value) for topic, value in records if topic in (CONVERSATION_EXTRACTED, DECISIONS)]
    for topic, value in records + again:
        await produce(kafka, prefix + topic, [(key_of(topic, value), value)])
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as store:
        await run_recorder(kafka, store, route)
        found = await counts(store)
        async with store.read() as conn:
            detail = await queries.get_conversation(conn, "c1")
    assert (found["extractions"], found["decisions"]) == (1, 1)
    assert detail is not None and detail.summary is not None and detail.summary.usage.prompt_tokens == 120


async def test_a_replayed_recorder_dead_letter_reaches_the_recorder_alone(
    kafka: KafkaSettings, database_url: str
) -> None:
    """The store refused a conversation: the recorder dead-lettered it at once. `postcall dlq replay` sent it
    back to postcall.conversation-ended.v1, where the extractor read it again (the model asked again, a flow
    firing only now sending its actions). It now goes to the recorder's own replay topic: the store has the
    conversation, the letter is marked replayed and the replay audited from its marker, and the extractor's
    group has nothing new to read but the original."""
    await ensure_topics(kafka, registry(), replication=1)
    await skip_backlog(kafka.bootstrap_servers, ("recorder", "extractor"))  # other tests' records are not ours
    cid = unique("refused")
    await produce(kafka, CONVERSATION_ENDED, [(cid, ended(cid, at=datetime.now(UTC)))])
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as store:
        await run_recorder(kafka, store, RECORDER, refuse=cid, group=RECORDER.group_id)
        (letter,) = await cli_dlq.select(kafka, cli_dlq.Filters(("recorder",), key=cid))
        assert letter.headers[h.ORIGINAL_TOPIC] == CONVERSATION_ENDED
        assert await cli_dlq.replay(kafka, [letter], rate=0, progress=None, by="ops@box") == 1
        await run_recorder(kafka, store, RECORDER, group=RECORDER.group_id)
        async with store.read() as conn:
            detail = await queries.get_conversation(conn, cid)
            letters = await queries.list_dead_letters(
                conn, queries.DeadLetterFilter(["recorder"], key=cid, state="all")
            )
            audit = await tokens.list_audit(conn)
    assert detail is not None and detail.event is not None and detail.summary is not None, "the conversation is stored"
    assert [(d.reason, d.replayed_by) for d in letters.items] == [(letter.reason, "ops@box")]
    assert [(a.actor, a.target["dead_letter"]) for a in audit.items if a.action == "replay"] == [
        ("ops@box", letter.coordinates)
    ]
    partitions = len(await partitions_of(kafka, CONVERSATION_ENDED))
    unread = await committed(kafka, EXTRACTOR.group_id, CONVERSATION_ENDED, partitions)
    for_extractor = [
        r for r in await read_all(kafka, CONVERSATION_ENDED) if r.key == cid and r.offset >= (unread[r.partition] or 0)
    ]
    assert len(for_extractor) == 1, "the extractor's group reads the original only, not the replay"
    assert h.REPLAYED_FROM not in for_extractor[0].headers


def key_of(topic: str, value: Any) -> str:
    if topic == ACTION_RESULTS:
        return str(value.action_id)
    return str(value.conversation.conversation_id if hasattr(value, "conversation") else value.conversation_id)


def conversations(prefix: str, n: int, first: int = 0) -> list[tuple[str, Any]]:
    return [record for i in range(first, first + n) for record in story(f"{prefix}-{i:04d}")]


async def publish(kafka: KafkaSettings, records: Sequence[tuple[str, Any]]) -> None:
    by_topic: dict[str, list[tuple[str, Any]]] = {}
    for topic, value in records:
        by_topic.setdefault(topic, []).append((key_of(topic, value), value))
    for topic, batch in by_topic.items():
        await produce(kafka, topic, batch)


async def test_kill_9_and_restart_mid_stream_leaves_no_duplicate_and_no_gap(
    kafka: KafkaSettings, database_url: str, tmp_path: Any
) -> None:
    """The real `python -m services.recorder`, killed while it writes, then started again."""
    await ensure_topics(kafka, registry(), replication=1)
    env = {
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "POSTCALL_DATABASE__URL": database_url,
        "POSTCALL_RUNTIME__METRICS_PORT": "0",
        "POSTCALL_RUNTIME__COMMIT_INTERVAL_SECONDS": "0.5",
        # the killed process's place in the group is given up after 6 s (the broker's minimum), not 30
        "POSTCALL_RUNTIME__SESSION_TIMEOUT_MS": "6000",
        "POSTCALL_RUNTIME__HEARTBEAT_INTERVAL_MS": "1000",
    }
    # the group is the service's own (postcall-recorder): each run adds records of its own conversations
    prefix = unique("k")
    first, second = conversations(prefix, 800), conversations(prefix, 200, first=800)
    wanted = {f"{prefix}-{i:04d}" for i in range(1000)}
    await publish(kafka, first)
    recorder = start("services.recorder", env, work_dir=tmp_path)
    async with Store.open(DatabaseSettings(url=database_url)) as store:
        try:
            # a quarter of the first part's rows (800 x 7: conversation, extraction, decision, 2 actions, 2 attempts)
            await wait_for_rows(store, wanted, at_least=800 * 7 // 4, proc=recorder)
            recorder.kill9()  # mid-stream: some batches written, offsets not all committed
            done = await wait_for_conversations(store, wanted, at_least=0, proc=None, complete=True)
            assert done < 800, "every record of the first part was written before the kill: not mid-stream"
            await publish(kafka, second)
            recorder = start("services.recorder", env, work_dir=tmp_path)
            await wait_for_conversations(store, wanted, at_least=1000, proc=recorder, complete=True)
            recorder.term()  # leaves the group: the next run of this test does not wait out its session
        finally:
            recorder.stop()
        async with store.read() as conn:
            ours = {
                model.__tablename__: (
                    await conn.execute(
                        select(func.count()).select_from(model).where(model.conversation_id.in_(sorted(wanted)))
                    )
                ).scalar_one()
                for model in (Conversation, Extraction, Decision, Action, Attempt)
            }
    assert ours == {"conversations": 1000, "extractions": 1000, "decisions": 1000, "actions": 2000, "attempts": 2000}


async def wait_for_rows(store: Store, wanted: set[str], *, at_least: int, proc: Any, timeout: float = 180) -> None:
    """Until `at_least` rows of these conversations are written, in any table: the topics are read in no set
    order and a batch holds up to 1,000 records, so conversation rows alone may come only with the last ones."""
    deadline, ids = time.monotonic() + timeout, sorted(wanted)
    while True:
        async with store.read() as conn:
            found = 0
            for model in (Conversation, Extraction, Decision, Action, Attempt):
                query = select(func.count()).select_from(model).where(model.conversation_id.in_(ids))
                found += (await conn.execute(query)).scalar_one()
        if found >= at_least:
            return
        assert proc.alive(), proc.output()[-3000:]
        assert time.monotonic() < deadline, f"{found} rows after {timeout:.0f}s:\n{proc.output()[-3000:]}"
        await asyncio.sleep(0.05)


async def wait_for_conversations(
    store: Store, wanted: set[str], *, at_least: int, proc: Any, complete: bool = False, timeout: float = 180
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        async with store.read() as conn:
            c = Conversation.__table__.c
            query = select(func.count()).where(c.conversation_id.in_(sorted(wanted)))
            if complete:
                query = query.where(c.actions_delivered == 2, c.extraction_status == "ok", c.flows_fired == 1)
            found = (await conn.execute(query)).scalar_one()
        if found >= at_least:
            return int(found)
        assert proc is not None and proc.alive(), proc.output()[-3000:] if proc else "no process"
        assert time.monotonic() < deadline, f"{found} of {at_least} after {timeout:.0f}s:\n{proc.output()[-3000:]}"
        await asyncio.sleep(0.2)
