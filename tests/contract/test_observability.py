"""The dashboard and the alerts use only metrics the services export, and the alerts mean what they say.

The exported names come from the `# TYPE` lines of the services' own registries (the metrics modules,
imported); tests/integration/test_metrics_names.py checks the same against the live /metrics of the
three running services. The alert expressions are evaluated by Prometheus' own promtool on synthetic
series (Debian package `prometheus`).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from deploy.observability import dashboard
from schemas.routes import SERVICES

# the services' metrics register in the default registry when their modules are imported
METRICS_MODULES = ("services.common.observability", "services.extractor.metrics", "services.router.metrics",
                   "services.dispatcher.metrics", "services.ingress.metrics", "services.recorder.metrics",
                   "services.api.app")  # fmt: skip
for _module in METRICS_MODULES:
    importlib.import_module(_module)

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy/observability"
# Used by the alerts, exported by others: Prometheus itself and kube-state-metrics.
EXTERNAL = {"up", "kube_pod_status_ready"}
SAMPLE_SUFFIXES = {"counter": ("", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|`[^`]*`|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels, keywords or numbers)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", text)  # Grafana: label_values(metric, label)
    for pattern in (_MATCHERS, _RANGES, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        if match.group().lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def exported_samples(exposition: str) -> set[str]:
    """Every sample name a /metrics text can carry, from its `# TYPE` lines (labelled series only
    appear once used, their TYPE line always)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        for suffix in SAMPLE_SUFFIXES.get(kind, ("",)):
            names.add(name.removesuffix("_total") + suffix if suffix == "_created" else name + suffix)
    return names


def dashboard_queries() -> list[str]:
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in board["templating"]["list"] if isinstance(v.get("query"), dict)]
    return queries


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def used_metric_names() -> dict[str, set[str]]:
    return {
        "dashboard": {n for q in dashboard_queries() for n in metric_names(q)},
        "alerts": {n for r in alert_rules() for n in metric_names(r["expr"])},
    }


# ── names ────────────────────────────────────────────────────────────────────────────────────────


def test_metric_name_extraction_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, service) (rate(a_seconds_bucket{x=~"b|c", y!~`.+\\.d`}[5m])))'
        " and on (service) b_total > bool 3 unless max without (pod) (c_gauge offset 1h) * 3600"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_gauge"}
    assert metric_names('label_values(d_total{namespace=~"$namespace"}, service)') == {"d_total"}


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = exported_samples(generate_latest(REGISTRY).decode())
    assert "postcall_records_processed_total" in exported and "postcall_handler_duration_seconds_bucket" in exported
    for source, names in used_metric_names().items():
        unknown = names - exported - EXTERNAL
        assert not unknown, f"{source} uses metrics no service exports: {sorted(unknown)}"


# labels every scraped series has besides its own: Prometheus' and the Prometheus Operator's target labels
TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}
_SELECTOR = re.compile(r"\b(postcall_\w+)\s*\{([^{}]*)\}")
_GROUP_BY = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^()]*)\)")


def label_names() -> dict[str, set[str]]:
    """Every sample name the services export -> the label names its series carry."""
    found: dict[str, set[str]] = {}
    for collector, names in REGISTRY._collector_to_names.items():  # no public listing of label names
        labels = set(getattr(collector, "_labelnames", ()) or getattr(collector, "labelnames", ()))
        for name in names:
            found[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return found


def label_problems(expr: str, shown: list[str]) -> list[str]:
    """Labels `expr` selects or groups by, or `shown` (legends, annotations) prints, that none of the
    series it reads carry."""
    known = label_names()
    metrics = {n for n in metric_names(expr) if n.startswith("postcall_")}
    carried = TARGET_LABELS | {"le"} | {label for n in metrics for label in known.get(n, set())}
    problems = [
        f"{name}{{{label}}}"
        for name, matchers in _SELECTOR.findall(expr)
        # `name{a="x"}` selects a; `name{a, b}` (the docs' way to name a metric's labels) lists them
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers) or re.findall(r"\w+", matchers)
        if label not in TARGET_LABELS | known.get(name, set())
    ]
    grouped = [label.strip() for group in _GROUP_BY.findall(expr) for label in group.split(",") if label.strip()]
    problems += [f"by ({label})" for label in grouped if label not in carried]
    kept = set(grouped) if re.search(r"\bby\s*\(", expr) else carried  # after `sum by (...)`, only those
    problems += [f"shows {label}" for label in shown if label not in kept]
    return problems


