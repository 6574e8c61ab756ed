"""The runtime's own cost: a pass-through service on the runtime against a bare aiokafka loop.

Both read the same pre-produced records (same topic, same partitions, fresh consumer group each time)
and write each one to a fresh output topic with the same idempotent acks=all producer:

* bare: getmany -> send every record -> await the sends -> commit the batch (no parsing at all);
* runtime: Runtime(handler = return [blob], routed to the sink), ordering "unordered" and "key", the
  window a compute-only route declares (the router's max_in_flight, 2048: records waiting only for
  their outputs' acks are cheap; the producer sends one batch per partition per request, so at 1 KB a
  window of 256 carried about 130 records per request and the window, not the CPU, bounded the
  runtime, and at 1024 requests went out a third full; at the generic default of 64, to 0.2-0.4 of
  bare); it validates each record with pydantic,
  encodes the output and adds CloudEvents headers.

The pass-through only computes, so its route is compute-only and the runtime runs it on the fast path:
one task per polled partition batch, records in offset order. There the ordering setting changes
nothing (partition order holds key order), so the judged "unordered" and "key" lines measure one and
the same path. The one-record path (a task per record, where "unordered" and "key" differ) is what
every service doing I/O runs (the extractor, the dispatcher); the "one record at a time" lines measure
it, on the same records, with a route's default window (64), reported beside the goal, not judged.

Throughput = records / (time the output topic holds them all - time the first record was read), so
group joins and start-up are not counted. A runtime run counts only if, once stopped, its group has
committed every input and the output topic holds exactly one record per input (a record processed twice
would have stopped the clock early). The modes are interleaved (the order rotated), `ctx.repeats`
times, and the best of each is quoted. Goal: runtime >= 0.8 x bare.

Run length: 100,000 records at 1 KB and 12,000 at 20 KB, the same for every mode, each run about 1.5-2 s.
With 20,000 and 5,000 (until 2026-12-05) a 1 KB run lasted about 0.3 s: the end is seen by polling the
output topic's end offsets every 20 ms, and one scheduling hiccup of the shared machine moved a run by
10-30 %, so best-of-3 picked the luckiest sample of either side (the bare loop's 1 KB samples in one quiet
run: 71k, 71k and 81k rec/s).
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer

from bench.context import BenchContext, Blob
from bench.measure import best_of, info_line, median_of, ratio_line
from schemas.routes import ROUTER, Output, Route
from schemas.topics import Stream
from services.common.api import Context, Event, Service
from services.common.kafka import producer as make_producer
from services.common.runtime import GC_THRESHOLDS, Runtime
from services.common.settings import RuntimeSettings

PARTITIONS = 3
GOAL = 0.8
MAX_IN_FLIGHT = ROUTER.max_in_flight  # a compute-only route's window (the bare loop's is a whole poll)
# the one-record path's window: a route's default (the extractor's). Its CPU per record grew with the window
# (1 KB, 2026-12-06: ~60 us at 64, ~85-115 at 1024) until services.common.kafka.Sender (f2d6ef8; ~55 and ~50 after)
PER_RECORD_MAX_IN_FLIGHT = Route.max_in_flight
PER_RECORD = " per record"  # a mode's suffix: the runtime's one-record path, not the fast path
MODES = ("bare", "confluent", "unordered", "key", "unordered per record", "key per record")
SERIES = {
    "bare": "bare aiokafka",
    "confluent": "bare confluent-kafka (librdkafka)",
    "unordered": "runtime unordered",
    "key": "runtime key",
    "unordered per record": "runtime unordered, one record at a time",
    "key per record": "runtime key, one record at a time",
}


def sizes(ctx: BenchContext) -> list[tuple[str, int, int]]:
    """(label, record bytes, record count)."""
    return [("1KB", 1024, ctx.scaled(100_000, 20_000)), ("20KB", 20 * 1024, ctx.scaled(12_000, 3_000))]


async def run(ctx: BenchContext) -> dict[str, Any]:
    # services run under serve(), which raises the GC thresholds (runtime.tune_gc); do the same for both
    # sides here, and restore the harness's own setting afterwards
    saved = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return await _run(ctx)
    finally:
        gc.set_threshold(*saved)


async def _run(ctx: BenchContext) -> dict[str, Any]:
    summary: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    best_by_mode: dict[str, list[float]] = {m: [] for m in MODES}
    for label, size, n in sizes(ctx):
        rates, cpu = await measure_size(ctx, label, size, n)
        best = {m: best_of(s) for m, s in rates.items()}
        summary.append(
            info_line(
                f"bare loops {label}",
                f"aiokafka {best['bare']:,.0f} rec/s vs confluent-kafka (librdkafka) {best['confluent']:,.0f} rec/s "
                f"= {best['bare'] / best['confluent']:.2f}; runtime unordered / confluent-kafka "
                f"{best['unordered'] / best['confluent']:.2f}",
            )
        )
        for mode in ("unordered", "key"):
            summary.append(
                ratio_line(
                    f"runtime {label} {mode}",
                    best[mode],
                    "bare",
                    best["bare"],
                    goal=GOAL,
                    samples=rates[mode],
                    baseline_samples=rates["bare"],
                )
            )
        for mode in ("unordered per record", "key per record"):  # the path of every service that does I/O
            summary.append(
                ratio_line(
                    f"runtime {label} {mode.removesuffix(PER_RECORD)}, one record at a time (not the fast path)",
                    best[mode],
                    "bare",
                    best["bare"],
                    samples=rates[mode],
                    baseline_samples=rates["bare"],
                )
            )
        cpu_us = {m: 1e6 * median_of(c) / n for m, c in cpu.items()}
        summary.append(info_line(f"CPU per record {label} (median)", _cpu_text(cpu_us)))
        data[label] = {
            "record_bytes": size,
            "records": n,
            "samples_rec_s": rates,
            "best_rec_s": best,
            "cpu_us_per_record_median": cpu_us,
        }
        for mode in MODES:
            best_by_mode[mode].append(best[mode])
    chart = {
        "id": "throughput",
        "kind": "bar",
        "title": "Pass-through throughput (best of runs)",
        "ylabel": "records/s",
        "categories": [f"{label} x {n:,}" for label, _, n in sizes(ctx)],
        "series": {SERIES[m]: best_by_mode[m] for m in MODES},
    }
    defaults = RuntimeSettings()
    notes = [
        f"{PARTITIONS} partitions, records keyed over 1,000 keys, runtime defaults but the window of a "
        f"compute-only route (max_in_flight {MAX_IN_FLIGHT} as the router's, the fast path; commit every "
        f"{defaults.commit_interval_seconds:g} s; the fast path ignores the ordering setting, so 'unordered' and "
        f"'key' are one path; the one-record path, which services doing I/O run, beside them with a window of "
        f"{PER_RECORD_MAX_IN_FLIGHT}, not judged), producer from "
        f"services.common.kafka.producer and the services' GC thresholds {GC_THRESHOLDS} for both; "
        f"best of {ctx.repeats} interleaved runs. CPU per record is "
        "this process's CPU time (consumer, producer and the harness's end-offset poller) over the records. "
        "`python -m bench.profile_runtime` shows where the runtime's CPU goes."
    ]
    return {"summary": summary, "data": data, "charts": [chart], "notes": notes}


def _cpu_text(cpu_us: dict[str, float]) -> str:
    """'bare 27 us, unordered 75 us (2.8x bare), key 80 us (3.0x bare)': CPU time is less disturbed by other
    load on the machine than wall-clock throughput is."""
    bare = cpu_us["bare"]
    return ", ".join(f"{m} {v:.0f} us" + (f" ({v / bare:.1f}x bare)" if m != "bare" else "") for m, v in cpu_us.items())


async def measure_size(
    ctx: BenchContext, label: str, size: int, n: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Records/s and CPU seconds of every mode over one pre-produced topic, `ctx.repeats` times each."""
    source = await ctx.topic(f"rt-in-{label}", PARTITIONS)
    await ctx.produce_blobs(source, n, size, partitions=PARTITIONS, keys=1000)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(ctx.repeats):
        turn = rep % len(MODES)
        for mode in MODES[turn:] + MODES[:turn]:  # rotate the order: drift hits every mode alike
            started = time.process_time()
            rate = await measure(ctx, mode, source, n, window(mode))
            cpu[mode].append(time.process_time() - started)
            rates[mode].append(rate)
            ctx.log(f"{label} {mode}: {rate:,.0f} rec/s")
    return rates, cpu


