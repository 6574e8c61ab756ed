"""A consumer's probes on broker loss: /readyz says whether Kafka answers, /healthz does not.

Kubernetes restarts a pod whose liveness fails: on a broker outage every pod of every service would
restart together, again and again, for nothing (restarting does not bring the brokers back). Readiness
is what PostcallConsumerNotReady and `kubectl get pods` show: it must say the pod cannot work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster, free_port
from tests.integration.runtime.test_runtime import make_topics, worker_env
from tests.support.procs import Proc, start


def status(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3).status_code
    except httpx.TransportError:
        return None


def wait_for(proc: Proc, port: int, path: str, wanted: int, timeout: float, live: bool = True) -> float:
    """Seconds until `path` answers `wanted`; `live`: /healthz answers 200 all along."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.alive(), proc.output()[-3000:]
        assert not live or status(port, "/healthz") == 200, "liveness must not follow the brokers"
        if status(port, path) == wanted:
            return time.monotonic() - started
        time.sleep(0.5)
    pytest.fail(f"{path} never answered {wanted}:\n{proc.output()[-3000:]}")


@contextmanager
def worker_on_its_own_broker(tmp_path: Path) -> Iterator[tuple[KafkaCluster, Proc, int]]:
    """A worker ready on a broker of its own (the test stops it), its readiness lost after 3 s without a
    broker's answer (the default is 15 s: the same mechanism, sooner), and the port of its probes."""
    cluster = KafkaCluster(size=1).start()
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    port = free_port()
    proc: Proc | None = None
    try:
        topics = asyncio.run(make_topics(kafka))
        env = worker_env(kafka, topics, WORKER_RUNTIME__METRICS_PORT=str(port), WORKER_RUNTIME__KAFKA_READY_SECONDS="3")
        proc = start("tests.support.worker", env, work_dir=tmp_path)
        wait_for(proc, port, "/readyz", 200, 60, live=False)  # (nothing listens before the consumer started)
        yield cluster, proc, port
    finally:
        if proc is not None:
            proc.stop()
        cluster.stop_node(cluster.nodes[0], kill=True)  # a throwaway broker: no controlled shutdown to wait for
        cluster.stop()


def test_readiness_follows_the_brokers_and_liveness_does_not(tmp_path: Path) -> None:
    with worker_on_its_own_broker(tmp_path) as (cluster, proc, port):
        cluster.stop_node(cluster.nodes[0], kill=True)
        wait_for(proc, port, "/readyz", 503, 60)

        cluster.start_node(cluster.nodes[0])
        wait_for(proc, port, "/readyz", 200, 90)
        assert proc.term(timeout=60) == 0, proc.output()[-3000:]
        lines = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
        aiokafka = Counter(line["msg"].split(":")[0] for line in lines if line["logger"].startswith("aiokafka"))
        # each of aiokafka's repeated errors is shown once, not some ten times a second for the outage
        assert aiokafka and max(aiokafka.values()) <= 2, aiokafka


def test_sigterm_while_the_brokers_are_away_is_a_clean_stop(tmp_path: Path) -> None:
    """A pod told to stop during a broker outage (a rollout meeting a broker restart) exited with status 1
    and a CancelledError traceback: aiokafka's consumer.stop() raised its fetcher's own cancellation, and
    the producer was never stopped. It drains what it can and exits 0."""
    with worker_on_its_own_broker(tmp_path) as (cluster, proc, port):
        time.sleep(3)  # fetching
        cluster.stop_node(cluster.nodes[0], kill=True)
        wait_for(proc, port, "/readyz", 503, 60)  # its fetches fail and back off
        assert proc.term(timeout=60) == 0, proc.output()[-3000:]
        assert "Traceback" not in proc.output(), proc.output()[-3000:]