def test_dashboard_and_alerts_select_group_and_show_only_labels_their_metrics_carry() -> None:
    """The names are checked above; a label a query selects (`{outcome="held"}`), groups by or shows in a
    legend or an alert's annotation that its series do not carry selects nothing or prints nothing. The
    same for the queries and label lists in README and docs/ (`postcall_x{a, b}`)."""
    assert label_problems('sum by (source) (rate(postcall_ingress_requests_total{outcom="x"}[5m]))', ["pod"]) == [
        "postcall_ingress_requests_total{outcom}",
        "shows pod",
    ]
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    problems = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            shown = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
            problems[f"panel {panel['title']}"] = label_problems(target["expr"], shown)
    for rule in alert_rules():
        shown = re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values()))
        problems[f"alert {rule['alert']}"] = label_problems(rule["expr"], shown)
    for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for span in re.findall(r"`([^`\n]*postcall_\w+[^`\n]*)`", path.read_text()):
            problems[f"{path.relative_to(ROOT)}: {span}"] = label_problems(span, [])
    problems = {where: found for where, found in problems.items() if found}
    assert not problems, problems


def test_every_service_metric_family_is_on_the_dashboard() -> None:
    families = {m.name for m in REGISTRY.collect() if m.name.startswith("postcall_")}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used_metric_names()["dashboard"]}
    missing = {f for f in families if re.sub(r"_total$", "", f) not in shown}
    assert not missing, f"exported but on no panel: {sorted(missing)}"


def declared_label_values() -> dict[tuple[str, str], set[str]]:
    """(metric, label): the values the label takes, where the code declares them."""
    from schemas.events import ActionCompleted
    from services.ingress.metrics import OUTCOMES
    from services.router.metrics import ACTIONS, FLOWS

    runtime = (ROOT / "services/common/runtime.py").read_text()
    processed = set(re.findall(r'RECORDS_PROCESSED\.labels\([^,()]+, "(\w+)"\)', runtime))
    assert len(processed) >= 4, processed  # the pattern still finds the runtime's calls
    outcomes = get_args(ActionCompleted.model_fields["outcome"].annotation)
    return {
        ("postcall_router_flows_total", "outcome"): {labels[0] for labels in FLOWS.values},
        ("postcall_router_actions_total", "outcome"): {labels[1] for labels in ACTIONS.values},
        ("postcall_ingress_requests_total", "outcome"): set(OUTCOMES),
        ("postcall_deliveries_total", "outcome"): {*outcomes, "deferred"},  # deferred: handler.on_failure
        ("postcall_records_processed_total", "outcome"): processed,
    }


def test_a_panel_that_shows_a_metric_by_a_label_names_every_value_the_label_takes() -> None:
    """A panel's description is its legend for the series it draws: "Flows evaluated, by outcome (fired,
    not_fired, disabled)" left out held, the outcome PostcallFlowsHeld fires on. The metric's own help
    (what /metrics says) names every value too."""
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    helps = {m.name: m.documentation for m in REGISTRY.collect()}
    for (metric, label), values in declared_label_values().items():
        help_text = helps[metric.removesuffix("_total")]
        assert not [v for v in values if not re.search(rf"\b{v}\b", help_text)], (metric, help_text)
        panels = [
            p
            for p in board["panels"]
            for t in p.get("targets", [])
            if metric in metric_names(t["expr"]) and re.search(rf"\bby \([^)]*\b{label}\b", t["expr"])
        ]
        assert panels, f"no panel shows {metric} by {label}"
        for panel in panels:
            unnamed = sorted(v for v in values if not re.search(rf"\b{v}\b", panel.get("description", "")))
            assert not unnamed, f"panel {panel['title']!r} does not name {label} {unnamed}"


def test_all_services_on_the_dashboard_includes_those_that_consume_nothing() -> None:
    """The service variable lists the services of postcall_records_consumed_total (the consumers), and
    Grafana's "All" is those values as a regex: the ingress's postcall_records_produced_total{service=
    "ingress"} (the pipeline's input) never showed on "Consumed and produced / s". All is every service."""
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "service"]
    assert variable["includeAll"] and variable.get("allValue") == ".*"
    produced = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "records_produced" in t["expr"]]
    assert produced and all('service=~"$service"' in e for e in produced)


