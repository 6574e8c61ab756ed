"""The chaos run (issue: proof under load and faults).

A three-broker KRaft cluster (RF 3, min.insync.replicas 2), two instances of each service and an
ingress, N conversations: half published to Kafka, half posted to the ingress's native endpoint by a
vendor that sends each webhook again until it is answered 2xx (bench/chaos/vendor.py); the ingress is
the monkey's first victim, so a webhook published but not yet answered is retried. While they run: a
random service instance is kill -9'd every few seconds and restarted (a quarter of them after the
session timeout, so their group rebalances), one broker is kill -9'd once and started 30 s later, and
the webhook receivers answer 500 to 16 % of requests, reset the connection of 3 %, stall 4 % or trickle
3 % past the dispatcher's timeout and answer 429 with Retry-After to 3 %. The receiver checks every
request's signature and counts actions, not ids (bench/chaos/tally.py): it prints `lost` (expected
actions never delivered) and `cross_id_repeats` (actions delivered under more than one webhook-id)
beside `same_id_repeats`. The recorders' store must then hold every conversation and every delivered
action as delivered (bench/chaos/store.py). Exit 0 only when lost, cross_id_repeats, bad signatures,
dead letters, the store's gaps and the vendor's refused webhooks are all 0, no service instance died but
by the monkey's hand, and every fault happened (a run too short for one proves nothing about it).

    python -m bench.chaos [--conversations 10000] [--deadline 840]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from bench.chaos.conversations import Action, expected_actions, generate
from bench.chaos.store import store_gaps
from bench.chaos.tally import Tally
from bench.chaos.vendor import Vendor
from schemas.routes import SERVICES, registry
from schemas.topics import dead_letter_topic
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster, free_port
from services.devkit.publish import publish
from services.devkit.sink import DEMO_SECRETS, Reply, Sink
from services.devkit.stack import ServiceProcess, Stack
from services.devkit.webhooks import DEMO_SECRETS as INGRESS_DEMO_SECRETS
from services.devkit.webhooks import wait_ready
from services.dispatcher.signing import verify

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "agents"  # the agents' folder only: any other YAML in it would be read as an agent
NATIVE_DEMO_SECRET = INGRESS_DEMO_SECRETS["native"]  # endpoints.yaml's demo_default


SESSION_TIMEOUT_S = 10  # the services' consumer session timeout in this run
# what the receiver injects, each below a cumulative share of the requests
FAULT_ODDS = (("500", 0.16), ("reset", 0.19), ("stall", 0.23), ("slow", 0.26), ("429", 0.29))
FAULTS = tuple(name for name, _ in FAULT_ODDS)


class FaultyReceiver(Sink):
    """Checks every request's signature, then answers 500 (16 %), resets the connection (3 %), stalls past
    the timeout (4 %), trickles its answer past it (3 %) or says 429 + Retry-After (3 %) — each webhook-id meets
    at most `max_faults` injected faults, so every action can succeed within its retry schedule. Every delivery
    is counted by the action its body names (tally.py): a stalled or trickled answer is a delivery (the receiver
    did the work; the dispatcher gave up waiting and sends it again), a reset is not."""

    def __init__(self, seed: int, expected: set[Action], max_faults: int = 3) -> None:
        super().__init__([os.environ.get("CHAOS_SECRET", DEMO_SECRETS[0])], quiet=True)
        self.rng, self.max_faults = random.Random(seed), max_faults
        self.tally = Tally(expected)
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.injected: Counter[str] = Counter()

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "GET":
            return super()._route(method, path, headers, body)
        self.requests += 1
        if not verify(self.secrets, headers, body):
            self.tally.bad_signatures += 1
            return Reply(401, body=b'{"error":"bad signature"}')
        wid = headers.get("webhook-id", "")
        roll = self.rng.random()
        fault = next((name for name, below in FAULT_ODDS if roll < below), None)
        if fault is None or self.faults[wid] >= self.max_faults:
            self.tally.delivered(wid, body)
            return Reply(200)
        self.faults[wid] += 1
        self.injected[fault] += 1
        if fault == "500":
            return Reply(500)
        if fault == "reset":
            return Reply(reset=True)
        if fault == "429":
            return Reply(429, headers={"Retry-After": "1"})
        self.tally.delivered(wid, body)  # it answers 200, but after the dispatcher gave up
        return Reply(200, delay=3.0) if fault == "stall" else Reply(200, trickle=0.05)


async def dead_letters(kafka: KafkaSettings) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.common.kafka import partitions_of

    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None)
    await consumer.start()
    try:
        total = 0
        for service in SERVICES:
            topic = dead_letter_topic(service)
            tps = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            total += sum(ends[tp] - starts[tp] for tp in tps)
        return total
    finally:
        await consumer.stop()


async def recorded(db: Path, conversations: set[str], receiver: FaultyReceiver, within: float = 60) -> dict[str, int]:
    """The store's gaps (bench/chaos/store.py) once the recorders have caught up, or after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        gaps = await asyncio.to_thread(store_gaps, db, conversations, set(receiver.tally.deliveries))
        if not any(gaps.values()) or time.monotonic() > deadline:
            return gaps
        await asyncio.sleep(2)


