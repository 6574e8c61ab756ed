"""The recorder against the runtime's pass-through of the same records, in the same run.

Each conversation is five records, as the services produce them: its ConversationEnded, its
ConversationExtracted, its DecisionTrace (two flows, two actions) and two ActionCompleted. They are
produced once to topics of their own (3 partitions), then consumed from the start by:

* pass-through: the recorder's route and runtime settings (unordered, 2000 in flight), a handler that
  returns each event unchanged, produced to a copy of its topic (acks=all): the runtime's own cost;
* recorder into PostgreSQL (durable defaults: fsync on) and into SQLite (WAL, synchronous=NORMAL): the
  real handler and group-commit batcher, every row written and the conversations' summaries recomputed.

Throughput = conversations / (time the group's committed offsets reach the end of every topic - time
the first record was handled). Interleaved `ctx.repeats` times, each recorder run on a fresh database;
the best of each is quoted. Goal: recorder into PostgreSQL >= 0.5 x pass-through.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from bench.context import BenchContext
from bench.measure import best_of, info_line, ratio_line
from schemas.routes import RECORDER, Output, Route
from schemas.topics import ACTION_RESULTS
from services.common.api import Context, Service
from services.common.runtime import Runtime
from services.common.settings import RuntimeSettings
from services.devkit.postgres import PostgresServer
from services.recorder.batcher import Batcher
from services.recorder.handler import Recorder
from services.store import writer
from services.store.db import Store
from services.store.settings import DatabaseSettings
from tests.support.calls import story

PARTITIONS = 3
GOAL = 0.5


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(10_000, 1_000)
    prefix = f"bench-rec-{uuid.uuid4().hex[:6]}."
    route = RECORDER.renamed(lambda name: prefix + name)
    main = [s for s in route.consumes if s.model is not bytes]
    await ctx.create_topics(route.topics(), PARTITIONS)  # its raw inputs stay empty here
    ctx.log(f"recorder: producing {n:,} conversations ({5 * n:,} records)")
    await _produce(ctx, prefix, n)
    passthrough = await _passthrough_route(ctx, main)
    rates: dict[str, list[float]] = {"pass-through": [], "postgresql": [], "sqlite": []}
    with PostgresServer(fast=False) as server:
        for repeat in range(ctx.repeats):
            ctx.log(f"recorder: repeat {repeat + 1}/{ctx.repeats}")
            rates["pass-through"].append(await _measure(ctx, passthrough, _echo, [s.topic for s in main], n))
            for backend in ("postgresql", "sqlite"):
                url = server.create_database(f"rec{repeat}") if backend == "postgresql" else _sqlite(ctx, repeat)
                async with Store.open(DatabaseSettings(url=url), writer=True) as store:
                    rates[backend].append(await _record(ctx, route, store, [s.topic for s in main], n))
    base = best_of(rates["pass-through"])
    summary = [
        ratio_line(
            "recorder into PostgreSQL",
            best_of(rates["postgresql"]),
            "runtime pass-through",
            base,
            goal=GOAL,
            unit="conversations/s",
            samples=rates["postgresql"],
            baseline_samples=rates["pass-through"],
        ),
        ratio_line(
            "recorder into SQLite",
            best_of(rates["sqlite"]),
            "runtime pass-through",
            base,
            unit="conversations/s",
            samples=rates["sqlite"],
            baseline_samples=rates["pass-through"],
        ),
        info_line("records per conversation", "5 (ended, extracted, decision trace, two action results)"),
    ]
    chart = {
        "id": "throughput",
        "kind": "bar",
        "title": f"Recorder: conversations/s ({n:,} conversations, 5 records each)",
        "ylabel": "conversations/s",
        "categories": list(rates),
        "series": {"best": [best_of(v) for v in rates.values()]},
    }
    notes = [
        "PostgreSQL 15 from Debian's package on the same 2-core VM as the broker and the benchmark "
        "(durable defaults: fsync and synchronous_commit on); SQLite in WAL mode with synchronous=NORMAL. "
        "Batches of up to 1000 records, each written in one transaction (the records' rows, then the summaries "
        "of the conversations and actions they touched; on PostgreSQL after an advisory lock per conversation). "
        "Each line quotes the best run of each side; the ratio of each interleaved repeat is in `data`.",
    ]
    return {"summary": summary, "charts": [chart], "data": {"conversations": n, "rates": rates}, "notes": notes}


async def _produce(ctx: BenchContext, prefix: str, n: int) -> None:
    by_topic: dict[str, list[tuple[str, Any]]] = {}
    for i in range(n):
        for topic, value in story(f"bench-{i:07d}"):
            key = value.action_id if topic == ACTION_RESULTS else f"bench-{i:07d}"
            by_topic.setdefault(prefix + topic, []).append((key, value))
    for topic, records in by_topic.items():
        await ctx.produce_models(topic, records)


async def _passthrough_route(ctx: BenchContext, main: list[Any]) -> Route:
    """The recorder's inputs and runtime settings, each event produced unchanged to a copy of its topic."""
    outputs = tuple(Output(s.renamed(lambda name: name + ".copy")) for s in main)
    await ctx.create_topics([o.stream.topic for o in outputs], PARTITIONS)
    route = Route(
        "passthrough",
        "bench",
        consumes=tuple(main),
        produces=outputs,
        retry_delays_seconds=(),
        ordering=RECORDER.ordering,
        max_in_flight=RECORDER.max_in_flight,
    ).renamed(lambda name: name, service=f"bench-passthrough-{uuid.uuid4().hex[:6]}")
    await ctx.create_topics([route.dead_letter_topic], PARTITIONS)
    return route


async def _echo(event: Any, ctx: Context) -> list[Any]:
    return [event]


async def _record(ctx: BenchContext, route: Route, store: Store, topics: list[str], n: int) -> float:
    async with Batcher(lambda rows: writer.write(store, rows)) as batcher:
        recorder = Recorder(batcher, retention_days=100_000, route=route)
        return await _measure(ctx, route, recorder.handle, topics, n, capacity=batcher.capacity)


async def _measure(
    ctx: BenchContext,
    route: Route,
    handle: Callable[[Any, Context], Awaitable[Any]],
    topics: list[str],
    n: int,
    capacity: Callable[[], int] | None = None,
) -> float:
    first: list[float] = []

    async def timed(event: Any, c: Context) -> Any:
        if not first:
            first.append(time.monotonic())
        return await handle(event, c)

    group = f"bench-rec-{uuid.uuid4().hex[:8]}"
    settings = RuntimeSettings(**route.runtime_defaults(), metrics_port=0, commit_interval_seconds=0.1)
    runtime = Runtime(Service(route, timed, capacity=capacity), kafka=ctx.kafka, settings=settings, group_id=group)
    task = asyncio.create_task(runtime.run())
    try:
        ends = {t: await ctx.count(t) for t in topics}
        while True:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
            if not first:
                continue
            try:
                committed = [await ctx.committed(group, t) for t in topics]
            except KafkaError:  # the group's coordinator is not known yet
                continue
            if all(sum(v or 0 for v in c.values()) >= ends[t] for c, t in zip(committed, topics, strict=True)):
                break
        return n / (time.monotonic() - first[0])
    finally:
        runtime.stop()
        await task


def _sqlite(ctx: BenchContext, repeat: int) -> str:
    path: Path = ctx.work_dir / f"recorder-{repeat}.db"
    return f"sqlite+aiosqlite:///{path}"
