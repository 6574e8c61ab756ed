"""Operator actions through the API on the real broker: replay from the store, re-extract from the store."""

from __future__ import annotations

import asyncio
import signal
import time
import tracemalloc
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from schemas import headers as h
from schemas.events import ConversationEnded
from schemas.topics import CONVERSATION_ENDED, DECISIONS, Topic, dead_letter_topic
from services.api import operations
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.store import queries, tokens, writer
from services.store import rows as r
from services.store.db import Store
from services.store.models import DeadLetter, table
from services.store.tokens import Principal
from tests.integration.api.conftest import client_for, serving_api
from tests.support.calls import T0, ended, rows_of, story
from tests.support.kafka import create_topics, read_all, unique


def kafka_settings(kafka: KafkaSettings) -> dict[str, Any]:
    return {"kafka": {"bootstrap_servers": kafka.bootstrap_servers}}


async def test_replay_from_the_store_republishes_marks_and_audits(store: Store, kafka: KafkaSettings) -> None:
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: bug", h.CE_ID: "e-1"}
    for offset, key in enumerate(("k-1", "k-2")):
        source = r.Source(dlq, 0, offset, int(T0.timestamp() * 1000))
        await writer.write(store, r.dead_letter(source, "router", key.encode(), b'{"id": 1}', headers))
    async with client_for(store, **kafka_settings(kafka)) as api:
        done = await api.post("/api/v1/dead-letters/replay", json={"filter": {"key": "k-1"}, "rate": 100})
        pending = (await api.get("/api/v1/dead-letters")).json()["items"]
        audit = (await api.get("/api/v1/audit")).json()["items"]
    assert done.status_code == 200 and done.json()["sent"] == 1
    assert done.json()["items"] == [f"{dlq}:0:0"]
    (replayed,) = await read_all(kafka, main, expect=1)
    assert (replayed.key, replayed.value) == ("k-1", b'{"id": 1}')
    assert replayed.headers[h.REPLAYED_FROM] == f"{dlq}:0:0" and replayed.headers[h.REPLAYED_BY] == "local"
    assert h.EXCEPTION_MESSAGE not in replayed.headers and replayed.headers[h.CE_ID] == "e-1"
    (marker,) = await read_all(kafka, dlq, expect=1)
    assert marker.headers[h.DLQ_REPLAYED] == f"{dlq}:0:0" and marker.partition == 0
    assert [p["key"] for p in pending] == ["k-2"]
    assert audit[0]["action"] == "replay" and audit[0]["outcome"]["sent"] == 1
    # the recorder reading the API's marker adds no second audit row for the same replay
    await writer.write(store, r.replay_marker(marker.headers, r.Source(dlq, 0, marker.offset, 0)))
    async with client_for(store, **kafka_settings(kafka)) as api:
        assert len((await api.get("/api/v1/audit")).json()["items"]) == len(audit) == 1


async def test_reextract_from_the_store_reaches_past_the_topics_retention(store: Store, kafka: KafkaSettings) -> None:
    await ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1)
    cid = unique("old-call")
    await writer.write(store, rows_of(story(cid)))
    async with client_for(store, **kafka_settings(kafka)) as api:
        dry = await api.post("/api/v1/conversations/reextract", json={"filter": {"ids": [cid]}, "dry_run": True})
        done = await api.post("/api/v1/conversations/reextract", json={"filter": {"ids": [cid]}})
        audit = (await api.get("/api/v1/audit")).json()["items"]
        shown = (await api.get(f"/api/v1/conversations/{cid}")).json()
    assert dry.json() == {"matched": 1, "sent": 0, "dry_run": True, "items": [cid], "skipped": 0, "error": None}
    assert done.json()["sent"] == 1
    assert shown["reextracted_by"] == "local" and shown["reextracted_at"] is not None
    (copy,) = [x for x in await read_all(kafka, CONVERSATION_ENDED) if x.key == cid]
    assert copy.headers[h.REEXTRACT_OF] == f"evt-{cid}"
    assert ConversationEnded.model_validate_json(copy.value).event_id == f"evt-{cid}"
    assert [(a["action"], a["dry_run"]) for a in audit] == [("reextract", False), ("reextract", True)]


