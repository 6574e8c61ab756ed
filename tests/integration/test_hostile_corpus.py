"""The hostile-input corpus, published with kcat (a client we did not write) to the whole running system.

Each record lands where it should with a clear reason, and no service restarts. The stack runs with the
example agents plus a hostile one (a backtracking-prone `matches` on a caller's value, Slack text made
of caller values, webhooks to hostile receivers), and a claim check points at a server that trickles
its answer. Afterwards the operator commands read what landed: dead letters with markup and escape
sequences in their keys, a forged `x-replay-count`, an id that is rich markup.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from schemas import headers as h
from schemas.events import ActionCompleted, DecisionTrace
from schemas.routes import registry
from schemas.topics import ACTION_RESULTS, CE_TYPES, CONVERSATION_ENDED, DECISIONS, dead_letter_topic
from services.cli.plain import escape_controls
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import ROOT
from services.devkit.sink import DEMO_SECRETS, Reply, Sink
from services.devkit.stack import Stack, skip_backlog
from tests.hostile.corpus import (
    BASE,
    HOSTILE_AGENT,
    HOSTILE_DESTINATIONS,
    MARKUP_ID,
    MARKUP_KEY,
    SLACK_NOTE,
    Case,
    kcat_args,
    write_corpus,
)
from tests.support.kafka import Received, read_all

Outcomes = tuple[dict[str, list[Received]], dict[str, DecisionTrace], list[ActionCompleted]]


def kcat(kafka: KafkaSettings, args: list[bytes], stdin: bytes | None = None) -> None:
    ce = [f"{h.CE_TYPE}={CE_TYPES[CONVERSATION_ENDED]}", f"{h.CE_SPECVERSION}=1.0", f"{h.CE_SOURCE}=/hostile-corpus"]
    command = [b"kcat", b"-P", b"-b", kafka.bootstrap_servers.encode(), b"-t", CONVERSATION_ENDED.encode()]
    command += [a for header in ce for a in (b"-H", header.encode())]
    command += [b"-X", b"message.max.bytes=8388608", *args]
    subprocess.run(command, input=stdin, check=True, timeout=60)


def kcat_publish(kafka: KafkaSettings, corpus: Path, cases: list[Case]) -> None:
    kcat(kafka, [b"-K", b"\\t", b"-l", str(corpus).encode()])
    for case in (c for c in cases if not c.plain):
        args, line = kcat_args(case)
        kcat(kafka, args, line)


def postcall(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args, "-b", kafka.bootstrap_servers],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
        env={**os.environ, "COLUMNS": "400"},  # rows whole: the assertions read them
    )


def stack_config(tmp_path: Path) -> tuple[Path, Path]:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "examples" / "agents", agents)
    (agents / "hostile-line.yaml").write_text(HOSTILE_AGENT)
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text((ROOT / "examples/dispatcher/destinations.yaml").read_text() + HOSTILE_DESTINATIONS)
    return agents, destinations


def script_hostile_receivers(sink: Sink) -> str:
    sink.script("/hostile/retry-after", then=Reply(200, {"Retry-After": "²"}))  # crashed the parser after a 200
    sink.script("/hostile/flood", then=Reply(422, body=b"A" * 65536, endless=True))  # a body that never ends
    sink.script("/hostile/drip", then=Reply(200, trickle=0.2))  # every byte in time, the answer never
    transcript = orjson.dumps(BASE["messages"])
    sink.script("/transcripts/drip", then=Reply(200, body=transcript, trickle=0.5))
    return sink.url("/transcripts/drip")


async def test_hostile_records_land_where_they_should_and_no_service_restarts(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    await ensure_topics(kafka, registry(), replication=1)
    await skip_backlog(kafka.bootstrap_servers)  # other tests' records on the session broker are not ours
    agents, destinations = stack_config(tmp_path)
    async with Sink(DEMO_SECRETS, smtp_port=0, quiet=True) as sink:
        cases = write_corpus(tmp_path / "corpus.kcat", transcript_url=script_hostile_receivers(sink))
        env = {
            "SINK_PORT": str(sink.port),
            "SINK_SMTP_PORT": str(sink.smtp_port),
            # the services with retry tiers (the recorder has none: a store outage pauses it instead)
            **{
                f"{s}:POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[1, 1, 1]"
                for s in ("extractor", "router", "dispatcher")
            },
            "extractor:POSTCALL_TRANSCRIPT_ALLOW_PRIVATE": "true",
            "extractor:POSTCALL_TRANSCRIPT_TIMEOUT_SECONDS": "1",
        }
        stack = Stack(
            kafka.bootstrap_servers, tmp_path / "logs", config_dir=agents, destinations_file=destinations, extra_env=env
        ).start()
        try:
            await asyncio.to_thread(kcat_publish, kafka, tmp_path / "corpus.kcat", cases)
            dead, traces, results = await _wait_for_outcomes(kafka, cases, lambda: _copies_skipped(stack))
            await _wait_for_webhooks(sink, traces["hostile-inject"])
            received = list(sink.received)
            commands = await asyncio.to_thread(_operator_commands, kafka, dead["extractor"])
            assert not stack.dead(), f"a service exited: {[p.label for p in stack.dead()]}"
        finally:
            stack.stop()
        logs = "".join(p.log.read_text(errors="replace") for p in stack.processes)

    _check_dead_letters(cases, dead)
    assert traces["hostile-reason"].extraction_status == "ok"
    assert traces["hostile-big"].extraction_status == "ok"
    _check_injection(traces, received)
    # the same event twice: the extractor skips the copy (its metric counted it), each action runs once
    dup_ids = {a.action_id for f in traces["hostile-dup"].flows for a in f.actions}
    assert dup_ids and all(sink.counts[a] == 1 for a in dup_ids if a in sink.counts), "duplicate event delivered twice"
    outcomes = [r.outcome for r in results if r.action_id in dup_ids]
    assert "delivered" in outcomes and "skipped_duplicate" not in outcomes, outcomes
    for forged in ("hostile-forged", "hostile-header-bytes", MARKUP_ID):
        assert traces[forged].extraction_status == "ok", f"{forged}: forged or malformed headers broke it"
    _check_pattern_and_slack(traces, received)
    _check_hostile_receivers(traces, results, sink)
    _check_operator_commands(commands)
    assert "Traceback" not in logs, "a service logged a crash"


def _check_dead_letters(cases: list[Case], dead: dict[str, list[Received]]) -> None:
    for case in (c for c in cases if c.lands.startswith("dlq:")):
        letters = [d for d in dead[case.lands[4:]] if d.key == case.key]
        assert letters, f"{case.name}: not dead-lettered"
        assert case.reason.lower() in letters[0].headers[h.EXCEPTION_MESSAGE].lower(), case.name
        assert (letters[0].value or b"") == (case.value or b""), (
            f"{case.name}: dead letter must keep the original bytes"
        )
        attempts = int(letters[0].headers[h.ATTEMPTS])
        if case.attempts is None:
            assert attempts > 1, f"{case.name}: a slow dependency gets the retry tiers"
        else:
            assert attempts == case.attempts, f"{case.name}: bad input is dead-lettered at once"


def _check_injection(traces: dict[str, DecisionTrace], received: list[dict[str, object]]) -> None:
    inject_ids = {a.action_id for f in traces["hostile-inject"].flows for a in f.actions if a.type == "webhook"}
    inject = [r for r in received if r["webhook_id"] in inject_ids]
    assert inject, "the injection conversation's CRM update did not arrive"
    summary = str(inject[0]["body"]["summary"])  # type: ignore[index]
    # the transcript's text arrives as text: nothing evaluated, no variable inside it rendered
    assert "{{__import__('os').system('id')}}" in summary, summary
    assert "{{customer_email}}" in summary and "uid=" not in summary and "<class" not in summary, summary


def _check_pattern_and_slack(traces: dict[str, DecisionTrace], received: list[dict[str, object]]) -> None:
    def fired(cid: str) -> bool:
        return next(f for f in traces[cid].flows if f.flow_id == "refund-pattern").fired

    assert not fired("hostile-pattern") and fired("hostile-slack")  # (.|\s)*refund ran, on RE2, in no time
    [slack] = [r for r in received if r.get("path") == "/slack/ops" and "refund asked" in str(r["body"])]
    text = str(slack["body"]["text"])  # type: ignore[index]
    assert text.startswith("<!here> refund asked: "), text  # the author's own markup stays
    assert "<!channel>" not in text and "<https://evil.example|" not in text, text
    assert "&lt;!channel&gt;" in text and "&amp;" in text and SLACK_NOTE.split(" <")[0] in text


def _check_hostile_receivers(traces: dict[str, DecisionTrace], results: list[ActionCompleted], sink: Sink) -> None:
    planned = {a.action_id: a.destination for cid in ("hostile-pattern", "hostile-slack") for f in traces[cid].flows
               for a in f.actions}  # fmt: skip
    by_dest: dict[str, list[ActionCompleted]] = {}
    for r in results:
        if r.action_id in planned:
            by_dest.setdefault(str(planned[r.action_id]), []).append(r)
    retry_after = by_dest["hostile-retry-after"]
    assert {r.outcome for r in retry_after} == {"delivered"}, retry_after  # never re-sent
    assert all(sink.counts[r.action_id] == 1 for r in retry_after)
    flood = by_dest["hostile-flood"]
    assert {(r.outcome, r.status_code) for r in flood} == {("dead_lettered", 422)}, flood
    assert all(len(r.error or "") < 400 for r in flood)  # the start of the body, not the flood
    drip = [r for r in by_dest["hostile-drip"] if r.outcome == "dead_lettered"]
    assert len(drip) == 2 and all("no answer within 1s" in (r.error or "") and r.attempts > 1 for r in drip), drip


def _operator_commands(kafka: KafkaSettings, dead: list[Received]) -> dict[str, subprocess.CompletedProcess[str]]:
    [letter] = [d for d in dead if d.key == MARKUP_KEY]
    where = f"{dead_letter_topic('extractor')}:{letter.partition}:{letter.offset}"
    return {
        "dlq list": postcall(kafka, "dlq", "list", "--service", "extractor"),
        "dlq show": postcall(kafka, "dlq", "show", where),
        "dlq replay": postcall(kafka, "dlq", "replay", "--service", "extractor", "--key", MARKUP_KEY, "--rate", "0"),
        "explain": postcall(kafka, "explain", MARKUP_ID),
        "reextract": postcall(kafka, "reextract", "--ids", MARKUP_ID, "--dry-run"),
    }


def _check_operator_commands(commands: dict[str, subprocess.CompletedProcess[str]]) -> None:
    for name, done in commands.items():
        assert done.returncode == 0, f"postcall {name} failed: {done.stdout[-500:]} {done.stderr[-1500:]}"
        assert "\x1b" not in done.stdout and "\u202e" not in done.stdout, f"postcall {name} let an escape through"
    assert escape_controls(MARKUP_KEY) in commands["dlq list"].stdout
    assert "x-replay-count: abc" in commands["dlq show"].stdout
    assert "replayed 1 dead letter(s)" in commands["dlq replay"].stdout  # the forged count did not break it
    assert "conv-[/bold]\\x1b[2J" in commands["explain"].stdout
    assert "conv-[/bold]\\x1b[2J" in commands["reextract"].stdout


async def _wait_for_webhooks(sink: Sink, trace: DecisionTrace) -> None:
    wanted = {a.action_id for f in trace.flows for a in f.actions if a.type == "webhook"}
    deadline = time.monotonic() + 30
    while not wanted <= set(sink.counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


def _copies_skipped(stack: Stack) -> float:
    """postcall_extractor_duplicates_skipped_total, read from the extractor process's metrics endpoint."""
    [extractor] = [p for p in stack.processes if p.name == "extractor"]
    try:
        text = httpx.get(f"http://127.0.0.1:{extractor.metrics_port}/metrics", timeout=5).text
    except httpx.TransportError:
        return 0.0
    found = [line for line in text.splitlines() if line.startswith("postcall_extractor_duplicates_skipped_total ")]
    return float(found[0].split()[-1]) if found else 0.0


