"""`postcall explain` on the real broker: reads the decision traces and the dispatcher's results."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
from typer.testing import CliRunner

from schemas import headers as h
from schemas.events import ActionCompleted
from schemas.topics import ACTION_RESULTS, DECISIONS, dead_letter_topic
from services.cli.explain import app
from services.common.settings import KafkaSettings
from services.router.catalog import CatalogHolder
from tests.integration.router.test_router_on_broker import CALLBACK, ROOT, extracted
from tests.support.kafka import create_topics, produce, unique


def test_explain_prints_every_flow_condition_and_action_outcome(kafka: KafkaSettings) -> None:
    conversation_id = unique("conv-explain")
    event = extracted("0005-callback-request.json", conversation_id, yes=(CALLBACK,))
    compiled = CatalogHolder(ROOT / "examples" / "agents", "(not available)").lookup("support-line", "3")
    assert compiled is not None
    trace, actions = compiled.route(event, datetime.now(UTC))
    email = next(a for a in actions if a.flow_id == "callback-requested")
    done = ActionCompleted(
        action_id=email.action_id,
        conversation_id=conversation_id,
        type="email",
        destination="support-email",
        outcome="delivered",
        attempts=1,
        latency_ms=12.0,
        completed_at=datetime.now(UTC),
    )

    async def publish() -> None:
        await create_topics(kafka, [DECISIONS, ACTION_RESULTS])
        await produce(kafka, DECISIONS, [(conversation_id, trace)])
        await produce(kafka, ACTION_RESULTS, [(email.action_id, done)])

    asyncio.run(publish())
    runner = CliRunner()
    result = runner.invoke(app, [conversation_id, "--bootstrap", kafka.bootstrap_servers], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"conversation {conversation_id} · agent support-line (version 3) · revision {compiled.revision}" in out
    for flow in ("crm-case-update", "callback-requested", "complaint", "escalation-to-ops", "unresolved-serious"):
        assert flow in out
    assert "end reason CUSTOMER_HANGUP is in ['CUSTOMER_HANGUP']" in out
    assert f"action {email.action_id}: delivered (1 attempt(s), 12 ms)" in out
    assert "pending (the dispatcher has not reported yet)" in out  # the task and the CRM webhook
    as_json = runner.invoke(app, [conversation_id, "--bootstrap", kafka.bootstrap_servers, "--json"])
    data = orjson.loads(as_json.stdout)
    assert [d["conversation_id"] for d in data["decisions"]] == [conversation_id]
    assert data["results"][email.action_id]["outcome"] == "delivered"


def test_explain_unknown_conversation_exits_1(kafka: KafkaSettings, tmp_path: Path) -> None:
    asyncio.run(create_topics(kafka, [DECISIONS, ACTION_RESULTS]))
    result = CliRunner().invoke(app, [unique("conv-nobody"), "--bootstrap", kafka.bootstrap_servers])
    assert result.exit_code == 1 and "no decision trace" in result.stdout


def test_explain_from_the_topics_names_the_dead_letter_that_stopped_a_call(kafka: KafkaSettings) -> None:
    """Without a query API, a call the extractor dead-lettered (an unknown agent) was only 'no decision trace
    on postcall.decisions.v1'; the extractor's dead-letter topic said why."""
    cid = unique("conv-unknown-agent")
    letter_headers = {h.DLQ_SERVICE: "extractor", h.EXCEPTION_MESSAGE: "UnknownAgent: no configuration for agent x"}

    async def publish() -> None:
        await create_topics(
            kafka, [DECISIONS, ACTION_RESULTS, dead_letter_topic("extractor"), dead_letter_topic("router")]
        )
        await produce(kafka, dead_letter_topic("extractor"), [(cid, {"conversation_id": cid})], headers=letter_headers)

    asyncio.run(publish())
    result = CliRunner().invoke(app, [cid, "--bootstrap", kafka.bootstrap_servers], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"no decision trace for {cid!r} on {DECISIONS}"
    assert re.fullmatch(
        r"dead-lettered by the extractor: UnknownAgent: no configuration for agent x "
        r"\(postcall\.extractor\.dlq\.v1:\d+:\d+\)",
        lines[1],
    ), lines
    assert lines[2] == f"fix the cause, then: postcall dlq replay --key {cid} --dry-run (and again without it)"