async def test_kafka_unavailable_is_a_503_that_says_so_and_is_audited(store: Store) -> None:
    await writer.write(store, rows_of(story("c1")))
    async with client_for(store, kafka={"bootstrap_servers": "127.0.0.1:1"}) as api:
        failed = await api.post("/api/v1/conversations/reextract", json={"filter": {"ids": ["c1"]}})
        audit = (await api.get("/api/v1/audit")).json()["items"]
    assert failed.status_code == 503
    assert failed.json()["sent"] == 0 and "Kafka at 127.0.0.1:1" in failed.json()["error"]
    assert audit[0]["outcome"]["error"] == failed.json()["error"]
    async with store.read() as conn:
        shown = await queries.get_conversation(conn, "c1")
    assert shown is not None and (shown.reextracted_at, shown.reextracted_by) == (None, None)  # not sent


async def test_a_letter_replay_refuses_is_neither_sent_nor_marked_and_the_one_sent_is(
    store: Store, kafka: KafkaSettings
) -> None:
    """A dead letter whose original topic is not an input of the service that dead-lettered it (a forged
    retry copy's x-original-topic) is not replayed (replay_records leaves it out). The API used to mark
    `letters[:sent]` replayed: that skipped letter, never sent, was hidden as replayed and the one really
    sent stayed pending, to be replayed a second time."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    forged = {h.ORIGINAL_TOPIC: DECISIONS, h.EXCEPTION_MESSAGE: "InvalidRecord: bug", h.CE_ID: "e-0"}
    source = r.Source(dead_letter_topic("extractor"), 0, 0, int(T0.timestamp() * 1000))
    await writer.write(store, r.dead_letter(source, "extractor", b"k-forged", b'{"id": 0}', forged))
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: bug", h.CE_ID: "e-1"}
    source = r.Source(dlq, 0, 0, int(T0.timestamp() * 1000))
    await writer.write(store, r.dead_letter(source, "router", b"k-1", b"{}", headers))
    async with client_for(store, **kafka_settings(kafka)) as api:
        done = await api.post("/api/v1/dead-letters/replay", json={"filter": {"reason": "bug"}, "rate": 100})
        pending = (await api.get("/api/v1/dead-letters")).json()["items"]
    assert done.status_code == 200 and done.json()["sent"] == 1
    assert done.json()["items"] == [f"{dlq}:0:0"]
    (replayed,) = await read_all(kafka, main, expect=1)
    assert replayed.key == "k-1"
    assert [p["key"] for p in pending] == ["k-forged"]


async def test_a_dead_letters_credential_headers_are_hidden_when_shown_and_replayed_as_they_were(
    store: Store, kafka: KafkaSettings
) -> None:
    """A record an outside producer copied its HTTP request's headers onto, dead-lettered: the API shows
    the header names, not the credentials; a replay sends the record with its headers as they were."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    secrets = {
        "Authorization": "Bearer eyJhbGciOi.tok-en.sig",
        "cookie": "session=0f3c9a77",
        "x-api-key": "ak_live_51Hc9",
        "x-forwarded-creds": "Basic dXNlcjpwdzEyMw==",
    }
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: bug", h.CE_ID: "e-1", **secrets}
    await writer.write(store, r.dead_letter(r.Source(dlq, 0, 0, 0), "router", b"k-1", b"{}", headers))
    async with client_for(store, **kafka_settings(kafka)) as api:
        (letter,) = (await api.get("/api/v1/dead-letters")).json()["items"]
        shown = (await api.get(f"/api/v1/dead-letters/{letter['id']}")).text
        done = await api.post("/api/v1/dead-letters/replay", json={"filter": {"key": "k-1"}, "rate": 100})
    assert all(value not in shown for value in secrets.values()), shown
    detail = orjson.loads(shown)["headers"]
    assert {name: detail[name] for name in secrets} == dict.fromkeys(secrets, "[redacted]")
    assert detail[h.CE_ID] == "e-1" and detail[h.EXCEPTION_MESSAGE] == "PermanentError: bug"
    assert done.status_code == 200 and done.json()["sent"] == 1
    (replayed,) = await read_all(kafka, main, expect=1)
    assert {name: replayed.headers[name] for name in secrets} == secrets


