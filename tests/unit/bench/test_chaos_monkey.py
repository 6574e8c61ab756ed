"""The chaos monkey's faults are the real ones: a broker is lost (kill -9, no controlled shutdown), and some
service instances stay down past the session timeout, so that their group rebalances."""

from __future__ import annotations

import asyncio

from bench.chaos.__main__ import Monkey
from tests.unit.bench.test_chaos_cleanup import FakeCluster, FakeProcess, FakeStack


async def test_the_broker_outage_is_a_kill_9() -> None:
    log: list[str] = []
    stack = FakeStack(log, [FakeProcess("router-0", log)])
    monkey = Monkey(stack, FakeCluster(log), 1, every=(5, 5), outage_after=0.01, outage=0.05)  # type: ignore[arg-type]
    async with monkey.running():
        while not monkey.broker_stopped:
            await asyncio.sleep(0.01)
    assert log == ["broker kill -9", "broker start"]
