"""Query latency of the conversation store: 1,000,000 stored calls in PostgreSQL, 100,000 in SQLite.

Each call is stored as the recorder keeps it (the event, an extraction, a decision trace, two actions
with their attempts; bench/store_data.py), loaded with COPY / executemany, indexes built after the load,
then ANALYZE. PostgreSQL runs with its durable defaults (the test fixture's fsync=off is not used).

Measured, each after 20 warm-up calls, as the latency of one call (p50 and p99 of 300):

* list, two filters, one page (the goal): agent + end reason, 50 rows, newest first;
* list, other shapes: agent + the last 7 days; agent + failed; agent + text in summary or customer;
  the second page of agent + end reason (keyset cursor);
* one conversation in full (event, extraction, trace, actions with attempts);
* the same list and detail through the HTTP API in process (FastAPI validation and JSON included).

Goal: p99 under 50 ms on this machine (a shared 2-core VM).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from bench.context import BenchContext
from bench.measure import check_line, info_line
from bench.store_data import AGENTS, DAYS, END_REASONS, START, WORDS, conversation_id, load
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.devkit.postgres import PostgresServer
from services.store import queries
from services.store.db import Store
from services.store.queries import ConversationFilter
from services.store.settings import DatabaseSettings

GOAL_MS = 50.0
SAMPLES, WARMUP = 300, 20


async def run(ctx: BenchContext) -> dict[str, Any]:
    summary: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    sizes = {"postgresql": ctx.scaled(1_000_000, 50_000), "sqlite": ctx.scaled(100_000, 10_000)}
    with PostgresServer(fast=False) as server:
        for backend, n in sizes.items():
            url = server.create_database("bench") if backend == "postgresql" else _sqlite_url(ctx)
            async with Store.open(DatabaseSettings(url=url)) as store:
                ctx.log(f"store query: loading {n:,} conversations into {backend}")
                started = time.monotonic()
                await load(store, n)
                ctx.log(f"store query: loaded in {time.monotonic() - started:.0f} s; measuring")
                found = await _measure(store, n, smoke=ctx.smoke)
            data[backend] = {"conversations": n, "load_seconds": round(time.monotonic() - started), **found}
            summary += _lines(backend, n, found)
    chart = {
        "id": "latency",
        "kind": "bar",
        "title": "Store query p99 (ms)",
        "ylabel": "ms",
        "categories": list(data["postgresql"]["latency_ms"]),
        "series": {
            f"{b} ({d['conversations']:,})": [v["p99"] for v in d["latency_ms"].values()] for b, d in data.items()
        },
    }
    notes = [
        "Latency of one call, measured in the benchmark's own process on an idle store (no recorder writing). "
        "`store` rows call services/store/queries.py on a pooled connection; `api` rows go through the FastAPI "
        "app in process (httpx ASGI transport): validation, the query and the JSON response.",
    ]
    return {"summary": summary, "charts": [chart], "data": data, "notes": notes}


def _sqlite_url(ctx: BenchContext) -> str:
    path = ctx.work_dir / "store-bench.db"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return f"sqlite+aiosqlite:///{path}"


async def _measure(store: Store, n: int, smoke: bool = False) -> dict[str, Any]:
    rnd = random.Random(11)
    # a smoke run (`make test`) makes every call a few times: that it answers, not how fast
    counts = (1, 5) if smoke else (WARMUP, SAMPLES)
    last_day = START + timedelta(days=DAYS)

    def two_filters() -> ConversationFilter:
        return ConversationFilter(agent=rnd.choice(AGENTS), end_reasons=(rnd.choice(END_REASONS),))

    shapes: dict[str, Callable[[], ConversationFilter]] = {
        "list agent+reason": two_filters,
        "list agent+7 days": lambda: ConversationFilter(agent=rnd.choice(AGENTS), since=last_day - timedelta(days=7)),
        "list agent+failed": lambda: ConversationFilter(agent=rnd.choice(AGENTS), failed=True),
        "list agent+text": lambda: ConversationFilter(agent=rnd.choice(AGENTS), text=rnd.choice(WORDS)),
    }
    latency: dict[str, dict[str, float]] = {}
    async with store.read() as conn:
        for label, make in shapes.items():

            def page(make: Callable[[], ConversationFilter] = make) -> Awaitable[Any]:
                return queries.list_conversations(conn, make())

            latency[f"store {label}"] = await _timed(counts, page)

        async def second_page() -> Any:
            first = await queries.list_conversations(conn, f := two_filters())
            started = time.perf_counter()
            await queries.list_conversations(conn, f, cursor=first.next_cursor)
            return time.perf_counter() - started

        latency["store page 2 agent+reason"] = await _timed_inner(counts, second_page)
        latency["store detail"] = await _timed(
            counts, lambda: queries.get_conversation(conn, conversation_id(rnd.randrange(n)))
        )
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
    # a loopback name: the open mode (no token in this store) serves only those (services/api/auth.py)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as api:

        async def api_list() -> None:
            params = {"agent": rnd.choice(AGENTS), "end_reason": rnd.choice(END_REASONS)}
            (await api.get("/api/v1/conversations", params=params)).raise_for_status()

        async def api_detail() -> None:
            (await api.get(f"/api/v1/conversations/{conversation_id(rnd.randrange(n))}")).raise_for_status()

        latency["api list agent+reason"] = await _timed(counts, api_list)
        latency["api detail"] = await _timed(counts, api_detail)
    return {"latency_ms": latency}


async def _timed(counts: tuple[int, int], call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    async def once() -> float:
        started = time.perf_counter()
        await call()
        return time.perf_counter() - started

    return await _timed_inner(counts, once)


async def _timed_inner(counts: tuple[int, int], once: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    warmup, n = counts
    for _ in range(warmup):
        await once()
    samples = sorted([float(await once()) * 1000 for _ in range(n)])
    return {
        "p50": round(samples[len(samples) // 2], 2),
        "p99": round(samples[int(len(samples) * 0.99) - 1], 2),
        "max": round(samples[-1], 2),
    }


def _lines(backend: str, n: int, found: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, q in found["latency_ms"].items():
        text = f"p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms (max {q['max']:.0f})"
        name = f"{backend} {n:,}: {label}"
        if label in ("store list agent+reason", "store detail", "api list agent+reason", "api detail"):
            out.append(check_line(name, q["p99"] < GOAL_MS, f"{text}; goal p99 < {GOAL_MS:g} ms"))
        else:
            out.append(info_line(name, text))
    return out
