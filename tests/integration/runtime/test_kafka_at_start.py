"""A consumer service started while no broker answers waits for Kafka (alive, not ready, a log line a try)
and starts once one does; before, `python -m services.router` (every consumer service) ended at once with
aiokafka's KafkaConnectionError traceback, exit 1, and crash-looped with the kubelet's back-off.

"Kafka comes up" is a TCP forwarder opened on the address the service was given, to the session's broker:
the bootstrap goes through it, and the broker's metadata then points the clients at the broker itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from schemas.routes import registry
from schemas.topics import CONVERSATION_EXTRACTED, DECISIONS
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import free_port
from services.devkit.stack import skip_backlog
from tests.support.calls import ended, extracted
from tests.support.http import answers
from tests.support.kafka import produce, read_all, unique
from tests.support.procs import start, until

ROOT = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def forwarding(port: int, to: tuple[str, int]) -> Iterator[None]:
    """Accept on 127.0.0.1:`port` and copy bytes both ways to `to`, in a thread of its own."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(*to)
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    async def main() -> None:
        servers.append(await asyncio.start_server(serve, "127.0.0.1", port))
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):  # closed by the test
            await servers[0].serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10), "the forwarder did not start"
    try:
        yield
    finally:
        loop.call_soon_threadsafe(servers[0].close)
        thread.join(10)


def closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there: a connection is refused at once
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


@pytest.mark.parametrize("service", ["router", "dispatcher"])
def test_a_service_started_before_kafka_waits_then_starts(kafka: KafkaSettings, tmp_path: Path, service: str) -> None:
    host, broker_port = kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    asyncio.run(ensure_topics(kafka, registry(), replication=1))
    asyncio.run(skip_backlog(kafka.bootstrap_servers, (service,)))  # other tests' leftovers are not ours
    port, metrics = closed_port(), free_port()
    env = {
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "POSTCALL_RUNTIME__METRICS_PORT": str(metrics),
        "POSTCALL_CONFIG_DIR": str(ROOT / "examples" / "agents"),
        "POSTCALL_DESTINATIONS_FILE": str(ROOT / "examples" / "dispatcher" / "destinations.yaml"),
        "POSTCALL_LEDGER_DIR": str(tmp_path / "ledger"),
    }
    proc = start(f"services.{service}", env, work_dir=tmp_path)
    base = f"http://127.0.0.1:{metrics}"
    try:
        until(partial(answers, f"{base}/healthz", 200), proc, "alive while waiting")
        until(lambda: "waiting for Kafka" in proc.output(), proc, "the wait logged")
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503 and ready.text.startswith("not ready: waiting for Kafka"), ready.text
        time.sleep(2)  # a few tries: still waiting, not exited
        assert proc.alive(), proc.output()
        with forwarding(port, (host, int(broker_port))):
            until(partial(answers, f"{base}/readyz", 200), proc, "ready once a broker answers", seconds=90)
            if service == "router":  # and it routes what is published from now on
                cid = unique("waited")
                asyncio.run(produce(kafka, CONVERSATION_EXTRACTED, [(cid, extracted(ended(cid)))]))
                deadline = time.monotonic() + 60
                while not any(r.key == cid for r in asyncio.run(read_all(kafka, DECISIONS, timeout=5))):
                    assert time.monotonic() < deadline, f"no decision for {cid}\n{proc.output()}"
            assert proc.term(timeout=60) == 0
    finally:
        proc.stop()
    output = proc.output()
    assert "Kafka answers, starting" in output and "Traceback" not in output, output


def test_a_stop_while_waiting_for_kafka_is_a_clean_exit(tmp_path: Path) -> None:
    metrics = free_port()
    env = {
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
        "POSTCALL_RUNTIME__METRICS_PORT": str(metrics),
        "POSTCALL_CONFIG_DIR": str(ROOT / "examples" / "agents"),
    }
    proc = start("services.router", env, work_dir=tmp_path)
    try:
        until(lambda: answers(f"http://127.0.0.1:{metrics}/healthz", 200), proc, "alive while waiting")
        started = time.monotonic()
        assert proc.term(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.stop()
    assert "stopped while waiting for Kafka" in proc.output() and "Traceback" not in proc.output(), proc.output()
