"""Test session wiring: one private Kafka broker on a free port for the whole session.

The broker is started only when a test asks for the `kafka` fixture (integration tests), is never a
broker someone already runs on 9092, and is stopped when the session ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("POSTCALL_TOPIC_PARTITIONS", "3")
os.environ.setdefault("POSTCALL_TOPIC_REPLICATION", "1")

from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka(kafka_cluster: KafkaCluster) -> KafkaSettings:
    """KafkaSettings pointing at the session's private broker; topics are created per test."""
    return KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
