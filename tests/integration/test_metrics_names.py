"""The dashboard and the alerts read only metrics the running services really export.

Starts extractor, router and dispatcher as `python -m services.<name>`, the way the Kubernetes
manifests do, the query API (on a SQLite store) and the webhook ingress, against a private broker
(so that no other test's records reach them, nor their outputs another test), scrapes each one's
live /metrics over HTTP and checks every metric name the dashboard and the alerts use against what
they serve. Also the probe endpoints the manifests point at, and a clean exit on SIGTERM within the
pods' grace period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from schemas.routes import SERVICES, registry
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster, free_port
from tests.contract.test_observability import EXTERNAL, exported_samples, used_metric_names
from tests.support.procs import Proc, start

ROOT = Path(__file__).resolve().parents[2]
OWN_METRICS = {
    "extractor": {"postcall_llm_tokens_total", "postcall_llm_cost_usd_total", "postcall_llm_circuit_open"},
    "router": {"postcall_router_flows_total", "postcall_router_config_problems"},
    "dispatcher": {"postcall_deliveries_total", "postcall_destination_disabled", "postcall_ledger_entries"},
    "recorder": {"postcall_recorder_rows_total", "postcall_recorder_batch_duration_seconds_bucket"},
    "api": {"postcall_api_requests_total", "postcall_api_request_duration_seconds_bucket"},
    # every endpoint x outcome series exists from the start (the alerts' first increase)
    "ingress": {"postcall_ingress_requests_total", "postcall_ingress_request_duration_seconds_bucket"},
}
KAFKA_SERVICES = tuple(SERVICES)
COMMON_METRICS = {"postcall_records_processed_total", "postcall_consumer_lag_records", "postcall_commits_total"}


@dataclass
class Running:
    proc: Proc
    port: int

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)


def service_env(service: str, kafka: KafkaSettings, port: int, work: Path) -> dict[str, str]:
    if service == "api":
        return {"POSTCALL_API__PORT": str(port), "POSTCALL_DATABASE__URL": f"sqlite:///{work / 'store.db'}"}
    if service == "ingress":
        return {
            "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "POSTCALL_INGRESS__PORT": str(port),
            "POSTCALL_INGRESS__HOST": "127.0.0.1",
            "POSTCALL_INGRESS__ENDPOINTS_FILE": str(ROOT / "examples/ingress/endpoints.yaml"),
        }
    env = {
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "POSTCALL_RUNTIME__METRICS_PORT": str(port),
        "POSTCALL_RUNTIME__METRICS_HOST": "127.0.0.1",
        "POSTCALL_RUNTIME__GROUP_INSTANCE_ID": f"{service}-metrics-test-0",
    }
    if service in ("extractor", "router"):
        env["POSTCALL_CONFIG_DIR"] = str(ROOT / "examples/agents")
    if service == "recorder":
        env["POSTCALL_DATABASE__URL"] = f"sqlite:///{work / 'recorder.db'}"
    if service == "dispatcher":
        env["POSTCALL_DESTINATIONS_FILE"] = str(ROOT / "examples/dispatcher/destinations.yaml")
    return env


def wait_until_ready(service: str, running: Running, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert running.proc.alive(), f"{service} exited:\n{running.proc.output()[-3000:]}"
        try:
            if running.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{service} not ready in time:\n{running.proc.output()[-3000:]}")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    cluster = KafkaCluster(size=1).start()
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    running: dict[str, Running] = {}
    work = tmp_path_factory.mktemp("services")
    try:
        asyncio.run(ensure_topics(kafka, registry(), 1))
        for service in (*KAFKA_SERVICES, "api", "ingress"):
            port = free_port()
            running[service] = Running(start(f"services.{service}", service_env(service, kafka, port, work)), port)
        deadline = time.monotonic() + 120
        for service, r in running.items():
            wait_until_ready(service, r, deadline)
        yield running
    finally:
        for r in running.values():
            r.proc.stop()
        cluster.stop()


def test_each_service_answers_the_probes_the_manifests_use(services: dict[str, Running]) -> None:
    for service, r in services.items():
        assert r.get("/healthz").status_code == 200, service
        assert r.get("/readyz").status_code == 200, service
        assert r.get("/nowhere").status_code == 404, service


def test_each_service_exports_the_runtime_metrics_and_its_own(services: dict[str, Running]) -> None:
    for service, r in services.items():
        exported = exported_samples(r.get("/metrics").text)
        common = COMMON_METRICS if service in KAFKA_SERVICES else set()
        assert common | OWN_METRICS[service] <= exported, (service, sorted(exported))


def test_dashboard_and_alerts_use_only_metrics_the_running_services_export(services: dict[str, Running]) -> None:
    exported = set().union(*(exported_samples(r.get("/metrics").text) for r in services.values()))
    for source, names in used_metric_names().items():
        unknown = names - exported - EXTERNAL
        assert not unknown, f"{source} uses metrics no running service exports: {sorted(unknown)}"


def test_sigterm_drains_and_exits_within_the_grace_period(services: dict[str, Running]) -> None:
    for service, r in services.items():
        grace = 30  # Kubernetes' default terminationGracePeriodSeconds
        path = ROOT / f"deploy/k8s/base/{service}.yaml"
        if path.exists():
            (workload,) = [
                d for d in yaml.safe_load_all(path.read_text()) if d["kind"] in ("StatefulSet", "Deployment")
            ]
            grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        code = r.proc.term(timeout=grace)  # raises if the process outlives the grace period
        assert code == 0, f"{service} exited with {code} after SIGTERM:\n{r.proc.output()[-3000:]}"
