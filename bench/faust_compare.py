"""faust-streaming vs our runtime, the same router-like loop on the same broker, in one run.

Two processes run the same step (bench.stream_step.decide over ConversationExtracted records, 16 at a
time): `python -m bench.faust_router worker` (a faust agent, concurrency 16) and
`python -m bench.runtime_router` (our runtime, key ordering, max_in_flight 16). Measured:

* throughput: N pre-produced records on 3 partitions; records/s from the first to the last output
  record's timestamp (start-up and group join excluded), best of `ctx.repeats`, interleaved;
* kill -9 with a slow head record: on a 1-partition topic, a record that sleeps 30 s, then 200 fast
  ones. When the fast ones are all out and a commit interval has passed, read the group's committed
  offset, kill -9 the process (the slow record still running), restart it without the slow sleep,
  produce a sentinel record and wait for it. Was the slow record ever processed? faust issue #606
  predicts it is lost (the commit passed it); our runtime must process it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.context import BenchContext
from bench.measure import best_of, check_line, info_line, median_of, ratio_line
from bench.procs import Proc
from bench.stream_step import records
from schemas.topics import dead_letter_topic, retry_topic
from services.devkit.kafka import free_port

CONCURRENCY = 16
THROUGHPUT_PARTITIONS = 3
FAST = 200
SLOW_SECONDS = 30.0
GOAL = 0.8  # the runtime's loop at least 0.8x faust's


@dataclass(frozen=True)
class Stack:
    """How to start one of the two apps for a consumer group."""

    name: str
    module: str
    args: tuple[str, ...]

    def group_id(self, group: str) -> str:
        return group if self.name == "faust" else f"postcall-{group}"


FAUST = Stack("faust", "bench.faust_router", ("worker", "-l", "info"))
RUNTIME = Stack("runtime", "bench.runtime_router", ())
STACKS = (FAUST, RUNTIME)


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(5000, 1500)
    payloads = records(n)
    samples: dict[str, list[float]] = {s.name: [] for s in STACKS}
    cpu: dict[str, list[float]] = {s.name: [] for s in STACKS}
    for rep in range(ctx.repeats):
        for stack in STACKS if rep % 2 == 0 else STACKS[::-1]:
            rate, cpu_per_record = await throughput(ctx, stack, payloads)
            samples[stack.name].append(rate)
            cpu[stack.name].append(cpu_per_record)
            ctx.log(f"{stack.name} router loop: {rate:,.0f} rec/s, {cpu_per_record * 1e6:,.0f} us CPU per record")
    kills = {s.name: await kill9(ctx, s) for s in STACKS}
    best = {name: best_of(v) for name, v in samples.items()}
    summary = [
        ratio_line(
            "router loop on runtime",
            best["runtime"],
            "faust agent",
            best["faust"],
            goal=GOAL,
            samples=samples["runtime"],
            baseline_samples=samples["faust"],
        ),
    ]
    for name, k in kills.items():
        detail = (
            f"committed offset before kill {k['committed_before_kill']}, slow record at offset 0; "
            f"{k['redelivered']} fast records re-processed after restart"
        )
        summary.append(
            check_line(f"{name} kill -9: slow head record processed after restart", k["slow_processed"], detail)
        )
    cpu_us = {name: 1e6 * median_of(v) for name, v in cpu.items()}
    summary.append(
        info_line("CPU per record (median)", f"faust {cpu_us['faust']:,.0f} us, runtime {cpu_us['runtime']:,.0f} us")
    )
    summary.append(info_line("record size", f"{sum(len(v) for _, v in payloads) / n:,.0f} bytes on average"))
    chart = {
        "id": "throughput",
        "kind": "bar",
        "title": "Router-like loop, concurrency 16 (best of runs)",
        "ylabel": "records/s",
        "categories": [f"{n:,} ConversationExtracted"],
        "series": {"faust-streaming agent": [best["faust"]], "postcall runtime": [best["runtime"]]},
    }
    notes = [
        f"faust-streaming {_version('faust-streaming')} (aiokafka driver), agent concurrency {CONCURRENCY}, "
        f"default commit interval; runtime: key ordering, max_in_flight {CONCURRENCY}, commit every 1 s. "
        f"Throughput: {n:,} records on {THROUGHPUT_PARTITIONS} partitions, best of {ctx.repeats}. "
        f"Kill -9: 1 partition, a {SLOW_SECONDS:.0f} s head record and {FAST} fast records. "
        "The decision this informs: docs/adr/0001-stream-runtime.md."
    ]
    data = {"records": n, "samples_rec_s": samples, "best_rec_s": best, "cpu_us_per_record": cpu_us, "kill9": kills}
    return {"summary": summary, "charts": [chart], "data": data, "notes": notes}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ── starting the apps ─────────────────────────────────────────────────────────────────────────


async def prepare(ctx: BenchContext, stack: Stack, partitions: int) -> dict[str, str]:
    """Fresh topics and the environment of one app's process."""
    group = f"bench{stack.name}{uuid.uuid4().hex[:8]}"
    source, sink = await ctx.topic("router-in", partitions), await ctx.topic("router-out", partitions)
    if stack is RUNTIME:
        await ctx.create_topics([retry_topic(group, 1), dead_letter_topic(group)])
    datadir = ctx.work_dir / f"faust-{group}"
    datadir.mkdir(parents=True, exist_ok=True)
    return {
        "BENCH_BOOTSTRAP_SERVERS": ctx.bootstrap_servers,
        "BENCH_GROUP": group,
        "BENCH_INPUT_TOPIC": source,
        "BENCH_OUTPUT_TOPIC": sink,
        "BENCH_CONCURRENCY": str(CONCURRENCY),
        "BENCH_WEB_PORT": str(free_port()),
        "BENCH_DATADIR": str(datadir),
        "BENCH_SLOW_IDS": "",
        "BENCH_SLOW_SECONDS": str(SLOW_SECONDS),
        # a smoke run (`make test`): the killed app's group seat is given up after 6 s (the broker's minimum)
        "BENCH_SESSION_TIMEOUT_SECONDS": "6" if ctx.smoke else "10",
    }


