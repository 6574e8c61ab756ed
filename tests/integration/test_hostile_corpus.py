"""The hostile-input corpus, published with kcat (a client we did not write) to the whole running system.

Each record lands where it should with a clear reason, and no service restarts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from schemas import headers as h
from schemas.events import ActionCompleted, DecisionTrace
from schemas.routes import registry
from schemas.topics import ACTION_RESULTS, CE_TYPES, CONVERSATION_ENDED, DECISIONS, dead_letter_topic
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.sink import DEMO_SECRETS, Sink
from services.devkit.stack import Stack
from tests.hostile.corpus import write_corpus
from tests.support.kafka import Received, read_all


def kcat_publish(kafka: KafkaSettings, corpus: Path) -> None:
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            kafka.bootstrap_servers,
            "-t",
            CONVERSATION_ENDED,
            "-K",
            "\\t",
            "-l",
            "-H",
            f"{h.CE_TYPE}={CE_TYPES[CONVERSATION_ENDED]}",
            "-H",
            f"{h.CE_SPECVERSION}=1.0",
            "-H",
            f"{h.CE_SOURCE}=/hostile-corpus",
            "-X",
            "message.max.bytes=8388608",
            str(corpus),
        ],
        check=True,
        timeout=60,
    )


async def test_hostile_records_land_where_they_should_and_no_service_restarts(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    await ensure_topics(kafka, registry(), replication=1)
    cases = write_corpus(tmp_path / "corpus.kcat")
    async with Sink(DEMO_SECRETS, smtp_port=0, quiet=True) as sink:
        env = {
            "SINK_PORT": str(sink.port),
            "SINK_SMTP_PORT": str(sink.smtp_port),
            "POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[1, 1, 1]",
        }
        stack = Stack(kafka.bootstrap_servers, tmp_path / "logs", extra_env=env).start()
        try:
            await asyncio.to_thread(kcat_publish, kafka, tmp_path / "corpus.kcat")
            dead, traces, results = await _wait_for_outcomes(kafka, cases)
            await _wait_for_webhooks(sink, traces["hostile-inject"])
            received = list(sink.received)
            assert not stack.dead(), f"a service exited: {[p.label for p in stack.dead()]}"
        finally:
            stack.stop()
        logs = "".join(p.log.read_text(errors="replace") for p in stack.processes)

    for case in (c for c in cases if c.lands.startswith("dlq:")):
        letters = [d for d in dead[case.lands[4:]] if d.key == case.key]
        assert letters, f"{case.name}: not dead-lettered"
        assert case.reason.lower() in letters[0].headers[h.DLQ_EXCEPTION_MESSAGE].lower(), case.name
        assert letters[0].value == case.value, f"{case.name}: dead letter must keep the original bytes"
        assert letters[0].headers[h.DLQ_ATTEMPTS] == "1", f"{case.name}: bad input is dead-lettered at once"
    assert traces["hostile-reason"].extraction_status == "ok"
    assert traces["hostile-big"].extraction_status == "ok"
    inject_ids = {a.action_id for f in traces["hostile-inject"].flows for a in f.actions if a.type == "webhook"}
    inject = [r for r in received if r["webhook_id"] in inject_ids]
    assert inject, "the injection conversation's CRM update did not arrive"
    summary = str(inject[0]["body"]["summary"])
    # the transcript's text arrives as text: nothing evaluated, no variable inside it rendered
    assert "{{__import__('os').system('id')}}" in summary, summary
    assert "{{customer_email}}" in summary and "uid=" not in summary and "<class" not in summary, summary
    dup_ids = {a.action_id for f in traces["hostile-dup"].flows for a in f.actions}
    assert dup_ids and all(sink.counts[a] == 1 for a in dup_ids if a in sink.counts), "duplicate event delivered twice"
    outcomes = [r.outcome for r in results if r.action_id in dup_ids]
    assert "skipped_duplicate" in outcomes, outcomes
    assert "Traceback" not in logs, "a service logged a crash"


async def _wait_for_webhooks(sink: Sink, trace: DecisionTrace) -> None:
    wanted = {a.action_id for f in trace.flows for a in f.actions if a.type == "webhook"}
    deadline = time.monotonic() + 30
    while not wanted <= set(sink.counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


async def _wait_for_outcomes(
    kafka: KafkaSettings, cases: list
) -> tuple[dict[str, list[Received]], dict[str, DecisionTrace], list[ActionCompleted]]:
    want_dlq = {c.key for c in cases if c.lands.startswith("dlq:")}
    want_traces = {c.key for c in cases if c.lands == "processed"}
    deadline = time.monotonic() + 120
    while True:
        dead = {s: await read_all(kafka, dead_letter_topic(s)) for s in ("extractor", "router", "dispatcher")}
        traces = {
            t.conversation_id: t
            for t in (DecisionTrace.model_validate_json(r.value) for r in await read_all(kafka, DECISIONS))
        }
        results = [ActionCompleted.model_validate_json(r.value) for r in await read_all(kafka, ACTION_RESULTS)]
        have_dlq = {d.key for d in dead["extractor"]}
        dup_done = any(r.outcome == "skipped_duplicate" and r.conversation_id == "hostile-dup" for r in results)
        if (want_dlq <= have_dlq and want_traces <= set(traces) and dup_done) or time.monotonic() > deadline:
            return dead, traces, results
        await asyncio.sleep(1)