async def _wait_for_outcomes(kafka: KafkaSettings, cases: list[Case], copies_skipped: Callable[[], float]) -> Outcomes:
    """Until every case has landed, the duplicate event's copy was skipped, and every action of the
    hostile agent has its final outcome."""
    want_dlq = {c.key for c in cases if c.lands.startswith("dlq:")}
    want_traces = {c.key for c in cases if c.lands == "processed"}
    deadline = time.monotonic() + 180
    while True:
        dead = {s: await read_all(kafka, dead_letter_topic(s)) for s in ("extractor", "router", "dispatcher")}
        traces = {
            t.conversation_id: t
            for t in (DecisionTrace.model_validate_json(r.value) for r in await read_all(kafka, DECISIONS))
        }
        results = [ActionCompleted.model_validate_json(r.value) for r in await read_all(kafka, ACTION_RESULTS)]
        hostile = {a.action_id for cid in ("hostile-pattern", "hostile-slack") if cid in traces
                   for f in traces[cid].flows for a in f.actions}  # fmt: skip
        final = {r.action_id for r in results if r.outcome != "failed"}
        have_dlq = {d.key for d in dead["extractor"]}
        dup_done = await asyncio.to_thread(copies_skipped) >= 1
        landed = want_dlq <= have_dlq and want_traces <= set(traces) and dup_done
        if (landed and hostile and hostile <= final) or time.monotonic() > deadline:
            return dead, traces, results
        await asyncio.sleep(1)
