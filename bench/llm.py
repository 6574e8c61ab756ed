"""The extractor against a real llama-server ÷ the same prompts sent straight to the server (the limit).

The extractor (Extractor.extract: capability-probed provider, transcript fit, the request, parsing,
normalisation, validation, evidence review) extracts N conversations, one at a time; the baseline sends
the very same request bodies (built by the provider's own code) to llama-server with a bare httpx client
and only reads the JSON back. The model's time dominates both; what the ratio shows is the extractor's own
overhead per call. Goal >= 0.9. Interleaved, `ctx.repeats` times, best of each quoted.

The spec is small (three fields, no summary) so that a 135M model answers in a few seconds and every
answer validates (no repair round on either side).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.context import BenchContext
from bench.measure import best_of, info_line, ratio_line
from schemas.agents import ExtractionSpec, FieldSpec
from services.devkit.kafka import ROOT
from services.devkit.llama import LlamaServer, cached
from services.extractor import prompt
from services.extractor.__main__ import open_provider
from services.extractor.evaluation.cases import load_calls
from services.extractor.handler import Extractor, local_end_of
from services.extractor.llm import ExtractionFailed, OpenAIProvider
from services.extractor.settings import ExtractorSettings

GOAL = 0.9
SPEC = ExtractionSpec(
    agent_id="support-line",
    config_revision="bench",
    summary=False,
    fields=[
        FieldSpec(name="issue_category", type="enum", values=["billing", "technical", "warranty", "account", "other"],
                  description="What the call was mainly about."),
        FieldSpec(name="resolved", type="boolean", description="Whether the agent resolved the issue."),
        FieldSpec(name="severity", type="enum", values=["low", "medium", "high", "critical"],
                  description="How badly the issue affects the customer."),
    ],
)  # fmt: skip


async def run(ctx: BenchContext) -> dict[str, Any]:
    build = cached()
    if build is None:
        return {"summary": [info_line("llm", "llama-server is not built (make llama): not measured")], "notes": []}
    cases = [c for c in load_calls(ROOT / "examples" / "eval" / "calls.yaml") if c.spec.agent_id == "support-line"]
    candidates, want = [c.event for c in cases], 4 if ctx.quick else 8
    with LlamaServer(build, context=4096) as server:
        settings = ExtractorSettings(
            config_dir=ROOT, llm={"base_url": server.base_url, "model": server.model, "request_timeout_seconds": 240}
        )
        async with httpx.AsyncClient(timeout=240) as http, open_provider(settings) as provider:
            assert isinstance(provider, OpenAIProvider)
            extractor = Extractor(settings, lambda e: None, http, provider)
            # the conversations the model answers validly in one call (temperature 0: the same answer on
            # both sides); an answer that needs a repair round would cost the extractor a second call
            kept: list[tuple[Any, dict[str, Any]]] = []
            for event in candidates:
                body = _body(provider, event)
                answer = await _send(http, server.base_url, body)
                try:
                    e = await extractor.extract(event, SPEC)
                except ExtractionFailed:
                    continue
                if e.usage.prompt_tokens == answer["usage"]["prompt_tokens"] and len(kept) < want:
                    kept.append((event, body))
            events, bodies = [e for e, _ in kept], [b for _, b in kept]
            ours, direct, failed = [], [], 0
            for _ in range(ctx.repeats):
                direct.append(len(bodies) / await _direct(http, server.base_url, bodies))
                started = time.monotonic()
                for event in events:
                    try:
                        await extractor.extract(event, SPEC)
                    except ExtractionFailed:
                        failed += 1
                ours.append(len(events) / (time.monotonic() - started))
    summary = [
        ratio_line(
            "extractor on llama-server",
            best_of(ours),
            "the same prompts sent straight to it",
            best_of(direct),
            goal=GOAL,
            unit="conv/s",
            samples=ours,
            baseline_samples=direct,
        ),
        info_line(
            "llm calls", f"{len(events)} conversations x {ctx.repeats} rounds per side, {failed} failed extractions"
        ),
    ]
    return {"summary": summary, "data": {"extractor_conv_s": ours, "direct_conv_s": direct}, "charts": [],
            "notes": ["one llama-server slot, one thread: the model's time dominates both sides"]}  # fmt: skip


def _body(provider: OpenAIProvider, event: Any) -> dict[str, Any]:
    """The request the provider sends for this conversation, built by its own code."""
    messages = list(event.messages or [])
    fitted = provider.fit(SPEC, messages)
    compiled = provider._compile(SPEC)
    request = prompt.messages(compiled.text, prompt.conversation_facts(event, local_end_of(event)), fitted.text,
                              fitted.truncated)  # fmt: skip
    return provider._request(provider._settings.model, request, compiled.schema, compiled.max_tokens)


async def _send(http: httpx.AsyncClient, base_url: str, body: dict[str, Any]) -> Any:
    r = await http.post(f"{base_url}/chat/completions", json=body)
    r.raise_for_status()
    return r.json()


async def _direct(http: httpx.AsyncClient, base_url: str, bodies: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    for body in bodies:
        await _send(http, base_url, body)
    return time.monotonic() - started
