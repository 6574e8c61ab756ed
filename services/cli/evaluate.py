"""`postcall eval`: how good extraction is, and what it costs, on labelled conversations.

    postcall eval                                        # the heuristic on examples/eval/calls.yaml
    postcall eval ../shared/datasets/sgd --format sgd    # the Schema-Guided Dialogue sample
    postcall eval --provider local                       # llama-server with the small cached model
    postcall eval --provider openai --base-url http://vllm:8000/v1 --model qwen2.5-7b-instruct
    postcall eval --json after.json --compare before.json

Prints per field and overall accuracy, precision and recall (scoring.py says how each value is
scored), AI-trigger accuracy, how often the review flag was right, latency p50/p99, and tokens and
cost per call; --json writes the same as JSON (with every wrong value), --compare prints the change
against an earlier run's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.cli.plain import plain
from services.devkit.kafka import ROOT

DEFAULT_DATASET = ROOT / "examples" / "eval" / "calls.yaml"
# one answer of the small local model on one thread (half a minute or more; bench/evaluation.py allows the same)
LOCAL_CALL_SECONDS = 240.0
console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)


def _llm_url(value: str | None) -> str | None:
    """--base-url refused as a usage error naming it, as the extractor's settings refuse it (never quoted)."""
    if value is not None:
        from pydantic import ValidationError

        from services.extractor.settings import LlmSettings

        try:
            LlmSettings(base_url=value)
        except ValidationError as exc:
            raise typer.BadParameter(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    return value


def evaluate(
    dataset: Annotated[Path, typer.Argument(help="A calls YAML file, or an SGD folder (schema.json + dialogues).")] = (
        DEFAULT_DATASET
    ),
    format: Annotated[str, typer.Option("--format", "-f", help="postcall or sgd; default: from the path.")] = "",
    provider: Annotated[str, typer.Option(help="heuristic, local (llama-server, built when missing) or openai.")] = (
        "heuristic"
    ),
    base_url: Annotated[
        str | None, typer.Option(help="openai: the endpoint (POSTCALL_LLM__BASE_URL).", callback=_llm_url)
    ] = None,
    model: Annotated[str | None, typer.Option(help="openai: the model (POSTCALL_LLM__MODEL).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N cases.")] = None,
    sample: Annotated[int | None, typer.Option(help="Only N cases, evenly spaced over the dataset.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Conversations extracted at once.")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    compare: Annotated[Path | None, typer.Option(help="An earlier run's JSON: print the change.")] = None,
) -> None:
    """Score an extraction provider on a labelled dataset."""
    from services.extractor.evaluation.cases import DatasetError, load_calls, load_sgd

    kind = format or ("sgd" if dataset.is_dir() else "postcall")
    if kind not in ("postcall", "sgd"):
        raise typer.BadParameter(f"unknown format {kind!r}; choose postcall or sgd")
    if provider not in ("heuristic", "local", "openai"):
        raise typer.BadParameter(f"unknown provider {provider!r}; choose heuristic, local or openai")
    try:
        cases = load_sgd(dataset, limit) if kind == "sgd" else load_calls(dataset)[:limit]
    except DatasetError as exc:
        console.print(plain(str(exc), "red"))  # it quotes the path and a line of the file: never markup
        raise typer.Exit(2) from exc
    if sample is not None and 0 < sample < len(cases):
        cases = [cases[i * len(cases) // sample] for i in range(sample)]
    before = _earlier(compare) if compare else None
    if json_out is not None:
        _writable(json_out)
    result = asyncio.run(_run(cases, provider, base_url, model, concurrency))
    result["dataset"] = {"path": str(dataset), "format": kind, "cases": len(cases)}
    show(result)
    if before is not None:
        from services.extractor.evaluation.scoring import compare as diff

        show_comparison(diff(before, result))
    if json_out is not None:
        try:
            json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        except OSError as exc:
            _fail(f"cannot write --json {json_out}: {exc.strerror or exc}")
        console.print(Text.assemble("results written to ", plain(str(json_out))))


def _earlier(path: Path) -> Any:
    try:
        earlier = orjson.loads(path.read_bytes())
    except OSError as exc:
        _fail(f"cannot read --compare {path}: {exc.strerror or exc}")
    except orjson.JSONDecodeError as exc:
        _fail(f"cannot read --compare {path}: not JSON: {exc}")
    if not (isinstance(earlier, dict) and all(isinstance(earlier.get(k), dict) for k in ("fields", "overall"))):
        _fail(f"cannot read --compare {path}: not the JSON of `postcall eval --json` (no fields and overall)")
    return earlier


def _writable(path: Path) -> None:
    """Refused before the run (which may take an hour on a real model), not after it."""
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "is a folder" if path.is_dir() else f"{folder} is not a writable folder"
        _fail(f"cannot write --json {path}: {why}")


def _fail(message: str) -> NoReturn:
    typer.echo(f"postcall eval: {message}", err=True)
    raise typer.Exit(2)


async def _run(cases: list[Any], provider: str, base_url: str | None, model: str | None, concurrency: int) -> Any:
    import httpx

    from services.extractor.__main__ import open_provider
    from services.extractor.evaluation.run import evaluate as run_cases
    from services.extractor.handler import Extractor
    from services.extractor.settings import ExtractorSettings

    with _endpoint(provider, base_url, model) as (url, name):
        llm: dict[str, Any] = {} if url is None and provider == "heuristic" else {"base_url": url}
        if name:
            llm["model"] = name
        if provider == "local":  # one slot: each call waits for the ones ahead of it (--concurrency)
            llm["request_timeout_seconds"] = LOCAL_CALL_SECONDS * concurrency
        settings = ExtractorSettings(config_dir=ROOT, llm=llm)
        if provider == "heuristic":
            no_llm = settings.llm.model_copy(update={"base_url": None, "api_key": None})
            settings = settings.model_copy(update={"llm": no_llm})
        elif not settings.llm.configured:  # the extractor would score the heuristic instead
            _fail(
                "--provider openai needs an endpoint: --base-url URL, or POSTCALL_LLM__BASE_URL or "
                "POSTCALL_LLM__API_KEY"
            )
        async with httpx.AsyncClient() as http, open_provider(settings) as llm_provider:
            extractor = Extractor(settings, lambda e: None, http, llm_provider)
            label = "heuristic" if llm_provider is None else f"{settings.llm.model} at {llm_provider.endpoint}"
            console.print(plain(f"provider: {label}; {len(cases)} conversations"))

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty() and (done % 10 == 0 or done == total):
                    print(f"\r{done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

            card = await run_cases(cases, extractor, concurrency=concurrency,
                                   country_code=settings.default_country_code, progress=progress)  # fmt: skip
            result: dict[str, Any] = card.as_json()
            result["provider"] = {"name": "heuristic" if llm_provider is None else "openai",
                                  "model": None if llm_provider is None else settings.llm.model,
                                  "endpoint": None if llm_provider is None else llm_provider.endpoint,
                                  "mode": None if llm_provider is None else llm_provider.describe()}  # fmt: skip
            result["wrong"] = card.rows
            return result


@contextlib.contextmanager
def _endpoint(provider: str, base_url: str | None, model: str | None) -> Iterator[tuple[str | None, str | None]]:
    if provider != "local":
        yield base_url, model
        return
    from services.devkit.llama import LlamaServer, build

    console.print("starting llama-server (the first time builds it: ~12 minutes)")
    with LlamaServer(build(), context=8192, parallel=1) as server:
        yield server.base_url, server.model


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def show(r: dict[str, Any]) -> None:
    table = Table(title="per field", title_justify="left")
    for col in ("field", "n", "accuracy", "precision", "recall", "given", "labelled", "empty baseline"):
        table.add_column(col, justify="left" if col == "field" else "right")

    def row(name: str, t: dict[str, Any], style: str = "") -> None:
        table.add_row(plain(name), str(t["n"]), _pct(t["accuracy"]), _pct(t["precision"]), _pct(t["recall"]),
                      str(t["given"]), str(t["labelled"]), _pct(t["empty_baseline"]), style=style)  # fmt: skip

    for name, t in r["fields"].items():
        row(name, t)
    table.add_section()
    for kind, t in r["by_type"].items():
        row(f"type {kind}", t, "dim")
    table.add_section()
    row("overall", r["overall"], "bold")
    console.print(table)
    lat, per = r["latency_ms"], r["per_call"]
    console.print(
        f"cases {r['cases']} (failed {r['failed']}); triggers: accuracy {_pct(r['triggers']['accuracy'])} over "
        f"{r['triggers']['n']}; review flag right {_pct(r['review_flag']['accuracy'])} over {r['review_flag']['n']} "
        f"values; latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; per call {per['prompt_tokens']} prompt + "
        f"{per['completion_tokens']} completion tokens (cached share {_pct(per['cached_share'])}), "
        f"${per['cost_usd']:.6f}"
    )
    for reason, n in r["failures"].items():
        console.print(Text.assemble(f"  failed {n}x: ", plain(reason)))


def show_comparison(c: dict[str, Any]) -> None:
    table = Table(title="change against the earlier run", title_justify="left")
    for col in ("field", "accuracy", "precision", "recall"):
        table.add_column(col, justify="left" if col == "field" else "right")

    def cell(m: dict[str, Any]) -> str:
        if m["change"] is None:
            return f"{_pct(m['before'])} -> {_pct(m['after'])}"
        return f"{_pct(m['before'])} -> {_pct(m['after'])} ({m['change']:+.2f})"

    for name, d in [*c["fields"].items(), ("overall", c["overall"])]:
        table.add_row(plain(name), cell(d["accuracy"]), cell(d["precision"]), cell(d["recall"]))
    console.print(table)
    console.print(f"triggers: {_pct(c['triggers']['before'])} -> {_pct(c['triggers']['after'])}")
