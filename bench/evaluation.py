"""`postcall eval` results, per field, for the heuristic and for the local model (llama-server with
SmolLM2-135M-Instruct), on our labelled calls (examples/eval/calls.yaml) and on the Schema-Guided
Dialogue train sample (../shared/datasets/sgd beside the checkout, else the 48-dialogue sample in
examples/eval/sgd).

The heuristic runs over every case. The local model answers one conversation in half a minute or more
on two shared cores, so it runs over an evenly spaced sample (12 calls, 12 dialogues; --quick: 4 and 4)
and only when scripts/build-llama.sh has built it. A tiny local model tests compatibility (every mode,
every failure path), not quality: its numbers are no verdict on what a real model does.

Each run's full JSON (every wrong value included) is written to bench/results/eval-<provider>-<set>.json.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from bench.context import BenchContext
from bench.measure import info_line
from services.devkit.kafka import ROOT
from services.devkit.llama import LlamaServer, cached
from services.extractor.__main__ import open_provider
from services.extractor.evaluation.cases import Case, load_calls, load_sgd
from services.extractor.evaluation.run import evaluate
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings

SHARED_SGD = ROOT.parent / "shared" / "datasets" / "sgd"


def datasets() -> dict[str, list[Case]]:
    sgd = SHARED_SGD if (SHARED_SGD / "schema.json").exists() else ROOT / "examples" / "eval" / "sgd"
    return {"calls": load_calls(ROOT / "examples" / "eval" / "calls.yaml"), "sgd": load_sgd(sgd)}


def sample(cases: list[Case], n: int) -> list[Case]:
    return cases if n >= len(cases) else [cases[i * len(cases) // n] for i in range(n)]


async def score(cases: list[Case], llm: dict[str, Any] | None) -> dict[str, Any]:
    settings = ExtractorSettings(config_dir=ROOT, llm=llm or {})
    if llm is None:
        settings = settings.model_copy(
            update={"llm": settings.llm.model_copy(update={"base_url": None, "api_key": None})}
        )
    async with httpx.AsyncClient() as http, open_provider(settings) as provider:
        card = await evaluate(cases, Extractor(settings, lambda e: None, http, provider))
    return {**card.as_json(), "wrong": card.rows}


def line(label: str, r: dict[str, Any]) -> dict[str, Any]:
    o, lat, per = r["overall"], r["latency_ms"], r["per_call"]
    text = (f"accuracy {o['accuracy']:.2f}, precision {_f(o['precision'])}, recall {_f(o['recall'])} over {o['n']} "
            f"values (empty baseline {o['empty_baseline']:.2f}); triggers {_f(r['triggers']['accuracy'])}; "
            f"review flag right {_f(r['review_flag']['accuracy'])}; failed {r['failed']}/{r['cases']}; "
            f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms; {per['prompt_tokens']}+{per['completion_tokens']} "
            f"tokens/call (cached {_f(per['cached_share'])})")  # fmt: skip
    return info_line(label, text)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


async def run(ctx: BenchContext) -> dict[str, Any]:
    data: dict[str, Any] = {}
    summary = []
    sets = datasets()
    for name, cases in sets.items():
        data[f"heuristic-{name}"] = await score(cases, None)
    build = cached()
    if build is not None:
        n = 4 if ctx.quick else 12
        with LlamaServer(build, context=8192) as server:
            llm = {"base_url": server.base_url, "model": server.model, "request_timeout_seconds": 240.0}
            for name, cases in sets.items():
                data[f"local-{name}"] = await score(sample(cases, n), llm)
    for key, result in data.items():
        result["dataset_cases"] = len(sets[key.split("-", 1)[1]])
        (ctx.results_dir / f"eval-{key}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        summary.append(line(f"eval {key} ({result['cases']} conversations)", result))
    notes = [
        "accuracy counts every (conversation, field), an empty label answered empty included; precision is over "
        "the values given, recall over the values labelled; the empty baseline is an extractor that never answers",
        "the local model is SmolLM2-135M-Instruct (Q4_1) on llama-server, one thread: it tests compatibility, "
        "not quality",
    ]
    if build is None:
        notes.append("llama-server is not built (make llama): the local model was not measured")
    fields = {k: {f: v["accuracy"] for f, v in r["fields"].items()} for k, r in data.items()}
    return {"summary": summary, "data": {"fields": fields}, "notes": notes, "charts": []}