def start(ctx: BenchContext, stack: Stack, env: dict[str, str]) -> Proc:
    return ctx.spawn(stack.module, env, stack.args)


async def _wait_for(ctx: BenchContext, proc: Proc, topic: str, n: int, timeout: float) -> None:
    try:
        await ctx.wait_for_count(topic, n, timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; process log tail:\n{proc.output()[-3000:]}") from None


# ── throughput ────────────────────────────────────────────────────────────────────────────────


async def throughput(ctx: BenchContext, stack: Stack, payloads: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(records/s between the first and the last output, the process's CPU seconds per record meanwhile)."""
    env = await prepare(ctx, stack, THROUGHPUT_PARTITIONS)
    await ctx.produce_raw(env["BENCH_INPUT_TOPIC"], ((k, v, None) for k, v in payloads))
    proc = start(ctx, stack, env)
    try:
        await _wait_for(ctx, proc, env["BENCH_OUTPUT_TOPIC"], 1, timeout=120)
        cpu_started = cpu_seconds(proc.pid)
        await _wait_for(ctx, proc, env["BENCH_OUTPUT_TOPIC"], len(payloads), timeout=300)
        cpu = cpu_seconds(proc.pid) - cpu_started
    finally:
        proc.term(timeout=60)
    stamps = sorted(ts for _, _, ts in await ctx.read_values(env["BENCH_OUTPUT_TOPIC"]))
    return (len(stamps) - 1) / max(0.001, (stamps[-1] - stamps[0]) / 1000), cpu / (len(payloads) - 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ── kill -9 with a slow head record ───────────────────────────────────────────────────────────


async def kill9(ctx: BenchContext, stack: Stack) -> dict[str, Any]:
    env = await prepare(ctx, stack, 1)
    source, sink, group = env["BENCH_INPUT_TOPIC"], env["BENCH_OUTPUT_TOPIC"], env["BENCH_GROUP"]
    await ctx.produce_raw(source, ((k, v, 0) for k, v in records(FAST + 1, ["slow-head"])))
    started = time.monotonic()
    first = start(ctx, stack, {**env, "BENCH_SLOW_IDS": "slow-head"})
    try:
        await _wait_for(ctx, first, sink, FAST, timeout=90)
        committed = await _settled_commit(ctx, stack.group_id(group), source, started + SLOW_SECONDS - 5)
        if time.monotonic() - started > SLOW_SECONDS - 2 or await ctx.count(sink) > FAST:
            raise RuntimeError(f"{stack.name}: the slow record finished before the kill; the test proves nothing")
        first.kill9()
    finally:
        first.stop()
    ctx.log(f"{stack.name}: killed with the slow record running; committed offset was {committed}")
    second = start(ctx, stack, env)
    try:
        await ctx.produce_raw(source, ((k, v, 0) for k, v in records(1, ["sentinel"])))
        await _wait_for_ids(ctx, second, sink, {"sentinel"}, timeout=120)
        await asyncio.sleep(
            0.5 if ctx.smoke else 3.0
        )  # anything the restart re-reads before the sentinel is out by now
        seen = await _event_ids(ctx, sink)
    finally:
        second.term(timeout=60)
    after_restart = len(seen) - FAST
    outcome = {
        "slow_processed": "slow-head" in seen,
        "committed_before_kill": committed,
        "outputs_before_kill": FAST,
        "outputs_after_restart": after_restart,
        "redelivered": sum(1 for i in seen[FAST:] if i not in ("slow-head", "sentinel")),
    }
    ctx.log(f"{stack.name}: {outcome}")
    return outcome


async def _settled_commit(ctx: BenchContext, group: str, topic: str, deadline: float) -> int | None:
    """The group's committed offset of partition 0 once it has been set and unchanged for 3.5 s (longer
    than faust's 2.8 s and the runtime's 1 s commit interval), or whatever it is at the deadline."""
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = (await ctx.committed(group, topic)).get(0)
        if now != last:
            last, since = now, time.monotonic()
        elif now is not None and time.monotonic() - since >= 3.5:
            break
        await asyncio.sleep(0.5)
    return last


async def _event_ids(ctx: BenchContext, topic: str) -> list[str]:
    return [orjson.loads(v)["event_id"] for _, v, _ in await ctx.read_values(topic)]


async def _wait_for_ids(ctx: BenchContext, proc: Proc, topic: str, ids: set[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = await _event_ids(ctx, topic)
        if ids <= set(seen):
            return seen
        if time.monotonic() > deadline or not proc.alive():
            raise TimeoutError(f"{sorted(ids - set(seen))} not out after restart; log tail:\n{proc.output()[-3000:]}")
        await asyncio.sleep(0.5)
