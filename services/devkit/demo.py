"""`make run` and `make demo`: a real Kafka broker, the topics, the services (extractor, router,
dispatcher, recorder), the webhook ingress, the query API and console over the recorder's store (a
SQLite file in the run folder), and a demo sink; the example conversations are published, one example
per vendor format (Vapi, Retell, ElevenLabs) is sent through the ingress as signed HTTP, and per
conversation the actions that fired and arrived are shown. `once` also checks that the store has every
example conversation with its extraction, decisions and delivery attempts, through the API.

    python -m services.devkit.demo run    # stays up until Ctrl-C, then stops everything it started
    python -m services.devkit.demo once   # exits 0 only if every expected action arrived
    python -m services.devkit.demo run --llm local   # the extractor uses llama-server (make run LLM=local)

With --llm local the extractor talks to llama.cpp's llama-server with a small model from a PyPI package
(services/devkit/llama.py; built once, ~12 minutes). A 135M-parameter model on CPU takes half a minute
or more per conversation and extracts poorly: it shows the wiring, not the quality (README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from schemas.events import ActionCompleted, DecisionTrace
from schemas.routes import registry
from schemas.topics import ACTION_RESULTS, DECISIONS, default_partitions
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import ROOT, KafkaCluster, free_port
from services.devkit.llama import LlamaServer, build
from services.devkit.publish import load_examples, publish
from services.devkit.sink import DEMO_SECRETS, Sink
from services.devkit.stack import Stack
from services.devkit.webhooks import send_demo_webhooks, wait_ready

EXPECTED = ROOT / "examples" / "expected.json"
ARRIVED_OUTCOMES = {"delivered", "published", "skipped_duplicate"}
T = TypeVar("T")


@dataclass
class Conversation:
    conversation_id: str
    fired: list[str] = field(default_factory=list)
    planned: dict[str, tuple[str, str]] = field(default_factory=dict)  # action_id -> (flow, type)
    outcomes: dict[str, ActionCompleted] = field(default_factory=dict)
    decided: bool = False

    def arrived(self, sink: Sink, action_id: str) -> bool:
        done = self.outcomes.get(action_id)
        if done is None or done.outcome not in ARRIVED_OUTCOMES:
            return False
        return done.outcome == "published" or sink.counts[action_id] > 0

    def line(self, sink: Sink) -> str:
        parts = []
        for action_id, (flow, kind) in self.planned.items():
            done = self.outcomes.get(action_id)
            state = "arrived" if self.arrived(sink, action_id) else (done.outcome if done else "pending")
            parts.append(f"{flow}/{kind}={state}")
        if not self.decided:
            return f"{self.conversation_id:<34} waiting for the router"
        return f"{self.conversation_id:<34} " + (", ".join(parts) if parts else "no flow fired")


class Watcher:
    """Follows the decisions and results topics and matches them with what the sink received."""

    def __init__(self, kafka: KafkaSettings, sink: Sink, ids: list[str]) -> None:
        self.kafka, self.sink = kafka, sink
        self.conversations = {i: Conversation(i) for i in ids}
        self.decided: set[str] = set()

    async def follow(self, stop: asyncio.Event, on_change: Any = None) -> None:
        consumer = AIOKafkaConsumer(
            DECISIONS,
            ACTION_RESULTS,
            **self.kafka.client_options(),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    for record in records:
                        self._take(record.topic, record.value)
                if on_change is not None:
                    on_change()
        finally:
            await consumer.stop()

    def _take(self, topic: str, value: bytes) -> None:
        if topic == DECISIONS:
            trace = DecisionTrace.model_validate_json(value)
            conv = self.conversations.setdefault(trace.conversation_id, Conversation(trace.conversation_id))
            self.decided.add(trace.conversation_id)
            conv.decided = True
            conv.fired = [f.flow_id for f in trace.flows if f.fired]
            for flow in trace.flows:
                for action in flow.actions:
                    conv.planned[action.action_id] = (flow.flow_id, action.type)
        else:
            done = ActionCompleted.model_validate_json(value)
            conv = self.conversations.setdefault(done.conversation_id, Conversation(done.conversation_id))
            if done.outcome != "skipped_duplicate" or done.action_id not in conv.outcomes:
                conv.outcomes[done.action_id] = done

    def missing(self, expected: dict[str, list[str]]) -> dict[str, list[str]]:
        """Per conversation, the expected `flow/type` actions that have not arrived (or were not planned)."""
        out: dict[str, list[str]] = {}
        for conversation_id, wanted in expected.items():
            conv = self.conversations.get(conversation_id, Conversation(conversation_id))
            arrived = {f"{f}/{k}" for a, (f, k) in conv.planned.items() if conv.arrived(self.sink, a)}
            planned = sorted(f"{f}/{k}" for f, k in conv.planned.values())
            lacking = [w for w in wanted if w not in arrived]
            unexpected = [p for p in planned if p not in wanted]
            if lacking or unexpected:
                out[conversation_id] = lacking + [f"unexpected {u}" for u in unexpected]
        return out


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    return free_port()


async def demo(
    mode: str, kafka_port: int, timeout: float, ingress_port: int = 8080, llm: str = "heuristic", api_port: int = 8400
) -> int:
    os.environ.setdefault("POSTCALL_TOPIC_PARTITIONS", "3")
    llama: LlamaServer | None = None
    if llm == "local":
        llama = await _start_in_thread(_start_llama, lambda server: server.stop())
    cluster: KafkaCluster | None = None
    stack: Stack | None = None
    try:
        broker = KafkaCluster(size=1, ports=[_port_or_free(kafka_port)])
        cluster = await _start_in_thread(broker.start, KafkaCluster.stop)
        kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        created, _ = await ensure_topics(kafka, registry(), replication=1)
        partitions = default_partitions()  # postcall topics create names each as differing unless told
        print(
            f"kafka   {kafka.bootstrap_servers}  ({len(created)} topics created with "
            f"POSTCALL_TOPIC_PARTITIONS={partitions}: set it for postcall topics create)",
            flush=True,
        )
        async with Sink(DEMO_SECRETS, smtp_port=0, quiet=mode == "once") as sink:
            run_dir = Path(tempfile.mkdtemp(prefix="postcall-demo-"))
            env = {"SINK_PORT": str(sink.port), "SINK_SMTP_PORT": str(sink.smtp_port)}
            if llama is not None:  # one slow model: one conversation at a time, each within the handler timeout
                env.update({"extractor:POSTCALL_LLM__BASE_URL": llama.base_url,
                            "extractor:POSTCALL_LLM__MODEL": llama.model,
                            "extractor:POSTCALL_LLM__REQUEST_TIMEOUT_SECONDS": "280",
                            "extractor:POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS": "600",
                            "extractor:POSTCALL_RUNTIME__MAX_IN_FLIGHT": "1"})  # fmt: skip
                print(f"llm     {llama.model} at {llama.base_url} (llama-server)", flush=True)
            else:
                print("llm     none: the extractor uses its offline heuristic provider", flush=True)
            api = f"http://127.0.0.1:{_port_or_free(api_port)}"
            env["dispatcher:POSTCALL_CONSOLE_BASE_URL"] = api  # Slack cards link to the call in the console
            stack = Stack(kafka.bootstrap_servers, run_dir, extra_env=env).start()
            print(f"sink    {sink.url()}  smtp 127.0.0.1:{sink.smtp_port}   service logs: {run_dir}", flush=True)
            url = f"http://127.0.0.1:{_port_or_free(ingress_port)}"
            stack.start_ingress(int(url.rsplit(":", 1)[1]))
            stack.start_api(int(api.rsplit(":", 1)[1]))
            examples = load_examples()
            await publish(kafka, examples)
            print(f"published {len(examples)} example conversations", flush=True)
            await wait_ready(url)
            print(f"ingress {url}  POST /webhooks/<vapi|retell|elevenlabs|native>/copperline  {url}/docs", flush=True)
            received = await _through_ingress(url)
            await _wait_api(api, stack)
            print(
                f"api     {api}/api/v1/conversations  (curl it; explain: postcall explain <id> --api {api})", flush=True
            )
            print(f"console {api}/console", flush=True)
            store = stack.env("api", 0)["POSTCALL_DATABASE__URL"]  # not ./postcall.db, the commands' default
            print(f"store   {store}  (POSTCALL_DATABASE__URL for postcall api token, postcall store)", flush=True)
            watcher = Watcher(kafka, sink, [e.conversation_id for e in examples] + received)
            if mode == "once":
                deadline = time.monotonic() + timeout
                code = await _once(watcher, stack, timeout)
                return code or await _stored(api, deadline)
            return await _forever(watcher, stack)
    finally:
        if stack is not None:
            stack.stop()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        if llama is not None:
            llama.stop()


async def _start_in_thread(start: Callable[[], T], stop: Callable[[T], object]) -> T:
    """start() in a thread; a Ctrl-C meanwhile (the main task cancelled) waits for it to return and stops what
    it started: the broker and llama-server run in their own session, so the signal never reaches them."""
    started = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(stop, await started)
        raise


async def _wait_api(api: str, stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{api}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline or any(p.name == "api" for p in stack.dead()):
                raise SystemExit(f"the query API did not start; see {stack.run_dir}/api-0.log")
            await asyncio.sleep(0.2)


async def _stored(api: str, deadline: float) -> int:
    """Every example conversation in the store, through the API: its extraction, its decision trace, and
    a delivery attempt for each expected action (the recorder may be a moment behind the sink)."""
    expected = _expected()
    async with httpx.AsyncClient(base_url=api, timeout=10, trust_env=False) as client:
        while True:
            lacking = {cid: why for cid, wanted in expected.items() if (why := await _lacks(client, cid, wanted))}
            if not lacking or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    for conversation_id, why in lacking.items():
        print(f"NOT STORED {conversation_id}: {why}", flush=True)
    done = len(expected) - len(lacking)
    print(
        f"store: {done}/{len(expected)} conversations with their extraction, decisions and delivery attempts "
        f"(GET {api}/api/v1/conversations)",
        flush=True,
    )
    return 1 if lacking else 0


async def _lacks(client: httpx.AsyncClient, conversation_id: str, wanted: list[str]) -> str:
    answer = await client.get(f"/api/v1/conversations/{conversation_id}")
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}"
    found = answer.json()
    if not found["extractions"] or not found["decisions"]:
        return "no extraction or no decision trace yet"
    attempted = {f"{a['flow_id']}/{a['type']}" for a in found["actions"] if a["attempts"]}
    missing = [w for w in wanted if w not in attempted]
    return f"no attempt for {', '.join(missing)}" if missing else ""


def _start_llama() -> LlamaServer:
    print("llm     starting llama-server (the first time it is built: about 12 minutes)", flush=True)
    return LlamaServer(build(), context=8192).start()


async def _through_ingress(url: str) -> list[str]:
    conversations = []
    for platform, answer in await send_demo_webhooks(url):
        body = answer.json()
        print(f"webhook {platform:<10} -> {answer.status_code} {body.get('status', body)}", flush=True)
        if answer.status_code == 200 and "conversation_id" in body:
            conversations.append(str(body["conversation_id"]))
    return conversations


def _expected() -> dict[str, list[str]]:
    data: dict[str, list[str]] = orjson.loads(EXPECTED.read_bytes())
    return {k: sorted(v) for k, v in data.items() if not k.startswith("_")}


async def _once(watcher: Watcher, stack: Stack, timeout: float) -> int:
    expected, stop = _expected(), asyncio.Event()
    follower = asyncio.create_task(watcher.follow(stop))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (watcher.missing(expected) or watcher.decided < set(expected)):
        if stack.dead():
            print(f"a service exited: {[p.label for p in stack.dead()]}; see {stack.run_dir}", flush=True)
            break
        await asyncio.sleep(0.5)
    stop.set()
    await follower
    for conv in watcher.conversations.values():
        print(conv.line(watcher.sink), flush=True)
    missing = watcher.missing(expected)
    for conversation_id, lacking in missing.items():
        print(f"MISSING {conversation_id}: {', '.join(lacking)}", flush=True)
    total = sum(len(v) for v in expected.values())
    print(f"demo: {total - sum(len(v) for v in missing.values())}/{total} expected actions arrived", flush=True)
    return 1 if missing else 0


async def _forever(watcher: Watcher, stack: Stack) -> int:
    stop, shown = asyncio.Event(), dict[str, str]()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def show() -> None:
        for conv in watcher.conversations.values():
            line = conv.line(watcher.sink)
            if shown.get(conv.conversation_id) != line:
                shown[conv.conversation_id] = line
                print(f"actions {line}", flush=True)

    print("running; Ctrl-C stops everything", flush=True)
    await watcher.follow(stop, show)
    print("stopping", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.devkit.demo", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("run", "once"))
    parser.add_argument("--kafka-port", type=int, default=9092, help="used when free, else a free port")
    parser.add_argument("--timeout", type=float, default=180.0, help="once: give up after this many seconds")
    parser.add_argument("--ingress-port", type=int, default=8080, help="used when free, else a free port")
    parser.add_argument("--api-port", type=int, default=8400, help="the query API; used when free, else a free port")
    what = "local: the extractor uses llama-server with a small model (built when missing)"
    parser.add_argument("--llm", choices=("heuristic", "local"), default="heuristic", help=what)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(
            asyncio.run(demo(args.mode, args.kafka_port, args.timeout, args.ingress_port, args.llm, args.api_port))
        )


if __name__ == "__main__":
    main()
