"""The router against a pass-through service on the same runtime: ~5 KB ConversationExtracted records,
an agent with five flows (end-reason, ai, all/not, field and any conditions; webhook, email with fixed
and dynamic recipients, task, schedule_call with business hours, slack).

Both consume the same pre-produced records with the same runtime settings (the router's defaults):

* pass-through: validates each record as ConversationExtracted and produces it unchanged (one output);
* router: the real RouterHandler (configuration compiled at load time): one DecisionTrace per record
  plus every fired action, in two mixes: "typical" (about one action per conversation, mostly the CRM
  update on hang-ups) and "busy" (about 2.4: every flow fires often).

Throughput = records / (time every output is in its topics - time the first record was read). The clock
stops when the output topics hold as many records as the inputs make (counted in-process beforehand), so
a record processed twice would stop it early: once the runtime has stopped, its group must have committed
every input and the topics must hold exactly that many outputs, or the run is an error, not a number. The two
are interleaved `ctx.repeats` times and the best of each is quoted. Goal: router >= 0.7 x pass-through.
The CPU time per record is reported beside it: the router's own work (routing ~80 us per record here)
is small next to producing 2-3.4 records per input instead of one.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.context import BenchContext
from bench.measure import best_of, info_line, ratio_line
from schemas.agents import trigger_id
from schemas.events import ConversationExtracted
from schemas.routes import ROUTER, Output, Route
from schemas.topics import ACTION_TYPES, CONVERSATION_EXTRACTED, DECISIONS, Stream, action_topic
from services.common.api import Context, Event, Handler, Service
from services.common.runtime import GC_THRESHOLDS, Runtime, tune_gc
from services.common.settings import RuntimeSettings
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler

PARTITIONS = 3
GOAL = 0.7
MAX_IN_FLIGHT = ROUTER.max_in_flight  # the router's default window, on both sides
CALLBACK, COMPLAINT = "Did the customer ask to be called back?", "Did the customer complain?"
END_REASONS = ("CUSTOMER_HANGUP", "BLIND_TRANSFER", "CCAAS_TRANSFER", "AGENT_HANGUP", "VOICEMAIL")

AGENT = """\
agent: bench-line
timezone: America/Chicago
extraction:
  fields:
    - {name: interest_level, type: enum, values: [high, medium, low, none]}
    - {name: follow_up_required, type: boolean}
    - {name: follow_up_date, type: date}
recipient_routes:
  - id: complaints
    rules: [{when: "billing", to: [billing@bench.example]}, {when: "other", to: [ops@bench.example]}]
    fallback: [lead@bench.example]
flows:
  - id: crm
    when: {end_reason: CUSTOMER_HANGUP}
    actions:
      - type: webhook
        destination: crm
        body: {status: closed, ended_at: "{{conversation_date}}", reason: "{{end_reason}}",
               summary: "{{conversation_summary}}", level: "{{interest_level}}"}
  - id: callback
    when: {ai: "Did the customer ask to be called back?"}
    actions:
      - {type: email, to: [support@bench.example], subject: "Callback requested",
         body: "{{customer_number}} asked for a callback on {{conversation_date}}. {{conversation_summary}}"}
      - {type: task, priority: High, title: "Call back {{customer_name}}"}
  - id: complaint
    when: {all: [{ai: "Did the customer complain?"}, {not: {end_reason: [BLIND_TRANSFER]}}]}
    actions:
      - {type: email, recipients: complaints, subject: "Complaint",
         body: "{{conversation_summary}}\\n{{conversation_transcript}}"}
      - {type: task, priority: Urgent, title: "Complaint from {{customer_name}}"}
  - id: follow-up
    when: {field: follow_up_required, op: "==", value: true}
    actions:
      - {type: schedule_call, use_field: follow_up_date, fallback_delay_minutes: 1440,
         business_hours: {timezone: America/Chicago}}
  - id: escalation
    when: {any: [{end_reason: CCAAS_TRANSFER}, {field: interest_level, op: "==", value: high}]}
    actions:
      - {type: slack, destination: ops-slack, text: "{{agent_name}}: {{conversation_summary}}"}
