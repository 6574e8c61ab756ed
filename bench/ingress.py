"""The webhook ingress against a bare aiokafka `send_and_wait` loop publishing the same events.

Both sides publish the same N ConversationEnded records (Retell `call_analyzed` webhooks, ~3 KB, each
with its own call id) to postcall.conversation-ended.v1 on the bench broker, with the same producer
settings (services.common.kafka.producer: idempotent, acks=all, linger 1 ms) and the same CloudEvents
headers, at concurrency 32:

* bare (the baseline, as the issue names it): 32 tasks in this process, each `await
  producer.send_and_wait(...)` of the already-mapped event (mapped before its clock starts), latency =
  send to acknowledgement. Nothing in this change touched it.
* ingress, one process: one `python -m services.ingress` process as deployed (uvicorn on uvloop +
  httptools, the webhook routes served as plain ASGI, JSON log line per request, metrics, one producer);
  latency = request written to response read, which the ingress sends only after the brokers'
  acknowledgement (so it includes the HTTP round trip, signature check on the raw bytes, mapping and the
  acks=all publish). Bound by its one core.
* ingress, two replicas: the deployment's minimum (deploy/k8s/base/ingress.yaml's HPA), two such
  processes on their own ports, each sent half of the connections and every other webhook (as a Service
  spreads connections over its pods). Here they share this 2-core machine with the broker and the
  client, where pods would have a core each.

Both ingress shapes are judged against the same goal. The one-process run's process is one of the two
replicas (the other is idle then).

The HTTP client (the only side that speaks HTTP) is wrk (Debian's package; scripts/ensure-tools.sh
installs it), one thread per ingress process and 32 keep-alive HTTP/1.1 connections in all, with
bench/ingress_client.lua: each request signed and serialised before the clock starts (as the bare loop's
events are mapped before its own), sent once, its status counted; latency is wrk's, request written to
response read. Its own CPU is a few microseconds per request, so on this 2-core machine it takes little
from the ingress and the broker: the Python client it replaced (raw asyncio streams) cost 0.06-0.1 ms per
request, and the ingress accepted 2-7 % more requests/s through wrk in the same runs (the ingress's CPU
per request unchanged).

The runs are interleaved, `ctx.repeats` each, the order of the three (the bare loop, one process, the
replicas) rotated every repeat as bench.runtime's modes are, so that drift over the run (the topic growing,
other load on the machine) hits every side alike; until 2026-12-06 the bare loop always ran first and only
the two ingress shapes alternated. Throughput is the best run, p99 the median of the runs' p99s. On
this 2-core machine the HTTP client, the ingress and the broker share the CPUs: the ingress side also pays
for its client (little), which the bare loop does not have. "CPU per accepted webhook" is the
ingress process's user + system time over the run divided by the webhooks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.context import BenchContext
from bench.e2e import percentile
from bench.measure import best_of, check_line, info_line, median_of, ratio_line
from schemas.routes import by_name
from schemas.topics import CONVERSATION_ENDED
from services.common.kafka import ensure_topics, producer
from services.devkit.kafka import free_port
from services.devkit.webhooks import DEMO_ENDPOINT, DEMO_ENDPOINTS, DEMO_SECRETS, example, signed_headers
from services.ingress.platforms import MAPPINGS, Context
from services.ingress.publisher import ce_source, cloudevent_headers

CONCURRENCY = 32
TEMPLATE = "retell/phone-voicemail-analyzed.json"
CALL_ID = b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"
LUA = Path(__file__).with_name("ingress_client.lua")


def bodies(run: str, n: int) -> list[bytes]:
    raw = example(TEMPLATE)
    return [raw.replace(CALL_ID, f"bench-{run}-{i:06d}".encode()) for i in range(n)]


async def bare(ctx: BenchContext, payloads: Sequence[bytes]) -> tuple[float, list[float], float]:
    """(records/s, latencies in s, CPU seconds per record of this process while they ran) of 32
    send_and_wait workers publishing the mapped events."""
    from datetime import UTC, datetime

    context = Context("acct-copperline", "Copperline", datetime.now(UTC), {}, publish_on=("call_analyzed",))
    events = [MAPPINGS["retell"](orjson.loads(p), context) for p in payloads]
    p = producer(ctx.kafka)
    await p.start()
    latencies: list[float] = []
    queue = list(reversed(events))
    try:

        async def worker() -> None:
            while queue:
                event = queue.pop()
                started = time.perf_counter()
                await p.send_and_wait(
                    CONVERSATION_ENDED,
                    event.model_dump_json().encode(),  # type: ignore[union-attr]
                    key=event.conversation_id.encode(),  # type: ignore[union-attr]
                    headers=cloudevent_headers(event, ce_source("retell", event)),  # type: ignore[arg-type]
                )
                latencies.append(time.perf_counter() - started)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await p.stop()
    return len(events) / elapsed, latencies, cpu / len(events)


def request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def write_requests(folder: Path, payloads: Sequence[bytes]) -> tuple[Path, Path]:
    """The HTTP requests for bench/ingress_client.lua, signed and serialised before the clock starts as
    the bare loop's events are mapped before its own (a Retell signature is good for 5 minutes; a run
    takes seconds): one file of requests back to back, one of their lengths."""
    path = f"/webhooks/retell/{DEMO_ENDPOINT}"
    messages = [request(path, body, signed_headers("retell", body, DEMO_SECRETS["retell"])) for body in payloads]
    data, lengths = folder / "requests", folder / "lengths"
    data.write_bytes(b"".join(messages))
    lengths.write_text("".join(f"{len(m)}\n" for m in messages))
    return data, lengths


async def through_ingress(
    urls: Sequence[str], payloads: Sequence[bytes], limit_seconds: int = 120
) -> tuple[float, float, dict[str, int]]:
    """(accepted requests/s, p99 latency in s, answers by status) of wrk's 32 keep-alive connections,
    each payload sent once. Several urls (replicas on 127.0.0.1, as a Service spreads connections over its
    pods): one wrk thread per url, each with an equal share of the connections and every n-th payload.
    The rate's clock runs from wrk's start (before it connects) to the last answer;
    bench/ingress_client.lua says when every request of a thread is answered, and wrk is then stopped. A
    request left unanswered (a connection dropped, a 30 s timeout) ends the run after `limit_seconds`
    with an error naming how many were answered."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: run scripts/ensure-tools.sh (make tools)")
    ports = [str(httpx.URL(url).port) for url in urls]
    with tempfile.TemporaryDirectory() as tmp:
        data, lengths = write_requests(Path(tmp), payloads)
        proc = await asyncio.create_subprocess_exec(
            *(wrk, f"-t{len(urls)}", f"-c{CONCURRENCY}", f"-d{limit_seconds}s", "--timeout", "30s"),
            *("-s", str(LUA), f"{urls[0]}/", "--", str(data), str(lengths)),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "WRK_PORTS": ",".join(ports)},
        )
        assert proc.stdout is not None
        lines, waiting = [], len(urls)
        while line := await proc.stdout.readline():
            lines.append(line.decode())
            if line == b"answered\n":  # wrk's own clock would run to -d; the script's stops at the last answer
                waiting -= 1
                if not waiting:
                    proc.send_signal(signal.SIGINT)
        if await proc.wait() != 0:
            raise RuntimeError(f"wrk exited with {proc.returncode}: {''.join(lines)[-2000:]}")
    found = [line for line in lines if line.startswith("{")]
    if not found:
        raise RuntimeError(f"wrk printed no result: {''.join(lines)[-2000:]}")
    result = json.loads(found[0])
    answers = {str(status): count for status, count in result["statuses"].items()}
    if waiting:
        raise RuntimeError(
            f"wrk: {sum(answers.values())} of {len(payloads)} requests answered in {limit_seconds} s "
            f"(by status: {answers})"
        )
    return answers.get("200", 0) / (result["elapsed_us"] / 1e6), result["p99_us"] / 1e6, answers


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _ready(url: str, proc: Any) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=3) as client:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"the ingress exited:\n{proc.output()[-2000:]}")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the ingress was not ready in 60 s")


