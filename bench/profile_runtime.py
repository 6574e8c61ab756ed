"""Where the runtime's pass-through spends its CPU: cProfile, grouped by layer.

    python -m bench.profile_runtime                       # private broker, 1 KB x 20,000, unordered
    python -m bench.profile_runtime --size 20480 --records 5000 --mode key --max-in-flight 256
    python -m bench.profile_runtime --bootstrap 127.0.0.1:9092 --top 40

Prints the CPU seconds per layer (aiokafka producer / consumer, asyncio, pydantic, the runtime, codec,
metrics, ...) and the top functions by own time. cProfile slows everything by ~2x and favours many
small calls, so read the shares, not the absolute numbers; throughput printed here is not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import pstats
import tempfile
from collections import defaultdict
from pathlib import Path

from bench import runtime as passthrough
from bench.context import BenchContext
from services.common.runtime import GC_THRESHOLDS
from services.common.settings import KafkaSettings

LAYERS = [
    ("aiokafka producer", "aiokafka/producer"),
    ("aiokafka consumer", "aiokafka/consumer"),
    ("aiokafka protocol/client", "aiokafka/"),
    ("kafka wire (socket send/recv)", "_socket"),
    ("waiting for I/O (epoll)", "select.epoll"),
    ("asyncio scheduling", "asyncio/"),
    ("pydantic", "pydantic"),
    ("prometheus metrics", "prometheus_client"),
    ("runtime (services/common/runtime.py)", "services/common/runtime.py"),
    ("codec + retry headers", "services/common/"),
    ("uuid / datetime / contextvars", "uuid.py"),
    ("bench harness", "/bench/"),
]


def layer_of(filename: str, function: str) -> str:
    where = f"{filename}:{function}"
    for name, needle in LAYERS:
        if needle in where:
            return name
    return "other (builtins, stdlib)"


def breakdown(stats: pstats.Stats) -> list[tuple[str, float]]:
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        totals[layer_of(filename, function)] += row[2]  # own time
    return sorted(totals.items(), key=lambda kv: -kv[1])


async def profile(args: argparse.Namespace, bootstrap: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="postcall-profile-"))
    ctx = BenchContext(KafkaSettings(bootstrap_servers=bootstrap), work, work)
    try:
        source = await ctx.topic("profile", passthrough.PARTITIONS)
        await ctx.produce_blobs(source, args.records, args.size, partitions=passthrough.PARTITIONS, keys=1000)
        profiler = cProfile.Profile()
        profiler.enable()
        rate = await passthrough.measure(ctx, args.mode, source, args.records, args.max_in_flight)
        profiler.disable()
    finally:
        await ctx.close()
    stats = pstats.Stats(profiler)
    total = sum(seconds for _, seconds in breakdown(stats))
    print(f"{args.mode} {args.size} B x {args.records:,}: {rate:,.0f} rec/s under cProfile; CPU by layer:")
    for name, seconds in breakdown(stats):
        print(
            f"  {name:40} {seconds:6.2f} s  {100 * seconds / total:5.1f} %  {1e6 * seconds / args.records:6.1f} us/rec"
        )
    stats.sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--mode", choices=["unordered", "key", "bare"], default="unordered")
    parser.add_argument("--max-in-flight", type=int, default=passthrough.MAX_IN_FLIGHT)
    parser.add_argument("--bootstrap", help="use this broker instead of starting a private one")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--default-gc", action="store_true", help="keep Python's GC thresholds (services raise them)")
    args = parser.parse_args()
    if not args.default_gc:
        gc.set_threshold(*GC_THRESHOLDS)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if args.bootstrap:
        asyncio.run(profile(args, args.bootstrap))
        return
    from services.devkit.kafka import KafkaCluster

    with KafkaCluster(size=1) as cluster:
        asyncio.run(profile(args, cluster.bootstrap_servers))


if __name__ == "__main__":
    main()
