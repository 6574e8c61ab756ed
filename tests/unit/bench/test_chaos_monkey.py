"""The chaos monkey's faults are the real ones: a broker is lost (kill -9, no controlled shutdown), and some
service instances stay down past the session timeout, so that their group rebalances."""

from __future__ import annotations

import asyncio

from bench.chaos.__main__ import SESSION_TIMEOUT_S, Monkey, crashed
from tests.unit.bench.test_chaos_cleanup import FakeCluster, FakeProcess, FakeStack


async def test_the_broker_outage_is_a_kill_9() -> None:
    log: list[str] = []
    stack = FakeStack(log, [FakeProcess("router-0", log)])
    monkey = Monkey(stack, FakeCluster(log), 1, every=(5, 5), outage_after=0.01, outage=0.05)  # type: ignore[arg-type]
    async with monkey.running():
        while not monkey.broker_stopped:
            await asyncio.sleep(0.01)
    assert log == ["broker kill -9", "broker start"]


async def test_some_victims_stay_down_past_the_session_timeout() -> None:
    log: list[str] = []
    stack = FakeStack(log, [FakeProcess("router-0", log), FakeProcess("router-1", log)])
    quick, slow = (0.001, 0.001), (0.05, 0.05)
    monkey = Monkey(stack, FakeCluster(log), 3, every=quick, down=quick, long_down=slow, outage_after=60)  # type: ignore[arg-type]
    async with monkey.running():
        while monkey.kills < 40:
            await asyncio.sleep(0.01)
    assert 0 < monkey.rebalances < monkey.kills
    assert sum(1 for line in log if line.startswith("kill")) == sum(1 for line in log if line.startswith("start"))
    assert min(Monkey(stack, FakeCluster(log), 3).long_down) > SESSION_TIMEOUT_S  # type: ignore[arg-type]


def test_an_instance_that_died_on_its_own_is_named_but_not_the_monkeys_victim() -> None:
    log: list[str] = []
    victim, crashed_one, running = (FakeProcess(name, log) for name in ("router-0", "recorder-1", "extractor-0"))
    stack = FakeStack(log, [victim, crashed_one, running], stopped=[victim, crashed_one])
    assert crashed(stack, victim) == {"recorder-1"}  # type: ignore[arg-type]
    assert crashed(stack, None) == {"router-0", "recorder-1"}  # type: ignore[arg-type]


async def test_a_long_downtime_of_the_ingress_is_no_rebalance() -> None:
    log: list[str] = []
    stack = FakeStack(log, [FakeProcess("ingress-0", log)])
    quick = (0.001, 0.001)
    monkey = Monkey(stack, FakeCluster(log), 3, every=quick, down=quick, long_down=quick, long_share=1, outage_after=60)  # type: ignore[arg-type]
    async with monkey.running():
        while monkey.kills < 5:
            await asyncio.sleep(0.01)
    assert monkey.rebalances == 0