async def test_an_operation_interrupted_while_sending_is_audited_already(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit row was written after the whole send (10,000 records at 50/s: 200 s): a pod stopped
    past its grace period, or any failure mid-send, left records sent with no row saying who sent them.
    The row is written before the first record goes out, and completed with the outcome after."""
    cid = unique("call")
    await writer.write(store, rows_of(story(cid)))
    dlq = unique("dlq")
    source = r.Source(dlq, 0, 0, int(T0.timestamp() * 1000))
    await writer.write(store, r.dead_letter(source, "router", b"k", b"{}", {h.ORIGINAL_TOPIC: unique("main")}))

    async def interrupted(*_: Any) -> Any:
        raise asyncio.CancelledError()  # the pod stopped mid-send

    monkeypatch.setattr(operations, "_send", interrupted)
    who = Principal("alice", "operator")
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(asyncio.CancelledError):
        await operations.reextract_conversations(
            store, settings, who, queries.ConversationFilter(ids=[cid]), limit=10, rate=50, dry_run=False
        )
    with pytest.raises(asyncio.CancelledError):
        await operations.replay_dead_letters(
            store, settings, who, queries.DeadLetterFilter(key="k"), limit=10, rate=50, dry_run=False
        )
    async with store.read() as conn:
        audit = (await tokens.list_audit(conn)).items
    assert [(a.action, a.actor, a.outcome["sent"]) for a in audit] == [
        ("replay", "alice", None),
        ("reextract", "alice", None),
    ]
    assert all(a.outcome["matched"] == 1 and a.outcome["status"] == "sending" for a in audit)


async def _letters(store: Store, dlq: str, main: str, keys: Sequence[str]) -> None:
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: bug", h.CE_ID: "e-1"}
    for offset, key in enumerate(keys):
        source = r.Source(dlq, 0, offset, int(T0.timestamp() * 1000))
        await writer.write(store, r.dead_letter(source, "router", key.encode(), b'{"id": 1}', headers))


async def test_two_replays_at_once_of_the_same_letters_send_each_once(
    store: Store, kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double click, two operators, two API replicas: both replays chose the same pending letters (it
    read them, sent them, then marked them), and each letter reached its topic twice. A replay claims
    its letters before sending them; the second finds them claimed and says so in `skipped`."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    await _letters(store, dlq, main, ["k-1", "k-2"])
    arrived, send = [0], operations._send

    async def together(*args: Any) -> Any:
        """Both replays chose their letters before either sends (the race, made certain): each waits,
        up to a second, for the other to reach its send too."""
        arrived[0] += 1
        for _ in range(50):
            if arrived[0] == 2:
                break
            await asyncio.sleep(0.02)
        return await send(*args)

    monkeypatch.setattr(operations, "_send", together)
    body = {"filter": {"reason": "bug"}, "rate": 100}
    async with client_for(store, **kafka_settings(kafka)) as a, client_for(store, **kafka_settings(kafka)) as b:
        answers = await asyncio.gather(*(c.post("/api/v1/dead-letters/replay", json=body) for c in (a, b)))
        pending = (await a.get("/api/v1/dead-letters")).json()["items"]
    assert [x.status_code for x in answers] == [200, 200]
    outcomes = sorted((x.json()["sent"], x.json()["skipped"], len(x.json()["items"])) for x in answers)
    assert outcomes == [(0, 2, 0), (2, 0, 2)], [x.json() for x in answers]
    copies = await read_all(kafka, main, timeout=10)
    assert sorted(c.key for c in copies) == ["k-1", "k-2"]
    assert len(await read_all(kafka, dlq, timeout=10)) == 2  # one replay marker each
    assert pending == []


async def test_a_replay_that_died_mid_send_holds_its_letters_until_its_lease_ends(
    store: Store, kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay killed mid-send (a pod stopped past its grace period) never marks what it claimed: its
    letters are neither replayed by another meanwhile nor hidden as replayed; after the lease they are
    pending again, and a replay sends them once."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    await _letters(store, dlq, main, ["k-1"])
    send = operations._send

    async def killed(*_: Any) -> Any:
        raise asyncio.CancelledError()

    monkeypatch.setattr(operations, "_send", killed)
    who, chosen = Principal("alice", "operator"), queries.DeadLetterFilter(key="k-1")
    with pytest.raises(asyncio.CancelledError):
        await operations.replay_dead_letters(
            store, kafka, who, chosen, limit=10, rate=50, dry_run=False, lease=timedelta(seconds=1)
        )
    monkeypatch.setattr(operations, "_send", send)
    body = {"filter": {"key": "k-1"}, "rate": 100}
    async with client_for(store, **kafka_settings(kafka)) as api:
        dry = (await api.post("/api/v1/dead-letters/replay", json=body | {"dry_run": True})).json()
        held = (await api.post("/api/v1/dead-letters/replay", json=body)).json()
        still_pending = (await api.get("/api/v1/dead-letters")).json()["items"]
        await asyncio.sleep(1.1)
        later = (await api.post("/api/v1/dead-letters/replay", json=body)).json()
        pending = (await api.get("/api/v1/dead-letters")).json()["items"]
    assert (dry["matched"], dry["skipped"], dry["items"]) == (1, 1, [])
    assert (held["matched"], held["sent"], held["skipped"]) == (1, 0, 1)
    assert [p["key"] for p in still_pending] == ["k-1"]
    assert (later["sent"], later["skipped"], later["items"]) == (1, 0, [f"{dlq}:0:0"])
    (copy,) = await read_all(kafka, main, timeout=10)
    assert copy.key == "k-1" and pending == []


async def test_a_replay_kafka_refused_leaves_its_letters_pending_for_the_next_at_once(
    store: Store, kafka: KafkaSettings
) -> None:
    """The claim is released when the send fails: the operator retries when Kafka is back, without
    waiting for the lease to end."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    await _letters(store, dlq, main, ["k-1"])
    body = {"filter": {"key": "k-1"}, "rate": 100}
    async with client_for(store, kafka={"bootstrap_servers": "127.0.0.1:1"}) as down:
        failed = await down.post("/api/v1/dead-letters/replay", json=body)
    async with client_for(store, **kafka_settings(kafka)) as api:
        done = (await api.post("/api/v1/dead-letters/replay", json=body)).json()
    assert failed.status_code == 503 and failed.json()["sent"] == 0
    assert (done["sent"], done["skipped"]) == (1, 0)
    (copy,) = await read_all(kafka, main, timeout=10)
    assert copy.key == "k-1"


async def test_a_replay_longer_than_its_lease_keeps_its_letters_while_it_sends(
    store: Store, kafka: KafkaSettings
) -> None:
    """The claim is renewed while the replay sends (10,000 letters at 1/s outlast any lease): a second
    replay after the lease's first length still finds them held. The second starts 1.5 leases after the
    first claimed them, while the first still sends (6 letters at 2/s: 2.5 s at least); a renewal would
    have to come 0.8 s late for the claim to lapse (it came 0.4 s late with a 0.6 s lease before, which
    a loaded machine met: the suite failed it once)."""
    main, dlq = unique("main"), unique("dlq")
    keys = [f"k-{i}" for i in range(1, 7)]
    await create_topics(kafka, [main, dlq])
    await _letters(store, dlq, main, keys)
    who, chosen = Principal("alice", "operator"), queries.DeadLetterFilter(reason="bug")
    lease = timedelta(seconds=1.2)
    slow = asyncio.create_task(
        operations.replay_dead_letters(store, kafka, who, chosen, limit=10, rate=2, dry_run=False, lease=lease)
    )
    claimed = table(DeadLetter).c.replay_claim.is_not(None)
    while not slow.done():
        async with store.read() as conn:
            if await conn.scalar(select(func.count()).select_from(table(DeadLetter)).where(claimed)) == len(keys):
                break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.5 * lease.total_seconds())
    assert not slow.done()
    async with client_for(store, **kafka_settings(kafka)) as api:
        second = (await api.post("/api/v1/dead-letters/replay", json={"filter": {"reason": "bug"}})).json()
    first = await slow
    assert (first.sent, first.skipped) == (6, 0)
    assert (second["sent"], second["skipped"]) == (0, 6)
    assert sorted(c.key for c in await read_all(kafka, main, timeout=10)) == keys