class Monkey:
    """kill -9 a random service instance every few seconds and restart it; kill -9 one broker once and start it
    again 30 s later.
    Its work lasts as long as an `async with monkey.running():` block."""

    def __init__(
        self,
        stack: Stack,
        cluster: KafkaCluster,
        seed: int,
        *,
        every: tuple[float, float] = (3, 6),
        down: tuple[float, float] = (0.5, 2),
        # a quarter of the victims stay down past the session timeout: with static membership a quick restart
        # rejoins without a rebalance, so only these move partitions mid-stream
        long_down: tuple[float, float] = (SESSION_TIMEOUT_S + 3, SESSION_TIMEOUT_S + 6),
        long_share: float = 0.25,
        outage_after: float = 8,  # early enough that even a short run is still delivering
        outage: float = 30,
        first: ServiceProcess | None = None,  # the first victim (the ingress, while the vendor is sending)
    ) -> None:
        self.stack, self.cluster, self.rng = stack, cluster, random.Random(seed)
        self.every, self.down, self.outage_after, self.outage = every, down, outage_after, outage
        self.long_down, self.long_share, self.first = long_down, long_share, first
        self.kills = 0
        self.rebalances = 0
        self.victim: ServiceProcess | None = None  # killed and not yet started again
        self.broker_stopped = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """At work during the block. Leaving it normally lets the current kill and the outage finish (the victim
        and the broker come back); leaving it on an error or Ctrl-C cancels them, so that nothing is started
        again once the caller stops the stack and the cluster (a service or broker nobody would stop)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop))
        try:
            yield
            stop.set()
            await task
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self, stop: asyncio.Event) -> None:
        broker_task = asyncio.create_task(self._broker_outage(stop))
        try:
            while not stop.is_set():
                if await stopped(stop, self.rng.uniform(*self.every)):
                    break
                victim = self.first if self.first and not self.kills else self.rng.choice(self.stack.processes)
                # the ingress is in no consumer group: a long downtime rebalances nothing
                long = self.rng.random() < self.long_share and victim.name in SERVICES
                down = self.rng.uniform(*(self.long_down if long else self.down))
                self.victim = victim
                victim.kill9()
                self.kills += 1
                self.rebalances += long
                note = f", down {down:.0f} s: past the session timeout, its group rebalances" if long else ""
                print(f"chaos  kill -9 {victim.label}{note}", flush=True)
                await asyncio.sleep(down)
                victim.start()
                victim.restarts += 1
                self.victim = None
            await broker_task
        finally:
            broker_task.cancel()

    async def _broker_outage(self, stop: asyncio.Event) -> None:
        if await stopped(stop, self.outage_after):
            return
        node = self.cluster.nodes[-1]
        print(f"chaos  kill -9 broker {node.node_id}, back in {self.outage:.0f} s", flush=True)
        await asyncio.to_thread(self.cluster.stop_node, node, kill=True)  # lost, not shut down in order
        self.broker_stopped = True
        await asyncio.sleep(self.outage)
        await asyncio.to_thread(self.cluster.start_node, node)
        print(f"chaos  broker {node.node_id} is back", flush=True)


def crashed(stack: Stack, victim: ServiceProcess | None) -> set[str]:
    """The service instances that are not running, but for the monkey's current victim: they died on their own
    (a crash at start after a kill, an unhandled error): the other instance doing all the work hides it."""
    return {p.label for p in stack.dead() if p is not victim}


async def stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less when `stop` is set: whether it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def faults_missing(
    kills: int, rebalances: int, broker_stopped: bool, injected: Counter[str], vendor_retries: int
) -> list[str]:
    """The faults that never happened: a run without one of them proves nothing about it (too few
    conversations, a run over before the outage), so it does not pass."""
    missing = [] if kills else ["kill -9"]
    missing += [] if rebalances else ["rebalance"]
    missing += [] if broker_stopped else ["broker outage"]
    missing += [] if vendor_retries else ["a vendor's retry after an ingress kill"]
    return missing + [f"receiver {fault}" for fault in FAULTS if not injected[fault]]


async def chaos(n: int, deadline_s: float, seed: int) -> int:
    started = time.monotonic()
    os.environ["POSTCALL_TOPIC_PARTITIONS"] = "6"
    conversations = generate(n, seed)
    expected = expected_actions(conversations)
    receiver = FaultyReceiver(seed, expected)
    # whatever fails or is interrupted, from the first broker on: the services, the receiver and the brokers stop
    async with contextlib.AsyncExitStack() as running:
        cluster = await asyncio.to_thread(KafkaCluster(size=3, heap="384m").start)
        running.push_async_callback(asyncio.to_thread, cluster.stop)
        kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        await ensure_topics(kafka, registry(), replication=3)
        await receiver.start()
        running.push_async_callback(receiver.stop)
        run_dir = Path(tempfile.mkdtemp(prefix="postcall-chaos-"))
        env = {
            "CHAOS_PORT": str(receiver.port),
            "POSTCALL_RUNTIME__COMMIT_INTERVAL_SECONDS": "0.5",
            "POSTCALL_RUNTIME__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_S * 1000),
            "POSTCALL_RUNTIME__DRAIN_TIMEOUT_SECONDS": "5",
            "POSTCALL_RUNTIME__MAX_IN_FLIGHT": "128",
            "extractor:POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[1, 2, 4, 8]",
            "router:POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[1, 2, 4]",
            "dispatcher:POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS": "[1, 2, 4, 8, 15, 30]",
            "dispatcher:POSTCALL_RUNTIME__MAX_IN_FLIGHT": "512",
            "POSTCALL_LOG_LEVEL": "WARNING",
        }
        stack = Stack(
            kafka.bootstrap_servers,
            run_dir,
            config_dir=CONFIG_DIR,
            destinations_file=HERE / "destinations.yaml",
            extra_env=env,
            static_membership=True,
        )
        print(f"chaos  {n} conversations, {len(expected)} expected actions, logs in {run_dir}", flush=True)
        running.callback(stack.stop)
        stack.start(instances=2)
        ingress = stack.start_ingress(free_port(), HERE / "endpoints.yaml")
        await wait_ready(f"http://127.0.0.1:{ingress.metrics_port}")
        # half published as a platform team does, half posted to the ingress by a vendor that retries
        published, posted = conversations[0::2], conversations[1::2]
        await publish(kafka, published)
        secret = os.environ.get("CHAOS_NATIVE_SECRET", NATIVE_DEMO_SECRET)
        vendor = Vendor(f"http://127.0.0.1:{ingress.metrics_port}/webhooks/native/chaos", secret)
        monkey = Monkey(stack, cluster, seed, first=ingress)
        died: set[str] = set()
        async with monkey.running():
            sending = asyncio.create_task(vendor.send(posted))
            running.callback(sending.cancel)
            while time.monotonic() - started < deadline_s and receiver.tally.actions_delivered < len(expected):
                await asyncio.sleep(5)
                died |= crashed(stack, monkey.victim)
                print(
                    f"chaos  t={time.monotonic() - started:.0f}s actions delivered "
                    f"{receiver.tally.actions_delivered}/{len(expected)}"
                    f" requests={receiver.requests} kills={monkey.kills}"
                    f" webhooks accepted {vendor.accepted}/{len(posted)} (retries {vendor.retries})",
                    flush=True,
                )
        await asyncio.sleep(3)
        dead = await dead_letters(kafka)
        gaps = await recorded(run_dir / "store.db", {c.conversation_id for c in conversations}, receiver)
        died |= crashed(stack, None)
    counts = receiver.tally.summary()
    print(
        f"chaos  injected faults {dict(receiver.injected)}, kills={monkey.kills}, rebalances={monkey.rebalances}, "
        f"broker outage={'yes' if monkey.broker_stopped else 'no'}, {time.monotonic() - started:.0f}s",
        flush=True,
    )
    print(
        f"chaos  ingress: {len(posted)} conversations posted, accepted={vendor.accepted} "
        f"vendor_retries={vendor.retries} refused={len(vendor.refused)}",
        flush=True,
    )
    print(
        f"chaos: conversations={n} "
        + " ".join(f"{k}={v}" for k, v in {**counts, **gaps}.items())
        + f" dead_lettered={dead}",
        flush=True,
    )
    missing = faults_missing(monkey.kills, monkey.rebalances, monkey.broker_stopped, receiver.injected, vendor.retries)
    if missing:
        print(f"chaos: FAILED, proves nothing: these faults never happened: {', '.join(missing)}", flush=True)
    if died:
        print(f"chaos: FAILED, died on their own: {', '.join(sorted(died))} (their logs are in {run_dir})", flush=True)
    passed = receiver.tally.passed() and dead == 0 and not any(gaps.values()) and not vendor.refused and not died
    return 0 if passed and not missing else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--deadline", type=float, default=840.0, help="seconds before giving up (default 14 min)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.exit(asyncio.run(chaos(args.conversations, args.deadline, args.seed)))


if __name__ == "__main__":
    main()
