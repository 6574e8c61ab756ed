"""`postcall explain` and `postcall reextract` through the query API (a real `python -m services.api`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from typer.testing import CliRunner

from schemas import headers as h
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, DECISIONS, Topic
from services.cli.main import app
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import free_port
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from tests.support.calls import T0, action_id, ended, result, rows_of, trace
from tests.support.kafka import read_all, unique


async def seed_retried_call(store: Store, cid: str) -> str:
    event = ended(cid)
    aid = action_id(cid, "crm-sync")
    rows = rows_of(
        [
            (CONVERSATION_ENDED, event),
            (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
            (ACTION_RESULTS, result(aid, cid, "failed", 1, status_code=503, error="HTTP 503: busy")),
            (ACTION_RESULTS, result(aid, cid, "delivered", 2, at=T0 + timedelta(minutes=1))),
        ]
    )
    due = str((T0 + timedelta(seconds=65)).timestamp())
    rows.extend(r.retry_scheduled({"action_id": aid, "conversation_id": cid}, {h.ATTEMPTS: "1", h.RETRY_DUE_AT: due}))
    await writer.write(store, rows)
    return aid


async def test_explain_answers_from_the_store_with_every_attempt(store: Store, api_process: str) -> None:
    cid = unique("conv")
    aid = await seed_retried_call(store, cid)
    done = CliRunner().invoke(app, ["explain", cid, "--api", api_process], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert f"action {aid}: delivered (HTTP 200, 2 attempt(s), 12 ms)" in done.stdout
    assert "attempt 1: failed HTTP 503 in 12 ms at 2026-03-10T09:00:04+00:00 — HTTP 503: busy; next retry at " \
        "2026-03-10T09:01:05+00:00" in done.stdout  # fmt: skip
    assert "attempt 2: delivered HTTP 200" in done.stdout
    as_json = CliRunner().invoke(app, ["explain", cid, "--json"], env={"POSTCALL_API_URL": api_process})
    assert '"source": "store"' in as_json.stdout
    missing = CliRunner().invoke(app, ["explain", "nobody", "--api", api_process])
    assert missing.exit_code == 1 and "no decision trace for 'nobody' in the store" in missing.stdout


def test_explain_falls_back_to_the_topics_when_the_api_does_not_answer(kafka: KafkaSettings) -> None:
    topics = [Topic(DECISIONS, "t", 3, 3_600_000), Topic(ACTION_RESULTS, "t", 3, 3_600_000)]
    asyncio.run(ensure_topics(kafka, topics, 1))
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = CliRunner().invoke(app, ["explain", "nobody", "--api", nowhere, "-b", kafka.bootstrap_servers])
    assert done.exit_code == 1
    assert f"the query API at {nowhere} does not answer (ConnectError); reading the topics instead" in done.stderr
    assert f"no decision trace for 'nobody' on {DECISIONS}" in done.stdout


async def test_reextract_takes_its_conversations_from_the_store(
    store: Store, api_process: str, kafka: KafkaSettings
) -> None:
    await ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "t", 3, 3_600_000)], 1)
    cid = unique("old")
    await seed_retried_call(store, cid)
    dry = CliRunner().invoke(app, ["reextract", "--ids", cid, "--dry-run", "--api", api_process])
    assert dry.exit_code == 0, dry.output
    assert cid in dry.stdout and "1 conversation(s) from the store would be republished" in dry.stdout
    done = CliRunner().invoke(app, ["reextract", "--ids", cid, "--api", api_process, "--rate", "50"])
    assert done.exit_code == 0, done.output
    assert "1 conversation(s) from the store chosen, 1 republished" in done.stdout
    copies = [x for x in await read_all(kafka, CONVERSATION_ENDED) if x.key == cid]
    assert [c.headers[h.REEXTRACT_OF] for c in copies] == [f"evt-{cid}"]