def test_the_service_dropdown_lists_the_ingress_beside_the_consumers() -> None:
    """The dropdown listed the services of postcall_records_consumed_total only: the ingress, which
    consumes nothing, showed under All but could not be picked. It lists the `service` values of the
    series the consumers and the ingress count with their own name."""
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "service"]
    match = re.fullmatch(r'label_values\(\{__name__=~"([\w|]+)", namespace=~"\$namespace"\}, service\)',
                         variable["query"]["query"])  # fmt: skip
    assert match, variable["query"]["query"]
    listed = set(match.group(1).split("|"))
    families = {m.name + "_total" if m.type == "counter" else m.name: m for m in REGISTRY.collect()}
    assert all(name in families for name in listed), listed - families.keys()
    assert "postcall_records_consumed_total" in listed  # every consumer
    publisher = (ROOT / "services/ingress/publisher.py").read_text()
    assert 'RECORDS_PRODUCED.labels("ingress"' in publisher and "postcall_records_produced_total" in listed


def test_dashboard_file_is_generated_from_dashboard_py() -> None:
    assert (OBSERVABILITY / "grafana-dashboard.json").read_text() == dashboard.render(), (
        "run `python -m deploy.observability.dashboard`"
    )


def test_dashboard_panels_do_not_overlap_and_have_unique_ids() -> None:
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area


# ── alerts ───────────────────────────────────────────────────────────────────────────────────────


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = github_anchors((ROOT / "docs/runbooks.md").read_text())
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/runbooks.md has no section for {rule['alert']}"


def texts_about(metric: str) -> dict[str, str]:
    """What an on-call engineer reads about a metric: the description and summary of each alert and the
    description of each dashboard panel whose query reads it, by alert or panel title."""
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    found = {
        r["alert"]: f"{r['annotations']['summary']} {r['annotations']['description']}"
        for r in alert_rules()
        if metric in metric_names(r["expr"])
    }
    for panel in board["panels"]:
        if any(metric in metric_names(t["expr"]) for t in panel.get("targets", [])):
            found[panel["title"]] = panel.get("description", "")
    return found


def test_what_the_alert_and_the_dashboard_say_ends_a_disabled_destination_is_what_does() -> None:
    """A destination disabled by a 410 stays disabled on every replica and across restarts until
    `postcall destinations enable` (services/dispatcher/shared.py, docs/runbooks.md). The alert said the
    dispatcher stopped delivering to it "until it restarts", the dashboard "(until restart)": an on-call
    engineer would restart the dispatcher and see nothing change."""
    texts = texts_about("postcall_destination_disabled")
    assert {"PostcallDestinationDisabled", "Destinations disabled or circuit open"} <= set(texts)
    for title, text in texts.items():
        text = " ".join(text.split())
        assert "postcall destinations enable" in text, title
        assert not re.search(r"until (it |a |the dispatcher )?restart", text), f"{title}: {text}"


_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def fixed_log_messages() -> set[str]:
    """The messages the services log verbatim: a log call whose message is a literal with no %-arguments
    (a message with arguments is rendered, so its "msg" is not the literal)."""
    found = set()
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOG_METHODS
                and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def test_the_runbooks_select_log_lines_by_messages_the_services_log() -> None:
    """A runbook's `jq 'select(.msg == "...")'` or `"msg": "..."` names a message some service logs as it
    is: one logged with %-arguments (`"configuration problem: %s"`) never equals its literal, and the
    command an on-call engineer pastes selects nothing."""
    text = (ROOT / "docs/runbooks.md").read_text()
    named = set(re.findall(r'\.msg == "([^"]+)"', text)) | set(re.findall(r'"msg": "([^"]+)"', text))
    assert {"commit failed", "kafka not reachable"} <= named
    assert named - fixed_log_messages() == set()


def test_the_alerts_asked_for_exist() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "PostcallConsumerLagGrowing",
        "PostcallDeadLettersArriving",
        "PostcallLLMCircuitOpen",
        "PostcallDestinationDisabled",
        "PostcallConsumerNotReady",
        "PostcallCommitsFailing",
    } <= names


