"""bench/router.py's measure: a record processed twice must not be counted. The runtime and the broker are
fakes (the runtime 'writes' its outputs as counts, the clock's poller is replaced). No broker."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from bench import router
from bench.context import BenchContext


class FakeContext:
    kafka = None

    def __init__(self) -> None:
        self.records: Counter[str] = Counter()
        self.commits: dict[str, dict[int, int | None]] = {}

    async def topic(self, prefix: str, partitions: int = 1) -> str:
        return prefix

    async def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        pass

    async def count(self, topic: str) -> int:
        return self.records[topic]

    async def committed(self, group: str, topic: str) -> dict[int, int | None]:
        return self.commits.get(group, {p: None for p in range(router.PARTITIONS)})

    each_once = BenchContext.each_once  # the real check, over this context's counts and commits


def fake_runtime(ctx: FakeContext, processed: int, twice: int) -> type:
    """A runtime that processes the first `processed` inputs of the pass-through, the first `twice` of them
    again (a record handed back and processed anew), and commits what it processed when it stops."""

    class FakeRuntime:
        def __init__(self, service: Any, *, kafka: Any, settings: Any) -> None:
            self.route = service.route

        async def run(self) -> None:
            (sink,) = self.route.output_topics
            ctx.records[sink] += processed + twice

        def stop(self) -> None:
            ctx.commits[self.route.group_id] = {0: processed, 1: 0, 2: 0}

    return FakeRuntime


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    async def at_once(ctx: Any, sinks: list[str], expected: int, timeout: float = 600) -> float:
        return time.monotonic() + 1.0

    monkeypatch.setattr(router, "_all_written", at_once)
    (tmp_path / "bench-line.yaml").write_text(router.AGENT)
    return tmp_path


@pytest.mark.parametrize(
    ("processed", "twice"),
    [(99, 1), (100, 1)],
    ids=["the-last-input-left-unread", "every-input-read"],
)
async def test_a_run_where_a_record_was_processed_twice_is_an_error_not_a_rate(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, processed: int, twice: int
) -> None:
    """The clock stops when the sinks hold as many records as the inputs make: a duplicate stops it early,
    whether the runtime stopped with an input still unread (the count looks right) or not (one too many)."""
    ctx = FakeContext()
    monkeypatch.setattr(router, "Runtime", fake_runtime(ctx, processed, twice))
    with pytest.raises(RuntimeError, match="processed twice"):
        await router.measure(ctx, "pass-through", "in", 100, config_dir, 100)  # type: ignore[arg-type]


async def test_a_run_with_every_input_processed_once_gives_its_rate(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = FakeContext()
    monkeypatch.setattr(router, "Runtime", fake_runtime(ctx, 100, 0))
    rate, _ = await router.measure(ctx, "pass-through", "in", 100, config_dir, 100)  # type: ignore[arg-type]
    assert rate > 0