def window(mode: str) -> int:
    """max_in_flight of a mode: a compute-only route's on the fast path, the generic default one record at a time."""
    return PER_RECORD_MAX_IN_FLIGHT if mode.endswith(PER_RECORD) else MAX_IN_FLIGHT


class Loop(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


async def measure(ctx: BenchContext, mode: str, source: str, n: int, max_in_flight: int = MAX_IN_FLIGHT) -> float:
    """Records/s of one pass over `source` (n records) by the bare loop or the runtime in `mode`."""
    sink = await ctx.topic("rt-out", PARTITIONS)
    first_read: list[float] = []
    loop: Loop
    if mode == "bare":
        loop = BareLoop(ctx, source, sink, first_read)
    elif mode == "confluent":
        loop = ConfluentLoop(ctx, source, sink, first_read)
    else:
        loop = await passthrough_runtime(ctx, mode, source, sink, first_read, max_in_flight)
    task = asyncio.create_task(loop.run())
    try:
        done_at = await ctx.wait_for_count(sink, n, timeout=300)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 60)
    if isinstance(loop, Runtime):  # the side whose duplicates would flatter the ratio: each input once
        await ctx.each_once(loop.group_id, source, n, [sink], n)
    return n / (done_at - first_read[0])


class BareLoop:
    """What a hand-written aiokafka service does: getmany, send all, await the acks, commit the batch."""

    def __init__(self, ctx: BenchContext, source: str, sink: str, first_read: list[float]) -> None:
        self.ctx, self.source, self.sink, self.first_read = ctx, source, sink, first_read
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.source,
            **self.ctx.kafka.client_options(),
            group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024 + 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        producer = make_producer(self.ctx.kafka)
        await producer.start()
        await consumer.start()
        try:
            while not self.stopping:
                batch = await consumer.getmany(timeout_ms=200)
                if batch and not self.first_read:
                    self.first_read.append(time.monotonic())
                sends = [
                    await producer.send(self.sink, r.value, key=r.key, headers=r.headers)
                    for records in batch.values()
                    for r in records
                ]
                await asyncio.gather(*sends)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()