def test_the_pod_and_job_alerts_select_every_consumer_service() -> None:
    """PostcallConsumerNotReady and PostcallMetricsDown name the consumers by pod and job (the Service's name,
    Prometheus Operator's default job label) in a regex: every service's StatefulSet and Service must match,
    or its pods can be down for good without an alert."""
    matchers = {
        rule["alert"]: dict(re.findall(r'(\w+)=~"([^"]+)"', rule["expr"]))
        for rule in alert_rules()
        if rule["alert"] in {"PostcallConsumerNotReady", "PostcallMetricsDown"}
    }
    for service in SERVICES:
        manifests = list(yaml.safe_load_all((ROOT / f"deploy/k8s/base/{service}.yaml").read_text()))
        (statefulset,) = [d["metadata"]["name"] for d in manifests if d["kind"] == "StatefulSet"]
        jobs = [d["metadata"]["name"] for d in manifests if d["kind"] == "Service"]
        for ordinal in (0, 11):
            pod = f"{statefulset}-{ordinal}"
            assert re.fullmatch(matchers["PostcallConsumerNotReady"]["pod"], pod), f"{pod}: no NotReady alert"
        assert jobs and all(re.fullmatch(matchers["PostcallMetricsDown"]["job"], job) for job in jobs), jobs


def test_the_ingress_and_the_api_have_not_ready_and_down_alerts() -> None:
    """The ingress and the API are Deployments beside the consumers: with every pod crash-looping, not
    ready or unscrapeable, an alert must say so (no metric of their own is left to fire anything)."""
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    job = dict(re.findall(r'(\w+)=~"([^"]+)"', rules["PostcallMetricsDown"]))["job"]
    for service, alert in (("ingress", "PostcallIngressNotReady"), ("api", "PostcallAPINotReady")):
        manifests = list(yaml.safe_load_all((ROOT / f"deploy/k8s/base/{service}.yaml").read_text()))
        (deployment,) = [d["metadata"]["name"] for d in manifests if d["kind"] == "Deployment"]
        (job_name,) = [d["metadata"]["name"] for d in manifests if d["kind"] == "Service"]
        pod = dict(re.findall(r'(\w+)=~"([^"]+)"', rules[alert]))["pod"]
        for name in (f"{deployment}-5d8f7c9b4-x7k2q", f"{deployment}-77b9cdf6d4-2mzhk"):  # <hash>-<suffix>
            assert re.fullmatch(pod, name), f"{name}: no {alert}"
        assert re.fullmatch(job, job_name), f"{job_name}: no PostcallMetricsDown"


def test_the_ingress_and_the_api_have_absent_alerts_on_their_jobs() -> None:
    """Scaled to zero, a Deployment leaves no series for its NotReady and MetricsDown alerts: an absent()
    alert on its job (the Service's name) says so, compared per namespace with MetricsDown's jobs."""
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    jobs = dict(re.findall(r'(\w+)=~"([^"]+)"', rules["PostcallMetricsDown"]))["job"]
    for service, alert in (("ingress", "PostcallIngressAbsent"), ("api", "PostcallAPIAbsent")):
        manifests = list(yaml.safe_load_all((ROOT / f"deploy/k8s/base/{service}.yaml").read_text()))
        (job_name,) = [d["metadata"]["name"] for d in manifests if d["kind"] == "Service"]
        assert re.findall(r'job="([^"]+)"', rules[alert]) == [job_name, job_name], alert
        assert re.findall(r'job=~"([^"]+)"', rules[alert]) == [jobs], alert


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `apt-get install -y --no-install-recommends prometheus` (Debian)")
    return found


def test_alert_rules_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump({"groups": yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["spec"]["groups"]})
    )
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's variables replaced by what Grafana would send
    replacements = {"$__rate_interval": "1m", "$__range": "6h", "$namespace": ".*", "$service": ".*"}
    rules = []
    for index, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values")):
        for variable, value in replacements.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted({"namespace": "postcall", **labels}.items()))
    return {"series": f"{metric}{{{label_text}}}", "values": values}