async def test_an_operation_holds_one_batch_of_values_at_a_time_not_every_one_it_chose(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay read the value of every letter it chose at once (a dry run too, only to count them), and a
    re-extraction every chosen call's whole event: 2,000 letters of 100 KB were 195 MiB in the API's memory
    (tracemalloc's peak, a dry run), and the operation limit is 10,000. The values are read a batch at a
    time while they are sent; what is sent is the same."""
    monkeypatch.setattr(operations, "SEND_BATCH", 10)
    n, size = 100, 100_000  # 10 MB of values; a batch is 1 MB
    dlq, main = unique("dlq"), unique("main")
    letters, calls = r.Rows(), []
    for i in range(n):
        headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: big"}
        letters.extend(
            r.dead_letter(r.Source(dlq, 0, i, 0), "router", f"k{i}".encode(), bytes([65 + i % 26]) * size, headers)
        )
        calls.append((CONVERSATION_ENDED, ended(f"big-{i}", messages=[{"role": "customer", "text": "y" * size}])))
    await writer.write(store, letters)
    await writer.write(store, rows_of(calls))
    sent: list[tuple[str, str, int]] = []  # topic, key, length: not the values, which this test would then hold

    async def kafka_takes_all(_kafka: Any, records: list[Any], _rate: float, result: Any, *_: Any) -> Any:
        sent.extend((x.topic, x.key.decode(), len(x.value)) for x in records)
        return result.model_copy(update={"sent": result.sent + len(records)})

    monkeypatch.setattr(operations, "_send", kafka_takes_all)
    who, kafka = Principal("alice", "operator"), KafkaSettings(bootstrap_servers="127.0.0.1:1")
    letters_chosen, calls_chosen = (
        queries.DeadLetterFilter(reason="big"),
        queries.ConversationFilter(agent="support-line"),
    )
    peaks = {}
    for name, operation in [
        (
            "dry replay",
            lambda: operations.replay_dead_letters(store, kafka, who, letters_chosen, limit=n, rate=1, dry_run=True),
        ),
        (
            "replay",
            lambda: operations.replay_dead_letters(store, kafka, who, letters_chosen, limit=n, rate=1, dry_run=False),
        ),
        (
            "dry reextract",
            lambda: operations.reextract_conversations(store, kafka, who, calls_chosen, limit=n, rate=1, dry_run=True),
        ),
        (
            "reextract",
            lambda: operations.reextract_conversations(store, kafka, who, calls_chosen, limit=n, rate=1, dry_run=False),
        ),
    ]:
        tracemalloc.start()
        try:
            result = await operation()
            peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
        assert result.matched == n and result.error is None, (name, result)
    assert all(peak < 4 for peak in peaks.values()), peaks  # MiB; before: 10 to 20 each
    assert [(key, length) for topic, key, length in sent if topic == main] == [(f"k{i}", size) for i in range(n)]
    events = sorted(key for topic, key, length in sent if topic == CONVERSATION_ENDED and length > size)
    assert events == sorted(f"big-{i}" for i in range(n))


async def test_an_api_asked_to_exit_mid_replay_stops_between_two_letters_and_says_how_far_it_got(
    store: Store, database_url: str, kafka: KafkaSettings
) -> None:
    """A replay sends at its rate for minutes (10,000 letters at 50/s), and uvicorn, on SIGTERM, waited for
    it: Kubernetes killed the pod 30 s later wherever it was, with a letter perhaps sent without its marker
    (replayed again later), its letters claimed for the lease and its audit row saying "sending". Now it
    stops between two letters: the answer says how many it sent, each is on the topic with its marker and
    marked replayed, the others are pending again at once, and the audit row says the same."""
    n = 200  # at 20/s: 10 s, stopped about 1 s in
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    await _letters(store, dlq, main, [f"k-{i}" for i in range(n)])
    with serving_api(database_url, kafka) as (server, base):
        async with httpx.AsyncClient(base_url=base, timeout=60) as api:
            body = {"filter": {"reason": "bug"}, "limit": n, "rate": 20}
            replay = asyncio.create_task(api.post("/api/v1/dead-letters/replay", json=body))
            while not (await api.get("/api/v1/audit")).json()["items"]:  # written before the first letter
                assert not replay.done(), replay.result().text
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)
            server.popen.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            answer = await replay
            exit_code = await asyncio.to_thread(server.popen.wait, 30)
            took = time.monotonic() - asked
    sent = answer.json()["sent"]
    assert answer.status_code == 503 and 0 < sent < n, (answer.status_code, answer.json(), server.output())
    assert answer.json()["error"] == (
        f"the API is shutting down: {sent} of {n} sent before it stopped; the others were not sent"
    )
    assert exit_code == 0 and took < 5, (exit_code, took, server.output())
    copies = await read_all(kafka, main, timeout=10)
    markers = await read_all(kafka, dlq, timeout=10)
    t = table(DeadLetter).c
    async with store.read() as conn:
        replayed = (await conn.execute(select(t.key).where(t.replayed_at.is_not(None)))).scalars().all()
        claimed = await conn.scalar(select(func.count()).where(t.replay_claim.is_not(None)))
        (audit,) = (await tokens.list_audit(conn)).items
    assert len(copies) == len(markers) == sent and claimed == 0
    assert sorted(c.key for c in copies) == sorted(replayed)
    assert sorted(m.headers[h.DLQ_REPLAYED] for m in markers) == sorted(c.headers[h.REPLAYED_FROM] for c in copies)
    assert audit.outcome["sent"] == sent and audit.outcome["error"] == answer.json()["error"]
    assert "status" not in audit.outcome  # no longer "sending"


async def test_a_reextraction_asked_to_stop_sends_nothing_more_and_completes_its_audit(
    store: Store, kafka: KafkaSettings
) -> None:
    """The stop is checked before each record, the first included: a re-extraction that reaches its send
    after the server was asked to exit sends nothing, says so and completes its audit row."""
    await ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1)
    cid = unique("call")
    await writer.write(store, rows_of(story(cid)))
    stop = asyncio.Event()
    stop.set()
    who = Principal("alice", "operator")
    result = await operations.reextract_conversations(
        store, kafka, who, queries.ConversationFilter(ids=[cid]), limit=10, rate=50, dry_run=False, stop=stop
    )
    assert (result.sent, result.error) == (
        0,
        "the API is shutting down: 0 of 1 sent before it stopped; the others were not sent",
    )
    assert [x for x in await read_all(kafka, CONVERSATION_ENDED) if x.key == cid] == []
    async with store.read() as conn:
        (audit,) = (await tokens.list_audit(conn)).items
    assert audit.outcome["sent"] == 0 and audit.outcome["error"] == result.error and "status" not in audit.outcome
