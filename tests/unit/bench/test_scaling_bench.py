"""bench/scaling.py's run: a record processed twice must not be counted. A fake context stands in for the
broker and the worker processes (their outputs written when the harness waits for them). No broker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from bench import scaling


class FakeProc:
    def term(self, timeout: float = 0) -> None:
        pass


class FakeContext:
    """Topics as lists of values; the 'instances' answer each job once, and the first `twice` jobs again."""

    bootstrap_servers = "fake:9092"

    def __init__(self, twice: int = 0) -> None:
        self.twice = twice
        self.topics: dict[str, list[bytes]] = {}

    async def topic(self, prefix: str, partitions: int = 1) -> str:
        self.topics[prefix] = []
        return prefix

    async def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        pass

    def spawn(self, module: str, env: dict[str, str], args: Any = ()) -> FakeProc:
        return FakeProc()

    async def produce_raw(self, topic: str, records: Iterable[tuple[bytes | None, bytes, int | None]]) -> None:
        self.topics[topic].extend(value for _, value, _ in records)

    async def wait_for_count(self, topic: str, n: int, timeout: float) -> float:
        jobs = [orjson.loads(v) for v in self.topics["scale-in"]]
        for job in jobs + jobs[: self.twice]:
            self.topics[topic].append(orjson.dumps({"id": job["id"], "attempt": 1, "pid": 1}))
        return time.monotonic() + 1.0

    async def read_values(self, topic: str) -> list[tuple[bytes | None, bytes, int]]:
        return [(None, value, 0) for value in self.topics[topic]]


@pytest.fixture(autouse=True)
def balanced(monkeypatch: pytest.MonkeyPatch) -> None:
    async def at_once(procs: Any, topic: str, timeout: float) -> None:
        pass

    monkeypatch.setattr(scaling, "wait_until_balanced", at_once)


async def test_a_run_where_a_record_was_processed_twice_is_an_error_not_a_rate() -> None:
    """A rebalance in the middle of a run that hands a partition over before its offsets were committed
    makes records be processed again: their outputs would end the clock early and flatter the rate."""
    with pytest.raises(RuntimeError, match="101 outputs of 100 distinct records for 100"):
        await scaling.measure(FakeContext(twice=1), 2, 100)  # type: ignore[arg-type]


async def test_a_run_with_one_output_per_record_gives_its_rate() -> None:
    rate = await scaling.measure(FakeContext(), 2, 100)  # type: ignore[arg-type]
    assert 0 < rate <= 100


async def test_the_instance_counts_run_in_reverse_order_every_other_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """One instance ran first and four last in every repeat, so drift over the run (the broker's log
    growing, other load) fell on the judged ratio's two sides unevenly."""
    ran: list[int] = []

    async def measure(ctx: Any, k: int, n: int) -> float:
        ran.append(k)
        return 100.0 * k

    class Context:
        quick, smoke, repeats = False, False, 2

        def scaled(self, full: int, quick: int) -> int:
            return full

        def log(self, message: str) -> None:
            pass

    monkeypatch.setattr(scaling, "measure", measure)
    await scaling.run(Context())  # type: ignore[arg-type]
    assert ran == [1, 2, 3, 4, 4, 3, 2, 1]