REPLICAS = 2  # deploy/k8s/base/ingress.yaml: the HorizontalPodAutoscaler's minReplicas
MODES = ("bare", "one", "deployed")  # the bare loop; the ingress as one process, and as REPLICAS processes


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(4000, 400)
    await ensure_topics(ctx.kafka, [by_name()[CONVERSATION_ENDED]], replication=1)
    procs, urls = [], []
    for _ in range(REPLICAS):
        port = free_port()
        env = {
            "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": ctx.bootstrap_servers,
            "POSTCALL_INGRESS__PORT": str(port),
            "POSTCALL_INGRESS__HOST": "127.0.0.1",
            "POSTCALL_INGRESS__ENDPOINTS_FILE": str(DEMO_ENDPOINTS),
        }
        procs.append(ctx.spawn("services.ingress", env))
        urls.append(f"http://127.0.0.1:{port}")
    for url, proc in zip(urls, procs, strict=True):
        await _ready(url, proc)
    await through_ingress(urls, bodies("warm", 400))  # connections, producer batches, imports
    await through_ingress(urls[:1], bodies("warm-one", 200))
    await bare(ctx, bodies("warm-bare", 200))

    rates: dict[str, list[float]] = {"bare": [], "one": [], "deployed": []}
    p99s: dict[str, list[float]] = {"bare": [], "one": [], "deployed": []}
    cpu_ms, bare_cpu_ms = [], []
    all_answers: dict[str, int] = {}
    for repeat in range(ctx.repeats):
        ctx.log(f"ingress bench repeat {repeat + 1}/{ctx.repeats}: {n} events each run")
        turn = repeat % len(MODES)
        for mode in MODES[turn:] + MODES[:turn]:  # rotate the order: drift hits every mode alike
            if mode == "bare":
                rate, latencies, cpu = await bare(ctx, bodies(f"bare{repeat}", n))
                bare_cpu_ms.append(cpu * 1000)
                p99 = percentile(latencies, 99)
            else:
                targets = urls[:1] if mode == "one" else urls
                before, cpu_before = await ctx.count(CONVERSATION_ENDED), cpu_seconds(procs[0].pid)
                rate, p99, answers = await through_ingress(targets, bodies(f"{mode}{repeat}", n))
                if mode == "one":
                    cpu_ms.append((cpu_seconds(procs[0].pid) - cpu_before) / n * 1000)
                for key, count in answers.items():
                    all_answers[key] = all_answers.get(key, 0) + count
                landed = await ctx.count(CONVERSATION_ENDED) - before
                if landed != n:
                    raise RuntimeError(f"{n} webhooks accepted but {landed} records landed")
            rates[mode].append(rate)
            p99s[mode].append(p99)
    for proc in procs:
        proc.term()

    median_p99 = {shape: median_of(values) for shape, values in p99s.items()}
    judged = []
    for shape, name in (("one", "one process"), ("deployed", f"{REPLICAS} replicas (the deployment's minimum)")):
        factor = median_p99[shape] / median_p99["bare"] if median_p99["bare"] else float("inf")
        judged += [
            ratio_line(
                f"ingress accepted webhooks, {name}",
                best_of(rates[shape]),
                "bare send_and_wait",
                best_of(rates["bare"]),
                goal=0.5,
                unit="req/s",
                samples=rates[shape],
                baseline_samples=rates["bare"],
            ),
            check_line(
                f"ingress p99 request -> broker ack under 5x the bare loop's p99, {name}",
                factor < 5,
                f"{median_p99[shape] * 1000:.1f} ms vs {median_p99['bare'] * 1000:.1f} ms = {factor:.2f}x",
            ),
        ]
    return {
        "title": "ingress: webhook -> acks=all vs a bare aiokafka send_and_wait loop, concurrency 32",
        "summary": [
            *judged,
            info_line("answers", ", ".join(f"{k}: {v}" for k, v in sorted(all_answers.items()))),
            info_line("ingress CPU per accepted webhook", f"{median_of(cpu_ms):.2f} ms (one process, median of runs)"),
            info_line(
                "CPU per published record, medians of runs",
                f"bare loop {median_of(bare_cpu_ms) * 1000:.0f} us, ingress {median_of(cpu_ms) * 1000:.0f} us, each "
                "its own process's (the bare loop's rate is bound by its 32 round trips to the broker, not by its CPU)",
            ),
        ],
        "charts": [
            {
                "id": "throughput",
                "kind": "bar",
                "title": "Webhooks published per second (concurrency 32, acks=all)",
                "ylabel": "records/s",
                "categories": [f"run {i + 1}" for i in range(len(rates["bare"]))],
                "series": {
                    "bare send_and_wait": rates["bare"],
                    f"ingress, {REPLICAS} replicas": rates["deployed"],
                    "ingress, one process": rates["one"],
                },
            }
        ],
        "data": {
            "n": n,
            "concurrency": CONCURRENCY,
            "replicas": REPLICAS,
            "bare_rates": rates["bare"],
            "ingress_rates": rates["deployed"],
            "one_process_rates": rates["one"],
            "bare_p99_s": p99s["bare"],
            "ingress_p99_s": p99s["deployed"],
            "one_process_p99_s": p99s["one"],
            "answers": all_answers,
            "ingress_cpu_ms_per_request": cpu_ms,
            "bare_cpu_ms_per_record": bare_cpu_ms,
        },
        "notes": [
            "Same events, same producer settings (idempotent, acks=all, linger 1 ms), same headers. The bare "
            "loop is one process; the ingress is measured as one process and as two replicas (the deployment's "
            "minimum), each uvicorn on uvloop + httptools. The ingress's HTTP client is wrk (one thread per "
            "ingress process, 32 connections in all, requests signed before the clock starts), which shares this "
            "2-core machine with them; the bare loop has no client.",
        ],
    }