MAIN = "postcall.conversation-extracted.v1"
RETRY = "postcall.dispatcher.retry-2.v1"
# (alert, input series, minute of evaluation, expected output series of the alert's expression)
CASES: list[tuple[str, list[dict[str, str]], int, list[dict[str, Any]]]] = [
    (
        "PostcallConsumerLagGrowing",
        [
            series("postcall_consumer_lag_records", "0+100x40", service="router", topic=MAIN, partition="0"),
            series("postcall_consumer_lag_records", "0+50x40", service="router", topic=MAIN, partition="1"),
            # a retry tier holding records until they are due: never an alert
            series("postcall_consumer_lag_records", "5000+100x40", service="dispatcher", topic=RETRY, partition="0"),
            # a large but shrinking backlog: autoscaling is working
            series("postcall_consumer_lag_records", "9000-100x40", service="extractor", topic=MAIN, partition="0"),
        ],
        30,
        [{"labels": '{namespace="postcall", service="router"}', "value": 4500}],
    ),
    (
        "PostcallDeadLettersArriving",
        [
            series("postcall_dead_letters_total", "0+1x30", service="router", category="invalid_record", pod="a"),
            series("postcall_dead_letters_total", "7x30", service="extractor", category="permanent", pod="b"),
        ],
        20,
        [{"labels": '{category="invalid_record", namespace="postcall", service="router"}', "value": 10}],
    ),
    (
        "PostcallCommitsFailing",
        [
            series("postcall_commits_total", "0+2x30", service="router", result="failed", pod="stuck"),
            series("postcall_commits_total", "5x30", service="router", result="ok", pod="stuck"),
            # failures during a rebalance, with successes around them
            series("postcall_commits_total", "0+2x30", service="router", result="failed", pod="fine"),
            series("postcall_commits_total", "0+60x30", service="router", result="ok", pod="fine"),
        ],
        20,
        [{"labels": '{namespace="postcall", pod="stuck", service="router"}', "value": 20}],
    ),
    (
        "PostcallLLMCircuitOpen",
        [
            series("postcall_llm_circuit_open", "1x20", provider="openai", pod="a"),
            series("postcall_llm_circuit_open", "0x20", provider="openai", pod="b"),
            series("postcall_llm_circuit_open", "0x20", provider="heuristic", pod="a"),
        ],
        10,
        [{"labels": '{namespace="postcall", provider="openai"}', "value": 1}],
    ),
    (
        "PostcallDestinationDisabled",
        [
            series("postcall_destination_disabled", "0 0 1x10", destination="crm", pod="a"),
            series("postcall_destination_disabled", "0x12", destination="ops-slack", pod="a"),
        ],
        5,
        [{"labels": '{destination="crm", namespace="postcall"}', "value": 1}],
    ),
    (
        "PostcallConsumerNotReady",
        [
            series("kube_pod_status_ready", "0x20", pod="postcall-router-1", condition="true"),
            series("kube_pod_status_ready", "1x20", pod="postcall-router-1", condition="false"),
            series("kube_pod_status_ready", "1x20", pod="postcall-router-0", condition="true"),
            series("kube_pod_status_ready", "0x20", pod="some-other-app-0", condition="true"),
        ],
        15,
        [{"labels": '{namespace="postcall", pod="postcall-router-1"}', "value": 0}],
    ),
    (
        "PostcallLedgerIndexLarge",
        [
            series("postcall_ledger_index_bytes", f"{4 * 2**30}x40", pod="postcall-dispatcher-0"),
            series("postcall_ledger_index_bytes", f"{2**30}x40", pod="postcall-dispatcher-1"),
        ],
        35,
        [{"labels": '{namespace="postcall", pod="postcall-dispatcher-0"}', "value": 4 * 2**30}],
    ),
    (
        "PostcallDependencyPaused",
        [
            series("postcall_dependency_paused", "1x20", service="extractor", pod="a"),
            series("postcall_dependency_paused", "0x20", service="router", pod="b"),
        ],
        15,
        [{"labels": '{namespace="postcall", service="extractor"}', "value": 1}],
    ),
]


def test_alert_expressions_select_what_they_should(promtool: str, tmp_path: Path) -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    tests = [
        {
            "interval": "1m",
            "input_series": inputs,
            "promql_expr_test": [{"expr": exprs[alert], "eval_time": f"{minute}m", "exp_samples": expected}],
        }
        for alert, inputs, minute, expected in CASES
    ]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_alert_expression_check_can_fail(promtool: str, tmp_path: Path) -> None:
    wrong = {
        "interval": "1m",
        "input_series": [series("postcall_llm_circuit_open", "0x20", provider="openai", pod="a")],
        "promql_expr_test": [
            {
                "expr": {r["alert"]: r["expr"] for r in alert_rules()}["PostcallLLMCircuitOpen"],
                "eval_time": "10m",
                "exp_samples": [{"labels": '{namespace="postcall", provider="openai"}', "value": 1}],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": [], "tests": [wrong]}))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, check=False)
    assert result.returncode != 0
