"""Peak memory per service: the three services as processes (bench.e2e's stack: the example agents and
destinations, the offline heuristic extractor, an in-process Sink) take a burst of conversations, the
example conversations cycled with fresh ids, so every service works through a backlog with as many
records in flight as its settings allow.

Per process, from /proc/<pid>/status: VmRSS once every service is ready and idle, then VmHWM (the
peak resident set since start) and VmRSS after every action of the burst has a result on
postcall.action-results.v1. Judged against the memory limit of deploy/k8s/base/<service>.yaml (a pod's
cgroup also counts page cache, so RSS is the floor of what the limit must hold). The broker's JVM
(the bench broker, found by its listener port) is shown for context.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML

from bench.context import BenchContext
from bench.e2e import running_stack
from bench.measure import check_line, info_line
from schemas.events import ActionCompleted, ConversationEnded
from schemas.topics import ACTION_RESULTS, default_partitions
from services.devkit.demo import EXPECTED
from services.devkit.kafka import ROOT
from services.devkit.publish import load_examples, publish
from services.devkit.stack import SERVICES

K8S_BASE = ROOT / "deploy" / "k8s" / "base"
UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
SERIES = {"idle (VmRSS)": "idle", "peak (VmHWM)": "peak", "after the burst (VmRSS)": "after"}


# ── pure helpers (tests/unit/bench/test_e2e_stats.py) ─────────────────────────────────────────


def parse_status(text: str) -> dict[str, float]:
    """The Vm* lines of /proc/<pid>/status in MiB: {"VmRSS": 61.2, "VmHWM": 80.5, ...}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if name.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
            out[name] = int(parts[0]) / 1024
    return out


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB: "192Mi" -> 192.0, "1Gi" -> 1024.0, "1000000" bytes -> 0.95."""
    for suffix in ("Ki", "Mi", "Gi", "k", "M", "G"):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * UNITS[suffix]
    return float(quantity) / 2**20


def k8s_memory(manifest: str) -> tuple[float, float]:
    """(request, limit) in MiB of the first container of the manifest's StatefulSet or Deployment."""
    for doc in YAML(typ="safe").load_all(manifest):
        if isinstance(doc, dict) and doc.get("kind") in ("StatefulSet", "Deployment"):
            resources = doc["spec"]["template"]["spec"]["containers"][0]["resources"]
            return mebibytes(str(resources["requests"]["memory"])), mebibytes(str(resources["limits"]["memory"]))
    raise ValueError("no StatefulSet or Deployment with memory resources")


def listens_on(properties: str, port: int) -> bool:
    """Whether a broker's server.properties has a listener on 127.0.0.1:port."""
    for line in properties.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listeners" and any(u.strip().endswith(f"//127.0.0.1:{port}") for u in value.split(",")):
            return True
    return False


def burst(
    examples: Iterable[ConversationEnded], expected: dict[str, list[str]], n: int
) -> tuple[list[ConversationEnded], int]:
    """n conversations cycling the examples that fire no Slack message, and how many actions they fire.
    (The demo's ops-slack destination allows one message per second: the burst would wait on it.)"""
    usable = [e for e in examples if not any(a.endswith("/slack") for a in expected.get(e.conversation_id, []))]
    chosen = [usable[i % len(usable)] for i in range(n)]
    ids = ({"conversation_id": f"bench-mem-{i:05d}", "event_id": f"evt-mem-{i:05d}"} for i in range(n))
    events = [e.model_copy(update=update) for e, update in zip(chosen, ids, strict=True)]
    return events, sum(len(expected.get(e.conversation_id, [])) for e in chosen)


# ── measuring ─────────────────────────────────────────────────────────────────────────────────


def status(pid: int) -> dict[str, float]:
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def broker_pid(port: int) -> int | None:
    """The bench broker's JVM: a `kafka.Kafka <server.properties>` process listening on `port`."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"kafka.Kafka" in args and listens_on(
                Path(args[args.index(b"kafka.Kafka") + 1].decode()).read_text(), port
            ):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(1000, 300)
    expected = {k: v for k, v in orjson.loads(EXPECTED.read_bytes()).items() if not k.startswith("_")}
    events, actions = burst(load_examples(), expected, n)
    async with running_stack(ctx, "memory-stack") as (stack, _sink):
        await asyncio.sleep(3)  # ready and idle: imports done, consumers joined, nothing to do
        pids = {p.name: p.popen.pid for p in stack.processes if p.popen is not None}
        mib = {name: {"idle": status(pid)["VmRSS"]} for name, pid in pids.items()}
        before, started = await ctx.count(ACTION_RESULTS), time.monotonic()
        await publish(ctx.kafka, events)
        done = await ctx.wait_for_count(ACTION_RESULTS, before + actions, timeout=600)
        ctx.log(f"{n} conversations, {actions} actions in {done - started:.1f}s")
        for name, pid in pids.items():
            now = status(pid)
            mib[name].update(peak=now["VmHWM"], after=now["VmRSS"])
        outcomes: Counter[str] = Counter(
            completed.outcome
            for _, value, _ in await ctx.read_values(ACTION_RESULTS)
            if (completed := ActionCompleted.model_validate_json(value)).conversation_id.startswith("bench-mem-")
        )
        jvm = broker_pid(int(ctx.bootstrap_servers.rsplit(":", 1)[1]))
        broker = status(jvm) if jvm is not None else {}
    return report(mib, broker, outcomes, n, actions, done - started)


def report(
    mib: dict[str, dict[str, float]],
    broker: dict[str, float],
    outcomes: Counter[str],
    n: int,
    actions: int,
    seconds: float,
) -> dict[str, Any]:
    summary = []
    for name in SERVICES:
        values = mib[name]
        request, limit = k8s_memory((K8S_BASE / f"{name}.yaml").read_text())
        detail = (
            f"idle {values['idle']:.0f} MiB, peak {values['peak']:.0f} MiB, after {values['after']:.0f} MiB; "
            f"k8s request {request:.0f} Mi, limit {limit:.0f} Mi"
        )
        summary.append(check_line(f"{name} peak RSS under its k8s memory limit", values["peak"] < limit, detail))
        mib[name].update(k8s_request=request, k8s_limit=limit)
    jvm = f"RSS {broker.get('VmRSS', 0):.0f} MiB, peak {broker.get('VmHWM', 0):.0f} MiB" if broker else "not found"
    summary.append(info_line("broker JVM (context)", jvm))
    summary.append(info_line("burst", f"{n:,} conversations, {actions:,} actions, all results in {seconds:.1f} s"))
    arrived = outcomes["delivered"] + outcomes["published"]
    summary.append(check_line("every action delivered or published", arrived == actions, str(dict(outcomes))))
    chart = {
        "id": "rss",
        "kind": "bar",
        "title": "Resident memory per service",
        "ylabel": "MiB",
        "categories": list(SERVICES),
        "series": {label: [mib[s][key] for s in SERVICES] for label, key in SERIES.items()}
        | {"k8s request": [mib[s]["k8s_request"] for s in SERVICES]},
    }
    notes = [
        f"{n:,} conversations published at once (the example conversations cycled, those firing a Slack "
        f"message left out), {default_partitions()} partitions per topic, one process per service with its "
        "default settings (max_in_flight: extractor 64, router 256, dispatcher 1024). Idle = VmRSS 3 s "
        "after every service answered /readyz; peak = VmHWM at the end; after = VmRSS at the end."
    ]
    return {"summary": summary, "charts": [chart], "data": {"mib": mib, "broker_mib": broker}, "notes": notes}
