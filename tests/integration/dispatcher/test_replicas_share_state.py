"""Two dispatcher processes on the real broker share each destination's state through Kafka
(postcall.destination-state.v1):

- a destination's rate limit holds for the group: two replicas together send within 10 % of it,
  one replica with all of the destination's work sends at the whole limit (the other wants none of it),
  and one that gets work while the other sends alone keeps the group near it;
- a 410 Gone met by one replica stops both, a restarted replica stays stopped, and
  `postcall destinations enable` lets both send again;
- (in process) a circuit one replica opens is open on the other, a replica started later reads every
  disabled destination before its first action, the live replicas are counted, and a destination's limit
  is split once a second replica has work for it (test_shared.py proves the heartbeat goes at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.events import WebhookRequested
from schemas.routes import registry
from schemas.topics import action_topic, dead_letter_topic
from services.common.kafka import ensure_topics, producer
from services.common.settings import KafkaSettings
from services.devkit.sink import DEMO_SECRETS, Reply, Sink
from services.devkit.stack import ServiceProcess, Stack, skip_backlog
from tests.integration.dispatcher.conftest import webhook
from tests.support.kafka import read_all
from tests.support.wait import until

WEBHOOKS = action_topic("webhook")
RATE = 4.0  # per second, for the whole group


def destinations(limited: str, gone: str) -> str:
    signing = f"    signing_secrets: [{{secret_env: CRM_WEBHOOK_SECRET, demo_default: '{DEMO_SECRETS[0]}'}}]\n"
    return (
        "destinations:\n"
        f"  - name: {limited}\n    kind: http\n    url: http://127.0.0.1:${{SINK_PORT}}/limited\n{signing}"
        f"    allow_private: true\n    rate_limit_per_second: {RATE}\n    rate_limit_burst: 1\n"
        f"  - name: {gone}\n    kind: http\n    url: http://127.0.0.1:${{SINK_PORT}}/gone\n{signing}"
        "    allow_private: true\n"
    )


@dataclasses.dataclass
class Group:
    stack: Stack
    sink: Sink
    kafka: KafkaSettings
    limited: str
    gone: str

    @property
    def replicas(self) -> list[ServiceProcess]:
        return self.stack.processes

    def owned(self, proc: ServiceProcess) -> set[int]:
        """The webhook topic's partitions this process holds now, from its log."""
        held: set[int] = set()
        for line in proc.log.read_bytes().splitlines() if proc.log.exists() else []:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            ours = {int(p.rsplit(":", 1)[1]) for p in entry.get("partitions", []) if p.startswith(f"{WEBHOOKS}:")}
            if entry.get("msg") == "partitions assigned":
                held |= ours
            elif entry.get("msg") == "partitions revoked":
                held -= ours
        return held

    async def balanced(self) -> list[set[int]]:
        """Wait until both replicas hold webhook partitions and the assignment stayed put for 3 s."""
        previous: list[set[int]] = []
        stable_since = time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert not self.stack.dead(), f"a dispatcher exited: {[p.label for p in self.stack.dead()]}"
            now = [self.owned(p) for p in self.replicas]
            if now != previous:
                previous, stable_since = now, time.monotonic()
            elif all(now) and time.monotonic() - stable_since >= 3:
                return now
            await asyncio.sleep(0.5)
        raise AssertionError(f"the dispatchers never shared the partitions: {previous}")

    async def send(self, destination: str, per_partition: dict[int, int]) -> list[str]:
        """Webhook actions to `destination`, so many on each partition; their conversation ids."""
        p = producer(self.kafka)
        await p.start()
        ids: list[str] = []
        try:
            for partition, count in per_partition.items():
                for _ in range(count):
                    cid = f"conv-{uuid.uuid4().hex[:12]}"
                    action: WebhookRequested = webhook(f"act-{uuid.uuid4().hex}", destination, {"cid": cid})
                    action = action.model_copy(update={"conversation_id": cid})
                    await p.send_and_wait(
                        WEBHOOKS, action.model_dump_json().encode(), key=cid.encode(), partition=partition
                    )
                    ids.append(cid)
        finally:
            await p.stop()
        return ids

    async def dead_lettered(self, cids: list[str]) -> list[str]:
        found = await read_all(self.kafka, dead_letter_topic("dispatcher"))
        return [r.key for r in found if r.key in cids]

    async def refused_or_sent(self, cids: list[str]) -> bool:
        """Every action dead-lettered, or one of them reached the receiver after its 410."""
        return len(self.sink.ids("/gone")) > 1 or len(set(await self.dead_lettered(cids))) == len(cids)


