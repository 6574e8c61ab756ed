"""How throughput grows from 1 to 4 runtime instances when the handler is slow (LLM-like).

Each instance is a separate process (tests.support.worker, the runtime's test service) whose handler
sleeps 50 ms per record with max_in_flight 8, so one instance is bounded at about 8 / 0.05 = 160
records/s. For k = 1..4: start k instances on a fresh 8-partition topic, wait until the group is
stable (the instances' logs show the 8 partitions split between them), produce N records and time
until the output topic holds N. Goal (issue 13): 4 instances >= 3.5x one instance. The counts run in
turn, in reverse order every other repeat (until 2026-12-06 one instance always ran first and four last).

The clock stops at N outputs, so a record processed twice (say a rebalance in the middle of a run
handing a partition over before its offsets were committed) would end it early and flatter the rate.
Every record has its own id, and once the instances have stopped the output topic must hold exactly N
outputs of N distinct records; a run where it does not is an error, not a number.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson

from bench.context import BenchContext
from bench.measure import best_of, info_line, ratio_line
from bench.procs import Proc
from schemas.topics import dead_letter_topic, retry_topic

PARTITIONS = 8
INSTANCES = (1, 2, 3, 4)
SLEEP_SECONDS = 0.05
MAX_IN_FLIGHT = 8
GOAL_AT_4 = 3.5  # issue 13: scaling 1 -> 4 instances, 8 partitions


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(2400, 800)
    repeats = 1 if ctx.quick else min(ctx.repeats, 2)
    # a smoke run (`make test`): one instance and a group of two (every step of the setup, 3 processes, not 10)
    instances = (1, 2) if ctx.smoke else INSTANCES
    samples: dict[int, list[float]] = {k: [] for k in instances}
    for rep in range(repeats):
        for k in instances if rep % 2 == 0 else instances[::-1]:  # drift hits every count alike
            rate = await measure(ctx, k, n)
            samples[k].append(rate)
            ctx.log(f"{k} instance(s): {rate:,.0f} rec/s")
    rates = [best_of(samples[k]) for k in instances]
    single = rates[0]
    bound = MAX_IN_FLIGHT / SLEEP_SECONDS
    summary = [info_line("scaling 1 instance", f"{single:,.0f} rec/s (bound {bound:,.0f} = in-flight / sleep)")]
    for k, rate in zip(instances[1:], rates[1:], strict=True):
        summary.append(
            ratio_line(f"scaling {k} instances", rate, "1 instance", single, goal=GOAL_AT_4 if k == 4 else None)
        )
    charts = [
        _chart(
            "throughput", "Throughput by instance count", "records/s", instances, rates, [k * single for k in instances]
        ),
        _chart(
            "speedup",
            "Speed-up over one instance",
            "x one instance",
            instances,
            [r / single for r in rates],
            list(instances),
        ),
    ]
    notes = [
        f"{n:,} records on {PARTITIONS} partitions; handler sleeps {SLEEP_SECONDS * 1000:.0f} ms; max_in_flight "
        f"{MAX_IN_FLIGHT} per instance; every instance is a process on the same 2-core machine as the broker; "
        f"best of {repeats}. Time runs from the first record produced to the last output on the topic; "
        "a run counts only if the topic then holds exactly one output per record (none processed twice)."
    ]
    data = {"records": n, "samples_rec_s": {str(k): v for k, v in samples.items()}, "best_rec_s": rates}
    return {"summary": summary, "charts": charts, "data": data, "notes": notes}


def _chart(
    chart_id: str, title: str, ylabel: str, instances: tuple[int, ...], measured: list[float], ideal: list[float]
) -> dict[str, Any]:
    return {
        "id": chart_id,
        "kind": "line",
        "title": title,
        "xlabel": "instances",
        "ylabel": ylabel,
        "x": list(instances),
        "series": {"measured": measured, "ideal (linear)": ideal},
    }


async def measure(ctx: BenchContext, k: int, n: int) -> float:
    service = f"scale{uuid.uuid4().hex[:8]}"
    source, sink = await ctx.topic("scale-in", PARTITIONS), await ctx.topic("scale-out", PARTITIONS)
    await ctx.create_topics([retry_topic(service, 1), dead_letter_topic(service)])
    env = {
        "WORKER_KAFKA__BOOTSTRAP_SERVERS": ctx.bootstrap_servers,
        "WORKER_SERVICE": service,
        "WORKER_INPUT_TOPIC": source,
        "WORKER_OUTPUT_TOPIC": sink,
        "WORKER_RUNTIME__METRICS_PORT": "0",
        "WORKER_RUNTIME__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "WORKER_RUNTIME__RETRY_DELAYS_SECONDS": "[1.0]",
        "WORKER_RUNTIME__COMMIT_INTERVAL_SECONDS": "0.5",
    }
    procs = [ctx.spawn("tests.support.worker", env) for _ in range(k)]
    try:
        await wait_until_balanced(procs, source, timeout=90)
        jobs = [orjson.dumps({"id": f"r{i}", "sleep": SLEEP_SECONDS}) for i in range(n)]
        started = time.monotonic()
        await ctx.produce_raw(source, ((f"k{i}".encode(), job, i % PARTITIONS) for i, job in enumerate(jobs)))
        done = await ctx.wait_for_count(sink, n, timeout=n * SLEEP_SECONDS + 120)
    finally:
        for proc in procs:
            proc.term(timeout=60)
    await each_once(ctx, sink, n, k)
    return n / (done - started)


async def each_once(ctx: BenchContext, sink: str, n: int, k: int) -> None:
    """RuntimeError unless `sink` holds exactly n outputs of n distinct records: the clock stopped at the
    n-th output, so only then were the outputs it counted n different records."""
    ids = [orjson.loads(value)["id"] for _, value, _ in await ctx.read_values(sink)]
    distinct = len(set(ids))
    if len(ids) != n or distinct != n:
        raise RuntimeError(
            f"{k} instance(s): {len(ids)} outputs of {distinct} distinct records for {n} records produced; "
            "a record processed twice (a rebalance in the middle of the run?) ends the clock early, so the "
            "run is not counted"
        )


async def wait_until_balanced(procs: list[Proc], topic: str, timeout: float) -> None:
    """Until every instance owns some partitions of `topic` and together they own each one exactly once,
    twice in a row one second apart (a later joiner would trigger another rebalance)."""
    deadline = time.monotonic() + timeout
    stable_checks = 0
    while stable_checks < 2:
        if time.monotonic() > deadline:
            now = [sorted(assigned(p, topic)) for p in procs]
            raise TimeoutError(f"group not balanced after {timeout:.0f}s: {now}")
        if any(not p.alive() for p in procs):
            raise RuntimeError("an instance exited:\n" + next(p for p in procs if not p.alive()).output()[-3000:])
        owned = [assigned(p, topic) for p in procs]
        balanced = all(owned) and sum(map(len, owned)) == PARTITIONS == len(set().union(*owned))
        stable_checks = stable_checks + 1 if balanced else 0
        await asyncio.sleep(1.0)


def assigned(proc: Proc, topic: str) -> set[int]:
    """The partitions of `topic` a runtime process owns now, from its JSON log lines."""
    owned: set[int] = set()
    for line in proc.output().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("msg") not in ("partitions assigned", "partitions revoked"):
            continue
        parts = {int(p.rsplit(":", 1)[1]) for p in entry.get("partitions", []) if p.rsplit(":", 1)[0] == topic}
        owned = owned | parts if entry["msg"] == "partitions assigned" else owned - parts
    return owned
