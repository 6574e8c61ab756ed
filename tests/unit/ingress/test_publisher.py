"""What the ingress's producer is asked for: an answer only after every in-sync replica has the record."""

from __future__ import annotations

from typing import Any

import pytest

from services.common import kafka as common_kafka
from services.common.settings import KafkaSettings
from services.ingress.publisher import Publisher


async def test_the_producer_waits_for_all_in_sync_replicas_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    class Unreachable:
        def __init__(self, **options: Any) -> None:
            asked.append(options)

        async def start(self) -> None:
            raise OSError("no broker here")

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(common_kafka, "AIOKafkaProducer", Unreachable)
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=0.3)
    await publisher.start()
    assert not await publisher.ready()
    await publisher.stop()
    assert asked, "the publisher never built a producer"
    assert {(o["acks"], o["enable_idempotence"]) for o in asked} == {("all", True)}
    assert {o["request_timeout_ms"] for o in asked} == {300}  # a request never outlives the 503 deadline