@pytest.fixture
async def group(kafka: KafkaSettings, tmp_path: Path) -> AsyncIterator[Group]:
    await ensure_topics(kafka, registry(), replication=1)
    suffix = uuid.uuid4().hex[:8]  # the destination state topic outlives this test: names of its own
    limited, gone = f"limited-{suffix}", f"gone-{suffix}"
    (tmp_path / "destinations.yaml").write_text(destinations(limited, gone))
    async with Sink(DEMO_SECRETS, quiet=True) as sink:
        env = {
            "SINK_PORT": str(sink.port),
            "POSTCALL_MAX_WAIT_SECONDS": "30",  # every action waits for its token in place (no retry tier)
            "POSTCALL_RUNTIME__SESSION_TIMEOUT_MS": "10000",
        }
        stack = Stack(
            kafka.bootstrap_servers,
            tmp_path / "logs",
            destinations_file=tmp_path / "destinations.yaml",
            extra_env=env,
        )
        await skip_backlog(kafka.bootstrap_servers, ("dispatcher",))  # other tests' leftover actions
        stack.start(instances=2, services=("dispatcher",))
        try:
            yield Group(stack, sink, kafka, limited, gone)
        finally:
            stack.stop()


async def test_two_replicas_keep_a_destinations_rate_limit_within_ten_percent(
    group: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    owned = await group.balanced()
    # the same number of actions for each replica, spread over the partitions it holds
    n = 20
    per_partition = {p: n // len(parts) for parts in owned for p in parts}
    await group.send(group.limited, per_partition)
    total = sum(per_partition.values())
    await until("every delivery", lambda: len(group.sink.ids("/limited")) >= total, timeout=120)
    arrivals = sorted(r["received_at"] for r in group.sink.received if r["path"] == "/limited")
    assert all(r["verified"] for r in group.sink.received)
    # after the first token of each replica: the steady rate while both replicas have work
    steady = arrivals[2:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    with capsys.disabled():
        print(
            f"\n[shared rate limit] 2 dispatcher replicas, limit {RATE}/s: {rate:.2f}/s over {len(steady)} deliveries"
        )
    assert RATE * 0.9 <= rate <= RATE * 1.1, f"{rate:.2f}/s for a limit of {RATE}/s"


async def test_one_replica_with_all_of_a_destinations_work_sends_at_the_whole_limit(
    group: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    owned = await group.balanced()
    n = 20
    busy = sorted(owned[0])
    per_partition = {p: n // len(busy) + (1 if i < n % len(busy) else 0) for i, p in enumerate(busy)}
    await group.send(group.limited, per_partition)
    await until("every delivery", lambda: len(group.sink.ids("/limited")) >= n, timeout=120)
    arrivals = sorted(r["received_at"] for r in group.sink.received if r["path"] == "/limited")
    steady = arrivals[1:]  # after the first token
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    with capsys.disabled():
        print(f"\n[shared rate limit] 1 of 2 replicas with work, limit {RATE}/s: {rate:.2f}/s over {len(steady)}")
    assert RATE * 0.9 <= rate <= RATE * 1.1, f"{rate:.2f}/s for a limit of {RATE}/s (half of it: not shared out)"


async def test_a_replica_getting_work_while_the_other_sends_alone_keeps_the_group_near_the_limit(
    group: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md's numbers: one replica sending alone for 3 s with tokens reserved ahead, then the
    other gets work and wakes; the first's share halves and its reserved tokens stretch (without the stretch:
    7 deliveries in a second and 13 in two at 4/s)."""
    owned = await group.balanced()

    def spread(n: int, parts: set[int]) -> dict[int, int]:
        ordered = sorted(parts)
        return {p: n // len(ordered) + (1 if i < n % len(ordered) else 0) for i, p in enumerate(ordered)}

    await group.send(group.limited, spread(24, owned[0]))  # 6 s of work at the whole limit
    await until("the first replica sending", lambda: group.sink.ids("/limited"), timeout=60)
    await asyncio.sleep(3)
    await group.send(group.limited, spread(16, owned[1]))
    await until("every delivery", lambda: len(group.sink.ids("/limited")) >= 40, timeout=120)
    arrivals = sorted(r["received_at"] for r in group.sink.received if r["path"] == "/limited")

    def most(span: float) -> int:
        return max(sum(1 for b in arrivals if a <= b < a + span) for a in arrivals)

    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    with capsys.disabled():
        print(f"\n[shared rate limit] a replica waking, limit {RATE}/s: at most {most(1)} in a second, "
              f"{most(2)} in two; {rate:.2f}/s over {len(arrivals)}")  # fmt: skip
    # the limit, the one token each replica may hold saved up (burst 1), and about a read's overlap while the
    # first still sends at its whole share: 9-10 in two seconds measured, 13 when the reserved tokens did not stretch
    assert most(2) <= 2 * RATE + 3, (most(1), most(2))


async def test_a_410_stops_both_replicas_a_restarted_one_stays_stopped_and_enable_restores_them(
    group: Group,
) -> None:
    owned = await group.balanced()
    everywhere = {p: 1 for parts in owned for p in parts}
    group.sink.script("/gone", Reply(410), then=Reply(200))  # gone; back after its owner fixed it

    [first] = await group.send(group.gone, {min(owned[0]): 1})
    await until("the 410", lambda: group.sink.ids("/gone"))
    await until("its dead letter", lambda: group.dead_lettered([first]))
    await asyncio.sleep(2)  # the other replica has read the decision by now

    # both replicas: every action to the destination is refused without a request
    sent = await group.send(group.gone, {p: 2 for p in everywhere})
    await until("every dead letter", lambda: group.refused_or_sent(sent), timeout=60)
    assert len(group.sink.ids("/gone")) == 1, "a replica sent to a destination that answered 410 Gone"

    # a restarted replica reads the decision before its first action
    restarted = group.replicas[0]
    restarted.terminate()
    restarted.start()
    owned = await group.balanced()
    sent = await group.send(group.gone, {p: 2 for parts in owned for p in parts})
    await until("every dead letter", lambda: group.refused_or_sent(sent), timeout=60)
    assert len(group.sink.ids("/gone")) == 1, "a restarted replica sent to a destination that answered 410 Gone"

    from typer.testing import CliRunner

    from services.cli.main import app

    runner, bootstrap = CliRunner(), group.kafka.bootstrap_servers
    status = await asyncio.to_thread(runner.invoke, app, ["destinations", "status", "--bootstrap", bootstrap])
    assert status.exit_code == 0, status.output
    line = next(line for line in status.output.splitlines() if group.gone in line)
    assert "disabled" in line and "410" in line
    assert "2 dispatcher replica(s) alive" in status.output

    enabled = await asyncio.to_thread(runner.invoke, app, ["destinations", "enable", group.gone, "-b", bootstrap])
    assert enabled.exit_code == 0, enabled.output
    await asyncio.sleep(2)
    sent = await group.send(group.gone, {p: 1 for parts in owned for p in parts})
    await until("deliveries on both replicas", lambda: len(group.sink.ids("/gone")) == 1 + len(sent))


# ── in process: two registries, each with its SharedState, on a topic of this test ──────────────────


def registry_for(url: str) -> Any:
    from services.dispatcher import destinations as d
    from services.dispatcher.registry import Registry

    text = (
        "destinations:\n  - name: crm\n    kind: http\n"
        f"    url: {url}\n    allow_private: true\n    rate_limit_per_second: 10\n"
        "    circuit_breaker: {consecutive_failures: 2, open_seconds: 60}\n"
    )
    return Registry(d.parse(text, {}), default_timeout=5, max_wait_seconds=1)


@asynccontextmanager
async def replica(kafka: KafkaSettings, topic: str, reg: Any, name: str) -> AsyncIterator[Any]:
    from services.dispatcher.shared import SharedState

    async with SharedState(kafka, reg, name, topic=topic, heartbeat_seconds=0.5) as shared:
        reg.attach(shared)
        yield shared


async def test_an_open_circuit_a_410_and_the_replica_count_reach_every_replica(kafka: KafkaSettings) -> None:
    from schemas.topics import Topic
    from services.common.breaker import State
    from tests.support.kafka import unique

    topic = unique("destination-state")
    await ensure_topics(kafka, [Topic(topic, "test", 1, 3_600_000, "compact")], replication=1)
    a, b = registry_for("http://127.0.0.1:9/a"), registry_for("http://127.0.0.1:9/a")
    async with replica(kafka, topic, a, "replica-a") as shared_a, replica(kafka, topic, b, "replica-b"):
        await until("two live replicas", lambda: shared_a.live_replicas == 2, timeout=10)
        assert a.gate("crm").bucket.rate == 10.0  # the other has no work for crm: the whole limit here
        assert b.gate("crm").bucket.take(max_wait=1)[0]  # now it has: its heartbeat says so
        await until("crm shared out", lambda: a.gate("crm").bucket.rate == 5.0, timeout=1.5)

        breaker = a.gate("crm").breaker
        for _ in range(2):
            assert breaker.check() == 0.0
            breaker.record(False)
        assert breaker.state is State.OPEN
        await until("the circuit open on the other replica", lambda: b.gate("crm").breaker.state is State.OPEN)
        assert 50 < b.gate("crm").breaker.check() <= 60

        a.disable("crm", "destination disabled (410 Gone)")
        await until("the 410 on the other replica", lambda: "crm" in b.disabled)

        c = registry_for("http://127.0.0.1:9/a")
        async with replica(kafka, topic, c, "replica-c"):  # started later: reads the state before any action
            assert c.disabled == {"crm": "destination disabled (410 Gone)"}
            assert c.gate("crm").breaker.state is State.OPEN
    await asyncio.sleep(0.2)
    d = registry_for("http://127.0.0.1:9/a")
    async with replica(kafka, topic, d, "replica-d") as shared_d:  # the others stopped cleanly: alone
        assert shared_d.live_replicas == 1 and d.gate("crm").bucket.rate == 10.0
        assert "crm" in d.disabled
