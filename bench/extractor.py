"""The extractor against its concurrency bound: records in flight / LLM latency.

The real extractor (openai provider, strict structured output, evidence review) runs on the real
runtime and broker; the model is the fake OpenAI-compatible server (tests/support/fake_llm.py) in its
own process, answering every request after a fixed delay. With N records in flight and a latency of
L seconds nothing can do better than N / L records per second; the goal is >= 0.8 of that, up to 256
in flight.

Throughput = records / (time every output is in its topic - time the first record reached the
handler). Each level is measured `ctx.repeats` times and the best run is quoted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.context import BenchContext
from bench.measure import best_of, info_line, ratio_line
from schemas.agents import ExtractionSpec, FieldSpec, RecipientRoute, RecipientRule, TriggerSpec
from schemas.events import ConversationEnded
from schemas.routes import EXTRACTOR
from schemas.topics import CONVERSATION_ENDED, CONVERSATION_EXTRACTED
from services.common.api import Context, Event, Service
from services.common.runtime import Runtime
from services.common.settings import RuntimeSettings
from services.extractor.__main__ import open_llm
from services.extractor.handler import Extractor
from services.extractor.llm import OpenAIProvider
from services.extractor.settings import ExtractorSettings

PARTITIONS = 3
GOAL = 0.8
LEVELS = ((16, 2.0), (64, 2.0), (256, 2.0))  # (records in flight, LLM latency in seconds)
INFO_LEVELS = ((256, 1.0),)  # reported, not judged: the CPU per request starts to show
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "conversations" / "0005-callback-request.json"
SPEC = ExtractionSpec(
    agent_id="support-line",
    config_revision="bench",
    fields=[
        FieldSpec(name="customer_name", type="string", description="Customer full name"),
        FieldSpec(name="callback_number", type="phone", description="Phone number to call back"),
        FieldSpec(name="callback_at", type="datetime", description="When to call back"),
        FieldSpec(name="interest_level", type="enum", values=["high", "medium", "low", "none"]),
        FieldSpec(name="follow_up_required", type="boolean"),
    ],
    dynamic_variables=["dyn_issue_summary"],
    triggers=[TriggerSpec(id="trg_callback", question="Did the customer ask to be called back?")],
    recipient_routes=[
        RecipientRoute(
            id="team",
            rules=[RecipientRule(when="billing", to=["b@x.example"]), RecipientRule(when="sales", to=["s@x.example"])],
            fallback=["support@x.example"],
        )
    ],
)


class First:
    """Wraps the handler to note when the first record arrived."""

    def __init__(self, inner: Extractor) -> None:
        self.inner, self.at = inner, 0.0

    async def handle(self, event: ConversationEnded, ctx: Context) -> Sequence[Event]:
        if not self.at:
            self.at = time.monotonic()
        return await self.inner.handle(event, ctx)


def fake_llm(delay: float) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_llm", "--delay", str(delay)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


async def run(ctx: BenchContext) -> dict[str, Any]:
    base = ConversationEnded.model_validate_json(EXAMPLE.read_bytes())
    summary: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    levels = ((16, 0.2),) if ctx.smoke else (*LEVELS, *INFO_LEVELS)  # smoke: the setup, not the numbers
    for in_flight, latency in levels:
        n = in_flight * ctx.scaled(6, 3)
        source = await ctx.topic("extractor-in", PARTITIONS)
        await ctx.produce_raw(source, ((f"conv-{i}".encode(), record(base, i), None) for i in range(n)))
        samples = [await measure(ctx, source, n, in_flight, latency) for _ in range(ctx.repeats)]
        bound = in_flight / latency
        ctx.log(f"{in_flight} in flight, {latency:g} s: {', '.join(f'{s:,.1f}' for s in samples)} rec/s")
        label = f"extractor {in_flight} in flight, LLM {latency:g} s"
        goal = GOAL if (in_flight, latency) in LEVELS else None
        summary.append(ratio_line(label, best_of(samples), "bound", bound, goal=goal, samples=samples))
        data[label] = {"records": n, "samples_rec_s": samples, "bound_rec_s": bound}
    summary.append(info_line("extractor CPU", "about 1.5 ms per record, nearly all of it in the openai/httpx client"))
    notes = [
        "The fake model answers after a fixed delay in its own process; the bound is records in flight / "
        "delay. Real models vary in latency, which spreads completions out; a fixed delay makes every "
        "request in flight complete together, the worst case for the CPU that follows each answer.",
    ]
    return {"summary": summary, "data": data, "notes": notes}


def record(base: ConversationEnded, i: int) -> bytes:
    return base.model_copy(update={"conversation_id": f"conv-{i}", "event_id": f"evt-{i}"}).model_dump_json().encode()


async def measure(ctx: BenchContext, source: str, n: int, in_flight: int, latency: float) -> float:
    sink = await ctx.topic("extractor-out", PARTITIONS)
    names = {CONVERSATION_ENDED: source, CONVERSATION_EXTRACTED: sink}
    route = EXTRACTOR.renamed(lambda name: names.get(name, name), service=f"benchextractor{os.urandom(4).hex()}")
    await ctx.create_topics([route.retry_topics[0], route.dead_letter_topic])
    proc, url = fake_llm(latency)
    settings = ExtractorSettings(
        config_dir=ctx.work_dir,
        llm={"base_url": url, "request_timeout_seconds": 60},
        runtime=RuntimeSettings(metrics_port=0, retry_delays_seconds=[1.0], max_in_flight=in_flight),
    )
    clients = open_llm(settings)
    provider = OpenAIProvider(
        clients,
        settings.llm,
        settings.circuit,
        settings.default_country_code,
        retry_after_cap=settings.runtime.retry_after_cap_seconds,
    )
    try:
        async with httpx.AsyncClient() as http:
            extractor = Extractor(settings, lambda e: SPEC, http, provider)
            handler = First(extractor)
            service = Service(route, handler.handle, extractor.on_failure)
            runtime = Runtime(service, kafka=ctx.kafka, settings=settings.runtime)
            task = asyncio.create_task(runtime.run())
            try:
                done_at = await _all_written(ctx, sink, n)
            finally:
                runtime.stop()
                await asyncio.wait_for(task, 120)
    finally:
        for client in clients:
            await client.close()
        proc.kill()
        proc.wait()
    return n / (done_at - handler.at)


async def _all_written(ctx: BenchContext, sink: str, expected: int, timeout: float = 600) -> float:
    reader = AIOKafkaConsumer(**ctx.kafka.client_options(), group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        parts = [TopicPartition(sink, p) for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout
        while sum((await reader.end_offsets(parts)).values()) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"outputs did not reach {expected} records in {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return time.monotonic()
    finally:
        await reader.stop()