"""


def busy(i: int) -> tuple[str, bool, bool, str, bool]:
    """About 2.4 actions per conversation: every flow fires often."""
    return END_REASONS[i % 5], i % 2 == 0, i % 4 == 0, ("high", "low", "none")[i % 3], i % 3 == 0


def typical(i: int) -> tuple[str, bool, bool, str, bool]:
    """About one action per conversation: mostly the CRM update on hang-ups, the rest now and then."""
    reasons = ("CUSTOMER_HANGUP",) * 6 + ("AGENT_HANGUP",) * 2 + ("BLIND_TRANSFER", "CCAAS_TRANSFER")
    return reasons[i % 10], i % 10 == 1, i % 20 == 2, "high" if i % 10 == 5 else "low", i % 10 == 7


MIXES = {"typical": typical, "busy": busy}


def record(i: int, mix: str = "busy") -> bytes:
    """One ConversationExtracted of about 5 KB; which flows fire depends on the mix."""
    end_reason, callback, complaint, interest, follow_up = MIXES[mix](i)
    messages = [
        {
            "role": "agent" if j % 2 == 0 else "customer",
            "text": f"Turn {j}: " + "some words of the call " * 5,
            "start_seconds": j * 5.0,
            "end_seconds": j * 5.0 + 4.0,
        }
        for j in range(22)
    ]
    conversation = {
        "event_id": f"e{i}",
        "conversation_id": f"conv-{i:07d}",
        "occurred_at": "2026-03-10T10:05:00Z",
        "account": {"id": "acct", "name": "Bench Co"},
        "agent": {"id": "bench-line", "name": "Bench", "version": "1"},
        "direction": "inbound",
        "started_at": "2026-03-10T09:58:30Z",
        "ended_at": "2026-03-10T10:03:05Z",
        "end_reason": {"canonical": end_reason, "raw": "raw", "source_platform": "vapi"},
        "customer": {"phone_number": "+16305550123", "name": "Tom Becker", "contact_id": "c-1"},
        "to_number": "+13125550100",
        "messages": messages,
        "conversation_url": f"https://voice.example/c/{i}",
    }
    extraction = {
        "status": "ok",
        "provider": "heuristic",
        "config_revision": "bench",
        "summary": "The caller asked about a bill.",
        "fields": {
            "interest_level": {"value": interest},
            "follow_up_required": {"value": follow_up},
            "follow_up_date": {"value": "2026-03-20"},
        },
        "triggers": {
            trigger_id(CALLBACK): {"question": CALLBACK, "answer": callback},
            trigger_id(COMPLAINT): {"question": COMPLAINT, "answer": complaint},
        },
        "recipients": {"complaints": ["billing@bench.example"]},
    }
    return orjson.dumps(
        {
            "event_id": f"x{i}",
            "conversation": conversation,
            "extraction": extraction,
            "extracted_at": "2026-03-10T10:05:03Z",
        }
    )


class First:
    """Wraps a handler to note when the first record arrived."""

    def __init__(self, inner: Handler[ConversationExtracted]) -> None:
        self.inner, self.at = inner, 0.0

    async def handle(self, event: ConversationExtracted, ctx: Context) -> Sequence[Event]:
        if not self.at:
            self.at = time.monotonic()
        return await self.inner(event, ctx)


async def pass_through(event: ConversationExtracted, ctx: Context) -> Sequence[Event]:
    return [event]


async def run(ctx: BenchContext) -> dict[str, Any]:
    previous_gc = gc.get_threshold()
    tune_gc()  # as `python -m services.router` does; process-wide, so the pass-through gets it too
    try:
        return await _run(ctx)
    finally:
        gc.set_threshold(*previous_gc)


async def _run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(10_000, 2_000)
    config_dir = ctx.work_dir / f"router-agents-{uuid.uuid4().hex[:6]}"
    config_dir.mkdir(parents=True)
    (config_dir / "bench-line.yaml").write_text(AGENT)
    summary, notes, data = [], [], {}
    for mix in MIXES:
        raws = [record(i, mix) for i in range(n)]
        size = sum(map(len, raws)) / n
        outputs = await _outputs(config_dir, raws)
        source = await ctx.topic(f"router-in-{mix}", PARTITIONS)
        await ctx.produce_raw(source, ((f"conv-{i:07d}".encode(), raw, None) for i, raw in enumerate(raws)))
        rates: dict[str, list[float]] = {"pass-through": [], "router": []}
        cpu: dict[str, list[float]] = {"pass-through": [], "router": []}
        for rep in range(ctx.repeats):
            for mode in ("pass-through", "router") if rep % 2 == 0 else ("router", "pass-through"):
                rate, cpu_us = await measure(ctx, mode, source, n, config_dir, outputs)
                rates[mode].append(rate)
                cpu[mode].append(cpu_us)
                ctx.log(f"{mix} {mode}: {rate:,.0f} rec/s, {cpu_us:,.0f} us CPU per record")
        best = {m: best_of(r) for m, r in rates.items()}
        label = f"router {mix} mix ({outputs / n:.1f} outputs/record)"
        summary.append(
            ratio_line(
                label,
                best["router"],
                "pass-through",
                best["pass-through"],
                goal=GOAL,
                samples=rates["router"],
                baseline_samples=rates["pass-through"],
            )
        )
        least = {m: min(c) for m, c in cpu.items()}
        summary.append(
            info_line(
                f"router {mix} mix CPU",
                f"{least['router']:,.0f} us per record vs pass-through "
                f"{least['pass-through']:,.0f} us (ratio {least['pass-through'] / least['router']:.2f})",
            )
        )
        notes.append(
            f"{mix} mix: {n:,} records of {size:,.0f} bytes, {outputs / n:.2f} records written per input "
            "(the decision trace and every fired action)."
        )
        data[mix] = {"records": n, "record_bytes": size, "outputs": outputs, "rates_rec_s": rates, "cpu_us": cpu}
    notes.append(
        f"{PARTITIONS} partitions; the same runtime settings for both (max_in_flight {MAX_IN_FLIGHT}, ordering "
        f"key); best of {ctx.repeats} interleaved runs. CPU = this process's CPU time per record while measuring "
        "(steadier than throughput on a shared machine). Both run with the router's garbage-collector "
        f"thresholds {GC_THRESHOLDS} (services/common/runtime.py); with Python's default (700, 10, 10) the "
        "router spent about a third more CPU per record in collections."
    )
    return {"summary": summary, "data": data, "notes": notes}


async def _outputs(config_dir: Path, raws: list[bytes]) -> int:
    """How many records the router writes for these inputs (routed in-process, before measuring)."""
    handler = RouterHandler(CatalogHolder(config_dir, "-"), clock=lambda: datetime.now(UTC))
    ctx = Context("router", CONVERSATION_EXTRACTED)
    total = 0
    for raw in raws:
        total += len(await handler.handle(ConversationExtracted.model_validate_json(raw), ctx))
    return total


async def measure(
    ctx: BenchContext, mode: str, source: str, n: int, config_dir: Path, outputs: int
) -> tuple[float, float]:
    """(records per second, CPU microseconds per record) of one run."""
    service = f"benchrouter{uuid.uuid4().hex[:8]}"
    names = {CONVERSATION_EXTRACTED: source}
    if mode == "router":
        names[DECISIONS] = await ctx.topic("router-decisions", PARTITIONS)
        for t in ACTION_TYPES:
            names[action_topic(t)] = await ctx.topic(f"router-{t.replace('_', '-')}", PARTITIONS)
        route = ROUTER.renamed(lambda name: names.get(name, name), service=service)
        handler = First(RouterHandler(CatalogHolder(config_dir, "-")).handle)
        sinks, expected = list(route.output_topics), outputs
    else:
        sink = await ctx.topic("router-passthrough", PARTITIONS)
        extracted = Stream.plain(source, ConversationExtracted)
        route = Route(
            service,
            "pass-through",
            consumes=(extracted,),
            produces=(Output(Stream.plain(sink, ConversationExtracted), key="input"),),
            retry_delays_seconds=(1.0,),
            compute_only=True,
        )
        handler, sinks, expected = First(pass_through), [sink], n
    await ctx.create_topics([route.retry_topics[0], route.dead_letter_topic])
    chosen = {"metrics_port": 0, "retry_delays_seconds": [1.0], "max_in_flight": MAX_IN_FLIGHT}
    settings = RuntimeSettings(**route.runtime_defaults() | chosen)  # both compute only: the fast path
    runtime = Runtime(Service(route, handler.handle), kafka=ctx.kafka, settings=settings)
    cpu_start = time.process_time()
    task = asyncio.create_task(runtime.run())
    try:
        done_at = await _all_written(ctx, sinks, expected)
        cpu = time.process_time() - cpu_start
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 120)
    await ctx.each_once(route.group_id, source, n, sinks, expected)
    return n / (done_at - handler.at), cpu / n * 1e6


async def _all_written(ctx: BenchContext, sinks: list[str], expected: int, timeout: float = 600) -> float:
    """The monotonic time the output topics hold every expected record. One end-offsets request per poll
    for all sinks: polling seven topics one by one would tax the router's event loop more than the
    pass-through's, and skew the comparison."""
    reader = AIOKafkaConsumer(**ctx.kafka.client_options(), group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        parts = [TopicPartition(s, p) for s in sinks for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout
        while sum((await reader.end_offsets(parts)).values()) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"outputs did not reach {expected} records in {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return time.monotonic()
    finally:
        await reader.stop()
