"""The chaos run leaves nothing running: a failure after the brokers started stops them and the services, and
a monkey left on an error (or Ctrl-C) starts no service instance and no broker again after the caller stopped
them."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import bench.chaos.__main__ as chaos_main
from bench.chaos.__main__ import Monkey


@dataclass
class FakeProcess:
    label: str
    log: list[str]
    restarts: int = 0
    metrics_port: int = 1

    @property
    def name(self) -> str:
        return self.label.rsplit("-", 1)[0]

    def kill9(self) -> None:
        self.log.append(f"kill {self.label}")

    def start(self) -> None:
        self.log.append(f"start {self.label}")


@dataclass
class FakeNode:
    node_id: int = 3


@dataclass
class FakeCluster:
    log: list[str]
    nodes: list[FakeNode] = field(default_factory=lambda: [FakeNode()])
    bootstrap_servers: str = "127.0.0.1:1"

    def start(self) -> FakeCluster:
        self.log.append("cluster start")
        return self

    def stop(self) -> None:
        self.log.append("cluster stop")

    def stop_node(self, node: FakeNode, kill: bool = False) -> None:
        self.log.append("broker kill -9" if kill else "broker stop")

    def start_node(self, node: FakeNode) -> None:
        self.log.append("broker start")


@dataclass
class FakeStack:
    log: list[str]
    processes: list[FakeProcess] = field(default_factory=list)
    stopped: list[FakeProcess] = field(default_factory=list)  # not running

    def dead(self) -> list[FakeProcess]:
        return self.stopped

    def stop(self) -> None:
        self.log.append("stack stop")

    def start_ingress(self, port: int, endpoints_file: Path) -> FakeProcess:
        self.log.append("ingress start")
        return FakeProcess("ingress-0", self.log)


async def test_a_monkey_left_on_an_error_starts_nothing_again() -> None:
    log: list[str] = []
    stack = FakeStack(log, [FakeProcess("router-0", log), FakeProcess("router-1", log)])
    cluster = FakeCluster(log)
    monkey = Monkey(stack, cluster, 1, every=(0.01, 0.01), down=(0.4, 0.4), outage_after=0.01, outage=0.4)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        async with monkey.running():
            while not (monkey.kills and monkey.broker_stopped):
                await asyncio.sleep(0.01)
            raise RuntimeError("the run failed while a victim and a broker were down")
    log.append("caller stopped everything")
    await asyncio.sleep(0.8)  # past the victim's downtime and the outage
    after = log[log.index("caller stopped everything") + 1 :]
    assert after == [], after


async def test_a_failure_after_the_brokers_started_stops_the_services_and_the_brokers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log: list[str] = []

    async def no_topics(*args: Any, **kwargs: Any) -> None:
        pass

    async def broker_gone(*args: Any) -> None:
        raise ConnectionError("the brokers went away")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(chaos_main, "KafkaCluster", lambda **kwargs: FakeCluster(log))
    monkeypatch.setattr(chaos_main, "ensure_topics", no_topics)
    monkeypatch.setattr(chaos_main, "Stack", lambda *args, **kwargs: FakeStack(log))
    monkeypatch.setattr(FakeStack, "start", lambda self, instances: log.append("stack start"), raising=False)
    monkeypatch.setattr(chaos_main, "wait_ready", no_topics)
    monkeypatch.setattr(chaos_main, "publish", broker_gone)
    with pytest.raises(ConnectionError):
        await chaos_main.chaos(3, 30, 7)
    assert log == ["cluster start", "stack start", "ingress start", "stack stop", "cluster stop"]
