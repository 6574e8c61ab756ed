"""The wait for Kafka at a consumer service's start (services.common.starting), without a broker."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from services.common import observability, starting
from services.common.settings import KafkaSettings

DOCS = Path(__file__).resolve().parents[3] / "docs"


class Keeping(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: a connection there is refused at once


async def test_aiokafkas_line_naming_a_brokers_error_comes_once_a_minute_not_before_each_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """f54c012's docs said each 'waiting for Kafka' line came after aiokafka's line naming the broker's error
    (a refused certificate or password among them); aiokafka's lines go through RepeatFilter (one a minute
    per line and broker), so after the first try only the waiting line came, its reason 'no broker ...
    answered (KafkaConnectionError)': walked with python -m services.router on a closed port, 5 tries in
    16 s, one aiokafka line. The docs now say where and how often the reason is."""
    observability.quiet_libraries()  # aiokafka's loggers as a service's plog.setup leaves them
    monkeypatch.setattr(starting, "FIRST_WAIT_SECONDS", 0.01)
    monkeypatch.setattr(starting, "MOST_WAIT_SECONDS", 0.01)
    records: list[logging.LogRecord] = []
    handler = Keeping(records)
    logging.getLogger().addHandler(handler)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    task = asyncio.create_task(starting.kafka_reachable(kafka, host="127.0.0.1", port=0))
    try:
        while sum(r.getMessage() == "waiting for Kafka" for r in records) < 4:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logging.getLogger().removeHandler(handler)
    named = [r for r in records if r.name.startswith("aiokafka") and "Connect call failed" in r.getMessage()]
    assert len(named) == 1
    for doc in ("operations.md", "runbooks.md"):
        text = " ".join((DOCS / doc).read_text().split())
        assert "at the first try and then at most once a minute per broker" in text, doc
