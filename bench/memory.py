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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML

from bench.context import BenchContext
from bench.e2e import running_stack
from bench.measure import check_line, info_line
from schemas.events import ActionCompleted, ConversationEnded
from schemas.routes import SERVICES
from schemas.topics import ACTION_RESULTS, default_partitions
from services.devkit.demo import EXPECTED
from services.devkit.kafka import ROOT
from services.devkit.publish import load_examples, publish

K8S_BASE = ROOT / "deploy" / "k8s" / "base"
UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
PREFIX = "bench-mem-"  # conversation ids of the burst
SETTLE_SECONDS = 30  # after the results: room for the dispatcher's first retry tier (5 s) to deliver
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
    ids = ({"conversation_id": f"{PREFIX}{i:05d}", "event_id": f"evt-mem-{i:05d}"} for i in range(n))
    events = [e.model_copy(update=update) for e, update in zip(chosen, ids, strict=True)]
    return events, sum(len(expected.get(e.conversation_id, [])) for e in chosen)


# ── measuring ─────────────────────────────────────────────────────────────────────────────────


def outcomes_of(values: Iterable[bytes], prefix: str) -> tuple[dict[str, ActionCompleted], list[ActionCompleted]]:
    """The last ActionCompleted per action_id of conversations starting with `prefix`, and every failed attempt.
    (One action_id's results share a partition, so the last one read is the newest.)"""
    final: dict[str, ActionCompleted] = {}
    failed: list[ActionCompleted] = []
    marker = f'"conversation_id":"{prefix}'.encode()
    for value in values:
        if marker not in value:  # cheap: most of the topic is earlier benchmarks' results
            continue
        completed = ActionCompleted.model_validate_json(value)
        if completed.conversation_id.startswith(prefix):
            final[completed.action_id] = completed
            if completed.outcome == "failed":
                failed.append(completed)
    return final, failed


async def final_outcomes(
    ctx: BenchContext, actions: int, timeout: float = SETTLE_SECONDS
) -> tuple[dict[str, ActionCompleted], list[ActionCompleted]]:
    """Wait (at most `timeout`) until every action of the burst has an outcome other than `failed`."""
    deadline = time.monotonic() + timeout
    while True:
        final, failed = outcomes_of((value for _, value, _ in await ctx.read_values(ACTION_RESULTS)), PREFIX)
        settled = sum(1 for c in final.values() if c.outcome != "failed")
        if settled >= actions or time.monotonic() > deadline:
            return final, failed
        await asyncio.sleep(2)


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


@dataclass
class Burst:
    conversations: int
    actions: int
    seconds: float = 0.0  # publish to as many results as actions (end offsets)
    final: dict[str, ActionCompleted] = field(default_factory=dict)  # action_id -> last outcome
    failed: list[ActionCompleted] = field(default_factory=list)  # failed attempts (retried)


async def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.scaled(1000, 300)
    expected = {k: v for k, v in orjson.loads(EXPECTED.read_bytes()).items() if not k.startswith("_")}
    events, actions = burst(load_examples(), expected, n)
    load = Burst(n, actions)
    async with running_stack(ctx, "memory-stack") as (stack, _sink):
        # ready and idle: imports done, consumers joined, nothing to do (a smoke run's numbers mean nothing)
        await asyncio.sleep(0.5 if ctx.smoke else 3)
        pids = {p.name: p.popen.pid for p in stack.processes if p.popen is not None}
        mib = {name: {"idle": status(pid)["VmRSS"]} for name, pid in pids.items()}
        before, started = await ctx.count(ACTION_RESULTS), time.monotonic()
        await publish(ctx.kafka, events)
        load.seconds = await ctx.wait_for_count(ACTION_RESULTS, before + actions, timeout=600) - started
        load.final, load.failed = await final_outcomes(ctx, actions)
        ctx.log(f"{n} conversations, {actions} actions: results in {load.seconds:.1f}s, {len(load.failed)} retried")
        for name, pid in pids.items():
            now = status(pid)
            mib[name].update(peak=now["VmHWM"], after=now["VmRSS"])
        jvm = broker_pid(int(ctx.bootstrap_servers.rsplit(":", 1)[1]))
        broker = status(jvm) if jvm is not None else {}
    return report(mib, broker, load)


def report(mib: dict[str, dict[str, float]], broker: dict[str, float], load: Burst) -> dict[str, Any]:
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
    summary.extend(outcome_lines(load))
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
        f"{load.conversations:,} conversations published at once (the example conversations cycled, those "
        f"firing a Slack message left out), {default_partitions()} partitions per topic, one process per "
        "service with its default settings (max_in_flight: extractor 64, router 2048, dispatcher 1024). "
        "Idle = VmRSS 3 s after every service answered /readyz; peak = VmHWM and after = VmRSS once every "
        f"action has a result and up to {SETTLE_SECONDS} s more for retried ones to land. A failed attempt is "
        "the dispatcher's back-pressure (a destination's waiting room full, e.g. the demo SMTP destination with "
        "max_concurrency 4) sending the record to a retry tier instead of holding an in-flight slot, by design.",
        "The dispatcher's idle figure includes its ledger (the action ids already on postcall.action-results.v1, "
        "read on assignment): after bench e2e on the same broker that is some 6,000 ids more than on a fresh one.",
    ]
    errors = Counter(f"{c.destination}: {c.error}" for c in load.failed)
    data = {"mib": mib, "broker_mib": broker, "failed_attempts": dict(errors)}
    return {"summary": summary, "charts": [chart], "data": data, "notes": notes}


def outcome_lines(load: Burst) -> list[dict[str, Any]]:
    outcomes = Counter(c.outcome for c in load.final.values())
    text = (
        f"{load.conversations:,} conversations, {load.actions:,} actions, as many results {load.seconds:.1f} s "
        f"after publishing; latest outcomes {dict(outcomes)}; {len(load.failed)} failed attempts went to a retry tier"
    )
    complete = len(load.final) == load.actions and not outcomes["dead_lettered"]
    detail = f"{len(load.final)}/{load.actions} actions with a result, {outcomes['dead_lettered']} dead-lettered"
    return [info_line("burst", text), check_line("every action has a result, none dead-lettered", complete, detail)]
