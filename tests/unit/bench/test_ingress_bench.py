"""bench/ingress.py's run: the order of its three sides. The ingress processes, wrk, the bare loop and the
broker are fakes that note which side ran. No broker, no processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bench import ingress


class FakeProc:
    pid = 1

    def term(self, timeout: float = 0) -> None:
        pass


class FakeContext:
    """A broker that counts what the fake ingress published; three repeats of tiny runs."""

    kafka = None
    bootstrap_servers = "fake:9092"
    repeats = 3

    def __init__(self) -> None:
        self.published = 0

    def scaled(self, full: int, quick: int) -> int:
        return 4

    def log(self, message: str) -> None:
        pass

    def spawn(self, module: str, env: dict[str, str], args: Any = ()) -> FakeProc:
        return FakeProc()

    async def count(self, topic: str) -> int:
        return self.published


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeContext, list[str]]:
    """The fake context, and the sides in the order they ran (warm-ups included)."""
    ctx, ran = FakeContext(), []

    async def bare(ctx_: Any, payloads: Sequence[bytes]) -> tuple[float, list[float], float]:
        ran.append("bare")
        return 1000.0, [0.001] * len(payloads), 0.0001

    async def through_ingress(urls: Sequence[str], payloads: Sequence[bytes]) -> tuple[float, float, dict[str, int]]:
        ran.append("one" if len(urls) == 1 else "deployed")
        ctx.published += len(payloads)
        return 900.0, 0.002, {"200": len(payloads)}

    async def nothing(*args: Any, **kwargs: Any) -> None:
        pass

    monkeypatch.setattr(ingress, "bare", bare)
    monkeypatch.setattr(ingress, "through_ingress", through_ingress)
    monkeypatch.setattr(ingress, "ensure_topics", nothing)
    monkeypatch.setattr(ingress, "_ready", nothing)
    monkeypatch.setattr(ingress, "cpu_seconds", lambda pid: 0.0)
    return ctx, ran


async def test_every_side_takes_every_place_in_the_order_across_the_repeats(
    sides: tuple[FakeContext, list[str]],
) -> None:
    """The bare loop used to run first in every repeat (only the two ingress shapes alternated), so any
    drift over the run (the topic growing, other load) fell on the ingress side alone."""
    ctx, ran = sides
    await ingress.run(ctx)  # type: ignore[arg-type]
    measured = ran[3:]  # after the three warm-ups
    repeats = [measured[i : i + 3] for i in range(0, len(measured), 3)]
    assert len(repeats) == ctx.repeats
    assert all(sorted(r) == ["bare", "deployed", "one"] for r in repeats)
    for place in range(3):
        assert sorted(r[place] for r in repeats) == ["bare", "deployed", "one"]
