"""The Kafka client itself: bare consume+produce loops on aiokafka and on confluent-kafka (librdkafka).

Three loops read the same pre-produced records (fresh consumer group each time) and write each one,
with its headers, to a fresh output topic (acks=all, idempotent, linger 1 ms), then commit the batch:

* aiokafka: bench.runtime.BareLoop (getmany -> send every record -> await the acks -> commit);
* confluent-kafka, thread: bench.runtime.ConfluentLoop (the blocking client in one thread: consume ->
  produce every record -> flush -> commit), the fastest a librdkafka loop can be in Python;
* confluent-kafka, asyncio: what our runtime's one-record path would have to do with librdkafka:
  consume() in a worker thread, produce() from the event loop with a delivery callback that resolves
  an asyncio future (call_soon_threadsafe), a thread serving producer.poll(), then await the futures
  and commit;
* confluent-kafka, asyncio, per batch: what the runtime's fast path could do (a batch is acknowledged
  as a whole): consume() in a worker thread, produce() every record from the event loop with a
  delivery callback that only notes failures, flush() in the worker thread, commit.

The client's own asyncio API (confluent_kafka.aio.AIOProducer) refuses headers in its batch mode, and
every record we write carries CloudEvents headers, so it is not measured.

Throughput = records / (time the output topic holds them all - time the first record was read). CPU
per record is this process's CPU time (every thread: librdkafka's included) over the records. The
loops are interleaved `ctx.repeats` times; the best throughput and the median CPU are quoted.
docs/adr/0005-kafka-client.md records what we decided from it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from typing import Any

from bench.context import BenchContext
from bench.measure import best_of, info_line, median_of, ratio_line
from bench.runtime import BareLoop, ConfluentLoop, Loop

PARTITIONS = 3
MODES = ("aiokafka", "confluent-thread", "confluent-asyncio", "confluent-asyncio-batch")


def sizes(ctx: BenchContext) -> list[tuple[str, int, int]]:
    """(label, record bytes, record count)."""
    return [("1KB", 1024, ctx.scaled(20_000, 5_000)), ("20KB", 20 * 1024, ctx.scaled(5_000, 1_500))]


async def run(ctx: BenchContext) -> dict[str, Any]:
    summary: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    series: dict[str, list[float]] = {m: [] for m in MODES}
    for label, size, n in sizes(ctx):
        source = await ctx.topic(f"kc-in-{label}", PARTITIONS)
        await ctx.produce_blobs(source, n, size, partitions=PARTITIONS, keys=1000)
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        for rep in range(ctx.repeats):
            turn = rep % len(MODES)
            for mode in MODES[turn:] + MODES[:turn]:  # rotate the order: drift hits every loop alike
                started = time.process_time()
                rates[mode].append(await measure(ctx, mode, source, n))
                cpu[mode].append(time.process_time() - started)
                ctx.log(f"{label} {mode}: {rates[mode][-1]:,.0f} rec/s")
        best = {m: best_of(r) for m, r in rates.items()}
        cpu_us = {m: 1e6 * median_of(c) / n for m, c in cpu.items()}
        for mode in MODES[1:]:
            summary.append(
                ratio_line(
                    f"{mode} {label}", best[mode], "aiokafka", best["aiokafka"],
                    samples=rates[mode], baseline_samples=rates["aiokafka"],
                )
            )  # fmt: skip
        summary.append(
            info_line(f"CPU per record {label} (median)", ", ".join(f"{m} {v:.0f} us" for m, v in cpu_us.items()))
        )
        data[label] = {"record_bytes": size, "records": n, "samples_rec_s": rates, "cpu_us_per_record_median": cpu_us}
        for mode in MODES:
            series[mode].append(best[mode])
    chart = {
        "id": "throughput",
        "kind": "bar",
        "title": "Bare consume+produce loops (best of runs)",
        "ylabel": "records/s",
        "categories": [f"{label} x {n:,}" for label, _, n in sizes(ctx)],
        "series": series,
    }
    notes = [
        f"{PARTITIONS} partitions, records keyed over 1,000 keys; both producers acks=all, idempotent, "
        f"linger 1 ms; best of {ctx.repeats} interleaved runs. confluent-thread is the blocking client in "
        "one thread; confluent-asyncio is the same client bridged to asyncio as a runtime on it would be."
    ]
    return {"summary": summary, "data": data, "charts": [chart], "notes": notes}


async def measure(ctx: BenchContext, mode: str, source: str, n: int) -> float:
    sink = await ctx.topic("kc-out", PARTITIONS)
    first_read: list[float] = []
    loop: Loop
    if mode == "aiokafka":
        loop = BareLoop(ctx, source, sink, first_read)
    elif mode == "confluent-thread":
        loop = ConfluentLoop(ctx, source, sink, first_read)
    else:
        loop = ConfluentAsyncioLoop(ctx, source, sink, first_read, per_batch=mode.endswith("-batch"))
    task = asyncio.create_task(loop.run())
    try:
        done_at = await ctx.wait_for_count(sink, n, timeout=300)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 60)
    return n / (done_at - first_read[0])


class ConfluentAsyncioLoop:
    """The bare loop on confluent-kafka, driven from asyncio: blocking calls in worker threads, each
    record's delivery report turned into an asyncio future."""

    def __init__(
        self, ctx: BenchContext, source: str, sink: str, first_read: list[float], *, per_batch: bool = False
    ) -> None:
        self.ctx, self.source, self.sink, self.first_read = ctx, source, sink, first_read
        self.per_batch = per_batch
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> None:
        from confluent_kafka import Consumer, Producer  # bench extra

        loop = asyncio.get_running_loop()
        common = {"bootstrap.servers": self.ctx.kafka.bootstrap_servers}
        consumer = Consumer({
            **common, "group.id": f"bench-confluent-aio-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "max.partition.fetch.bytes": 4 * 1024 * 1024 + 1024,
        })  # fmt: skip
        producer = Producer({**common, "acks": "all", "enable.idempotence": True, "linger.ms": 1})
        polling = threading.Event()
        poller = threading.Thread(target=_serve_delivery_reports, args=(producer, polling), daemon=True)
        poller.start()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="confluent-consumer")
        consumer.subscribe([self.source])
        try:
            while not self.stopping:
                batch = await loop.run_in_executor(pool, consumer.consume, 1000, 0.2)
                if not batch:
                    continue
                if not self.first_read:
                    self.first_read.append(time.monotonic())
                if self.per_batch:
                    await self._produce_batch(loop, pool, producer, batch)
                else:
                    await asyncio.gather(*(self._produce(loop, producer, m) for m in batch if m.error() is None))
                await loop.run_in_executor(pool, lambda: consumer.commit(asynchronous=False))
        finally:
            await loop.run_in_executor(pool, consumer.close)
            pool.shutdown()
            polling.set()
            poller.join()
            producer.flush()

    async def _produce_batch(
        self, loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor, producer: Any, batch: list[Any]
    ) -> None:
        failed: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:  # on whichever thread serves the delivery reports
            if err is not None:
                failed.append(err)

        for m in batch:
            if m.error() is None:
                producer.produce(self.sink, m.value(), m.key(), headers=m.headers(), on_delivery=delivered)
        await loop.run_in_executor(pool, producer.flush)
        if failed:
            raise RuntimeError(f"{len(failed)} records not delivered: {failed[0]}")

    def _produce(self, loop: asyncio.AbstractEventLoop, producer: Any, m: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()

        def delivered(err: Any, _msg: Any) -> None:  # on the poll thread
            loop.call_soon_threadsafe(_settle, future, err)

        producer.produce(self.sink, m.value(), m.key(), headers=m.headers(), on_delivery=delivered)
        return future


def _serve_delivery_reports(producer: Any, stopping: threading.Event) -> None:
    while not stopping.is_set():
        producer.poll(0.05)


def _settle(future: asyncio.Future[None], err: Any) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(RuntimeError(str(err)))