class ConfluentLoop:
    """The same bare loop on confluent-kafka (librdkafka, C): consume a batch, produce every record,
    flush (acks=all, idempotent), commit synchronously. It runs in a thread: the client blocks."""

    def __init__(self, ctx: BenchContext, source: str, sink: str, first_read: list[float]) -> None:
        self.ctx, self.source, self.sink, self.first_read = ctx, source, sink, first_read
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> None:
        await asyncio.to_thread(self._run)

    def _run(self) -> None:
        from confluent_kafka import Consumer, Producer  # bench extra: the baseline only

        common = {"bootstrap.servers": self.ctx.kafka.bootstrap_servers}
        consumer = Consumer({
            **common, "group.id": f"bench-confluent-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "max.partition.fetch.bytes": 4 * 1024 * 1024 + 1024,
        })  # fmt: skip
        producer = Producer({**common, "acks": "all", "enable.idempotence": True, "linger.ms": 1})
        consumer.subscribe([self.source])
        try:
            while not self.stopping:
                batch = consumer.consume(num_messages=1000, timeout=0.2)
                if not batch:
                    continue
                if not self.first_read:
                    self.first_read.append(time.monotonic())
                for m in batch:
                    if m.error() is not None:
                        continue
                    producer.produce(self.sink, m.value(), m.key(), headers=m.headers())
                    producer.poll(0)
                producer.flush()
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
            producer.flush()


class PassThrough:
    """The trivial handler: the same payload model, returned (the route sends it to the sink, input key)."""

    def __init__(self, first_read: list[float]) -> None:
        self.first_read = first_read

    async def handle(self, blob: Blob, ctx: Context) -> Sequence[Event]:
        if not self.first_read:
            self.first_read.append(time.monotonic())
        return [blob]


def passthrough_route(service: str, source: str, sink: str) -> Route:
    return Route(
        service,
        "pass-through benchmark",
        consumes=(Stream.plain(source, Blob),),
        produces=(Output(Stream.plain(sink, Blob), key="input"),),
        retry_delays_seconds=(1.0,),
        compute_only=True,  # the pass-through only computes: the runtime's fast path
        max_in_flight=MAX_IN_FLIGHT,
    )


async def passthrough_runtime(
    ctx: BenchContext, mode: str, source: str, sink: str, first_read: list[float], max_in_flight: int
) -> Runtime:
    route = passthrough_route(f"bench{uuid.uuid4().hex[:8]}", source, sink)
    await ctx.create_topics([*route.retry_topics, route.dead_letter_topic])
    settings = passthrough_settings(route, mode, max_in_flight)
    return Runtime(Service(route, PassThrough(first_read).handle), kafka=ctx.kafka, settings=settings)


def passthrough_settings(route: Route, mode: str, max_in_flight: int) -> RuntimeSettings:
    """The route's defaults with the mode's ordering; "... per record": the one-record path, not the fast path."""
    chosen = {
        "retry_delays_seconds": [1.0],
        "max_in_flight": max_in_flight,
        "ordering": mode.removesuffix(PER_RECORD),
        "fast_path": not mode.endswith(PER_RECORD),
        "metrics_port": 0,
    }
    return RuntimeSettings(**route.runtime_defaults() | chosen)
