"""`make bench`: run every registered benchmark, each on a private broker of its own, write bench/results/.

    python -m bench.run                        # everything in BENCHMARKS
    python -m bench.run --only runtime,scaling # a subset
    python -m bench.run --quick                # smaller record counts (a smoke run, noisier numbers)

A benchmark is a module with `async def run(ctx: BenchContext) -> dict[str, Any]` (bench/README.md).
A registered module that does not exist yet is reported as "not built yet"; one that raises is
reported with its traceback; neither stops the others.

Each benchmark gets a broker started for it and stopped after it: on one broker for the whole run, a
benchmark met the data, segments and page cache that the ones before it wrote (the router, writing 2-3
records per input to several topics, sat idle a quarter of its run behind the earlier benchmarks' writes:
0.55 of its pass-through in a full run, 0.72 on its own three minutes later, the same code).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import report
from bench.context import BenchContext
from services.common.settings import KafkaSettings

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (name, module, what it measures). Add a line here when you add a bench module.
BENCHMARKS: list[tuple[str, str, str]] = [
    ("runtime", "bench.runtime", "runtime pass-through vs a bare aiokafka loop"),
    ("kafka_client", "bench.kafka_client", "bare consume+produce loops: aiokafka vs confluent-kafka (librdkafka)"),
    ("cloudevents", "bench.cloudevents_headers", "CloudEvents headers per record: our codec vs the cloudevents SDK"),
    ("scaling", "bench.scaling", "throughput of 1 to 4 runtime instances with a slow handler"),
    ("faust", "bench.faust_compare", "router loop on faust-streaming vs on our runtime: throughput and kill -9"),
    ("router", "bench.router", "router vs the runtime's pass-through"),
    ("extractor", "bench.extractor", "extractor vs its concurrency bound"),
    ("dispatcher", "bench.dispatcher", "dispatcher vs bare httpx, and isolation between destinations"),
    ("e2e", "bench.e2e", "end-to-end latency, conversation ended to action delivered"),
    ("memory", "bench.memory", "peak memory per service"),
    ("ledger", "bench.ledger", "dispatcher memory with 10 million ids in its idempotency ledger, against its limit"),
    ("ingress", "bench.ingress", "webhook ingress vs a bare aiokafka send_and_wait loop, concurrency 32"),
    ("llm", "bench.llm", "extractor against llama-server vs the same prompts sent straight to it"),
    ("eval", "bench.evaluation", "postcall eval: heuristic and local model on our calls and the SGD sample"),
    ("recorder", "bench.recorder", "recorder into PostgreSQL and SQLite vs the runtime's pass-through"),
    ("store_query", "bench.store_query", "store query p50/p99: 1,000,000 calls in PostgreSQL, 100,000 in SQLite"),
    ("console", "bench.console_pages", "console page server time: 1,000,000 calls in PostgreSQL, 100,000 in SQLite"),
]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run_one(name: str, module_name: str, title: str, ctx: BenchContext) -> dict[str, Any]:
    started = time.monotonic()
    base: dict[str, Any] = {"title": title, "module": module_name, "measured_at": now_iso()}
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return {**base, "status": "not built yet", "summary": []}
        return {**base, "status": "error", "error": traceback.format_exc(), "duration_s": 0.0}
    except Exception:  # a module that exists but does not import is a failure, not "not built yet"
        return {**base, "status": "error", "error": traceback.format_exc(), "duration_s": 0.0}
    try:
        result = await module.run(ctx)
    except Exception:  # one broken benchmark must not hide the others' numbers
        return {**base, "status": "error", "error": traceback.format_exc(), "duration_s": time.monotonic() - started}
    return {
        **base,
        "title": result.get("title", title),
        **result,
        "status": "ok",
        "duration_s": time.monotonic() - started,
    }


def print_result(name: str, result: dict[str, Any]) -> None:
    status = result["status"]
    if status == "not built yet":
        print(f"{name}: not built yet ({result['module']})", flush=True)
    elif status == "error":
        print(f"{name}: ERROR\n{result['error']}", flush=True)
    else:
        for line in result.get("summary", []):
            print(line["text"], flush=True)


def host_info() -> dict[str, Any]:
    from services.devkit.kafka import kafka_version

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiokafka": version("aiokafka"),
        "kafka": kafka_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


PROBE_ROUNDS = 5


def host_probe() -> dict[str, float]:
    """A fixed CPU workload timed in this process, best of PROBE_ROUNDS, in microseconds: the same work
    in every run, so runs can be compared by it (this shared 2-core machine has taken up to 2.7x the
    CPU for the same work within an hour, which no load average shows). `python`: building,
    joining and hashing small strings and dicts, as the services' handlers do; `pydantic`: validating the
    router bench's ~5 KB ConversationExtracted from JSON."""
    from bench.router import record
    from schemas.events import ConversationExtracted

    raw = record(1)

    def python_work() -> None:
        rows = [{"id": f"conv-{i:05d}", "text": "word " * (i % 7)} for i in range(2000)]
        hash(tuple(sorted((row["id"], len(row["text"])) for row in rows)))
        "/".join(f"{row['id']}:{row['text'][:4]}" for row in rows)

    def pydantic_work() -> None:
        for _ in range(50):
            ConversationExtracted.model_validate_json(raw)

    probe = {}
    for name, work in (("python", python_work), ("pydantic", pydantic_work)):
        times = []
        for _ in range(PROBE_ROUNDS):
            started = time.process_time()
            work()
            times.append(time.process_time() - started)
        probe[f"{name}_us"] = round(min(times) * 1e6, 1)
    return probe


def run_all(
    selected: list[tuple[str, str, str]], args: argparse.Namespace, work_dir: Path, run: dict[str, Any]
) -> None:
    from services.devkit.kafka import KafkaCluster

    for name, module_name, title in selected:
        print(f"── {name}: {title}", flush=True)
        cluster = KafkaCluster(size=1).start()
        try:
            print(f"  broker at {cluster.bootstrap_servers}", flush=True)
            ctx = BenchContext(
                KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
                args.results_dir,
                work_dir,
                quick=args.quick,
                repeats=args.repeats,
            )
            result = asyncio.run(_run_and_close(name, module_name, title, ctx))
        finally:
            cluster.stop()
        print_result(name, result)
        run["benchmarks"][name] = result
        report.write(run, args.results_dir)  # after each one: a later crash keeps what was measured


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller record counts")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per number (best or median)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def select(only: str) -> list[tuple[str, str, str]]:
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {b[0] for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if not names or b[0] in names]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, module_name, title in BENCHMARKS:
            print(f"{name:12} {module_name:24} {title}")
        return 0
    selected = select(args.only)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work_dir = Path(tempfile.mkdtemp(prefix="postcall-bench-"))
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    run: dict[str, Any] = {
        "started_at": now_iso(),
        "command": command.strip(),
        "quick": args.quick,
        "host": host_info(),
        "probe_start": host_probe(),
        "benchmarks": {},
    }
    print(f"results in {args.results_dir}", flush=True)
    try:
        run_all(selected, args, work_dir, run)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    run["finished_at"] = now_iso()
    run["probe_end"] = host_probe()
    report.write(run, args.results_dir)
    print(f"report: {args.results_dir / 'REPORT.md'}", flush=True)
    return 1 if any(r["status"] == "error" for r in run["benchmarks"].values()) else 0


async def _run_and_close(name: str, module_name: str, title: str, ctx: BenchContext) -> dict[str, Any]:
    try:
        return await run_one(name, module_name, title, ctx)
    finally:
        await ctx.close()


if __name__ == "__main__":
    sys.exit(main())
