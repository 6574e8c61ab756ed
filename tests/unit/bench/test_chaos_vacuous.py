"""A chaos run passes only when its faults happened: zero conversations, or a run over before the first
kill or the broker outage, proves nothing and fails."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import bench.chaos.__main__ as chaos_main
from bench.chaos.__main__ import faults_missing
from tests.unit.bench.test_chaos_cleanup import FakeCluster, FakeStack


def test_each_fault_that_never_happened_is_named() -> None:
    assert faults_missing(0, 0, False, Counter(), 0) == [
        "kill -9",
        "rebalance",
        "broker outage",
        "a vendor's retry after an ingress kill",
        "receiver 500",
        "receiver reset",
        "receiver stall",
        "receiver slow",
        "receiver 429",
    ]
    every = Counter({"500": 9, "reset": 1, "stall": 1, "slow": 1, "429": 2})
    assert faults_missing(3, 1, True, every, 2) == []
    assert faults_missing(3, 1, True, every - Counter({"stall": 1}), 2) == ["receiver stall"]


async def test_a_run_of_zero_conversations_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return 0

    async def no_gaps(*args: Any, **kwargs: Any) -> dict[str, int]:
        return {}

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(chaos_main, "KafkaCluster", lambda **kwargs: FakeCluster(log))
    monkeypatch.setattr(chaos_main, "Stack", lambda *args, **kwargs: FakeStack(log))
    monkeypatch.setattr(FakeStack, "start", lambda self, instances: None, raising=False)
    for name in ("ensure_topics", "publish", "dead_letters", "wait_ready"):
        monkeypatch.setattr(chaos_main, name, nothing)
    monkeypatch.setattr(chaos_main, "recorded", no_gaps)
    monkeypatch.setattr(chaos_main.asyncio, "sleep", nothing)  # the settle time before the checks
    assert await chaos_main.chaos(0, 30, 7) == 1
    assert "never happened: kill -9, rebalance, broker outage" in capsys.readouterr().out
