"""Server time of the console's pages: 1,000,000 stored calls in PostgreSQL, 100,000 in SQLite.

The calls are bench/store_data.py's (as the recorder keeps them: event, extraction, trace, actions with
attempts), loaded with COPY / executemany. The console is the query API's app in process (httpx ASGI
transport, no network), with a logged-in session: every request resolves its session in the store,
runs the page's queries and renders the page with Jinja2. Measured, after 20 warm-up requests, as the
time of one request (p50 and p99 of 300):

* the conversations page, first page (50 rows, newest first), no filter;
* the conversations page with two filters (agent + end reason), as the filter form sends them;
* the conversations page with text search (agent + a word in the summary or customer);
* one call's timeline (the event, extraction with evidence located in the transcript, trace, actions).

Baseline in the same run: the query API's JSON for the same list and the same call (what the page adds
is the session check and the rendering). Goal: p99 under 100 ms on this machine (a shared 2-core VM).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.context import BenchContext
from bench.measure import check_line, info_line
from bench.store_data import AGENTS, END_REASONS, WORDS, conversation_id, load
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.devkit.postgres import PostgresServer
from services.store import tokens
from services.store.db import Store
from services.store.settings import DatabaseSettings

GOAL_MS = 100.0
SAMPLES, WARMUP = 300, 20
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def run(ctx: BenchContext) -> dict[str, Any]:
    summary: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    sizes = {"postgresql": ctx.scaled(1_000_000, 50_000), "sqlite": ctx.scaled(100_000, 10_000)}
    with PostgresServer(fast=False) as server:
        for backend, n in sizes.items():
            url = server.create_database("console") if backend == "postgresql" else _sqlite_url(ctx)
            async with Store.open(DatabaseSettings(url=url)) as store:
                ctx.log(f"console pages: loading {n:,} conversations into {backend}")
                started = time.monotonic()
                await load(store, n)
                loaded = time.monotonic() - started
                ctx.log(f"console pages: loaded in {loaded:.0f} s; measuring")
                found = await _measure(store, n, smoke=ctx.smoke)
            data[backend] = {"conversations": n, "load_seconds": round(loaded), **found}
            summary += _lines(backend, n, found)
    chart = {
        "id": "latency",
        "kind": "bar",
        "title": "Console page server time p99 (ms)",
        "ylabel": "ms",
        "categories": list(data["postgresql"]["latency_ms"]),
        "series": {
            f"{b} ({d['conversations']:,})": [v["p99"] for v in d["latency_ms"].values()] for b, d in data.items()
        },
    }
    notes = [
        "Server time of one request, in the benchmark's own process on an idle store (no recorder writing): "
        "the FastAPI app through the httpx ASGI transport, logged in (the session is checked in the store on "
        "every request), the page's queries and the Jinja2 rendering. `api` rows are the JSON API for the same "
        "list and call, measured in the same run.",
    ]
    return {"summary": summary, "charts": [chart], "data": data, "notes": notes}


def _sqlite_url(ctx: BenchContext) -> str:
    path = ctx.work_dir / "console-bench.db"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return f"sqlite+aiosqlite:///{path}"


async def _measure(store: Store, n: int, smoke: bool = False) -> dict[str, Any]:
    rnd = random.Random(13)
    # a smoke run (`make test`) requests every page a few times: that it answers, not how fast
    counts = (1, 5) if smoke else (WARMUP, SAMPLES)
    async with store.write() as conn:
        token = await tokens.create_token(conn, f"bench-{rnd.random()}", "viewer")
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
    latency: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as web:
        form = (await web.get("/console/login")).text
        found = CSRF.search(form)
        assert found is not None
        login = await web.post("/console/login", data={"csrf_token": found.group(1), "token": token})
        assert login.status_code == 303, login.text

        async def get(path: str, params: dict[str, str] | None = None) -> None:
            answer = await web.get(path, params=params)
            assert answer.status_code == 200, (path, answer.status_code)

        latency["page conversations"] = await _timed(counts, lambda: get("/console/conversations"))
        latency["page conversations agent+reason"] = await _timed(
            counts,
            lambda: get("/console/conversations", {"agent": rnd.choice(AGENTS), "end_reason": rnd.choice(END_REASONS)}),
        )
        latency["page conversations agent+text"] = await _timed(
            counts, lambda: get("/console/conversations", {"agent": rnd.choice(AGENTS), "q": rnd.choice(WORDS)})
        )
        latency["page timeline"] = await _timed(
            counts, lambda: get(f"/console/conversations/{conversation_id(rnd.randrange(n))}")
        )
        headers = {"authorization": f"Bearer {token}"}
        latency["api list agent+reason"] = await _timed(
            counts,
            lambda: _api(
                web,
                "/api/v1/conversations",
                headers,
                {"agent": rnd.choice(AGENTS), "end_reason": rnd.choice(END_REASONS)},
            ),
        )
        latency["api detail"] = await _timed(
            counts, lambda: _api(web, f"/api/v1/conversations/{conversation_id(rnd.randrange(n))}", headers, None)
        )
    return {"latency_ms": latency}


async def _api(web: httpx.AsyncClient, path: str, headers: dict[str, str], params: dict[str, str] | None) -> None:
    (await web.get(path, params=params, headers=headers)).raise_for_status()


async def _timed(counts: tuple[int, int], call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    warmup, n = counts
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
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
        if label.startswith("page"):
            out.append(check_line(name, q["p99"] < GOAL_MS, f"{text}; goal p99 < {GOAL_MS:g} ms"))
        else:
            out.append(info_line(name, text))
    return out
