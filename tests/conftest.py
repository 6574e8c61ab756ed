"""Test session wiring: one private Kafka broker and one PostgreSQL server, each on a free port, for the
whole session (started only when a test asks for them).

The broker is started only when a test asks for the `kafka` fixture (integration tests), is never a
broker someone already runs on 9092, and is stopped when the session ends.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("POSTCALL_TOPIC_PARTITIONS", "3")
os.environ.setdefault("POSTCALL_TOPIC_REPLICATION", "1")
if "PYTEST_XDIST_WORKER" in os.environ:
    # xdist gives its workers COLUMNS=80 and LINES; a rich Console made at import time (the CLI's) would keep
    # that width, while the CLI's tests choose theirs per run (CliRunner's env)
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster
from services.devkit.postgres import PostgresServer
from tests.support.contract import Watch, sweep, watch_consumers

pytest_plugins = ["tests.support.sigterm"]  # SIGTERM tears the session down, servers included


@pytest.fixture(scope="session", autouse=True)
def contract_watch() -> Iterator[Watch]:
    """Every record a consumer in this process reads is checked against schemas/json/ (tests/support/contract.py)."""
    watch = Watch()
    undo = watch_consumers(watch)
    yield watch
    undo()


@pytest.fixture(scope="session")
def kafka_cluster(contract_watch: Watch) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(size=1).start()
    try:
        yield cluster
        from tests.support import sigterm  # registered by pytest_plugins, not imported before it

        if sigterm.terminated:
            return  # stopping on SIGTERM: no time for a sweep of every record
        # the last net: every record on the broker, subprocesses' included, against the published schemas
        before = len(contract_watch.violations)
        settings = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        read = asyncio.run(sweep(settings, contract_watch))
        found = contract_watch.violations[before:]
        assert not found, f"{len(found)} record(s) of {read} break the published schemas:\n" + "\n".join(found[:20])
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server (Debian's package) for the session; each test gets its own database."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite (a file) and on PostgreSQL (a fresh database on the session's server)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
