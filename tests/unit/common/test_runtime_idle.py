"""idle_exit_seconds without a broker: a scripted consumer stands in for aiokafka's.

Idle time counts only once the consumer is in its group and each partition it holds has been fetched:
a slow start-up, group join or first fetch (a loaded machine) must not end a run before it reads the
records waiting for it, and a rebalance later is not idle time either."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from schemas.routes import ROUTER
from services.common.api import Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings

IDLE = 0.1
SLOW = 0.25  # each of the join, the first fetch and a rebalance takes longer than IDLE
TP = TopicPartition(ROUTER.input_topics[0], 0)


async def never_called(event: Any, ctx: Any) -> list[Any]:
    raise AssertionError("records are taken by the test's _accept_batch")


class ScriptedConsumer:
    """Joins the group SLOW after start, answers the first fetch SLOW after that with one record, then
    is revoked and assigned again (a rebalance lasting SLOW) and stays empty."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.started = time.monotonic()
        self.assigned: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int] = {}
        self.step = "joining"
        self.since = self.started

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return int(time.time() * 1000) if tp in self.highwaters else None

    async def position(self, tp: TopicPartition) -> int:  # the lag's, from the assignment on
        return 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 1)

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(min(timeout_ms / 1000, 0.02))
        late = time.monotonic() - self.since > SLOW
        if self.step == "joining" and late:
            await self.runtime.on_revoked(set())  # aiokafka revokes the (empty) assignment before a join
            self.assigned = {TP}
            await self.runtime.on_assigned({TP})
            self._next("fetching")
        elif self.step == "fetching" and late:
            self.highwaters[TP] = 1
            self._next("rebalancing")
            await self.runtime.on_revoked({TP})
            self.assigned = set()
            return {TP: ["record 0"]}
        elif self.step == "rebalancing" and late:
            self.assigned = {TP}
            await self.runtime.on_assigned({TP})
            self.highwaters.pop(TP)  # a new assignment: its partitions' highwaters are unknown again
            self._next("refetching")
        elif self.step == "refetching" and late:
            self.highwaters[TP] = 1
            self._next("idle")
        return {}

    def _next(self, step: str) -> None:
        self.step, self.since = step, time.monotonic()


async def test_start_up_the_join_the_first_fetch_and_a_rebalance_are_not_idle_time() -> None:
    settings = RuntimeSettings(**ROUTER.runtime_defaults() | {"metrics_port": 0, "idle_exit_seconds": IDLE})
    runtime = Runtime(Service(ROUTER, never_called), kafka=KafkaSettings(), settings=settings)
    consumer = ScriptedConsumer(runtime)
    runtime._consumer = consumer  # type: ignore[assignment]
    read: list[str] = []
    runtime._accept_batch = lambda tp, records: read.extend(records)  # type: ignore[method-assignment]

    await asyncio.wait_for(runtime._loop(), timeout=10)

    assert read == ["record 0"]  # the run lasted until its record was read
    assert consumer.step == "idle"  # and through the rebalance, to the fetch after it
    assert time.monotonic() - consumer.since < IDLE + 1.0  # then it still ends once idle
