"""Every alert rule in deploy/observability/alerts.yaml is tested with `promtool test rules`: the rule
itself (expression, `for`, labels) fires on the series that should raise it, at the time it should, and
not on the ones that should not. A new alert without a case here fails the coverage test.

Annotations are checked elsewhere (tests/contract/test_observability.py: every alert has a summary and a
runbook section); the rule file given to promtool here is alerts.yaml without them, so a case states only
the labels an alert fires with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "observability" / "alerts.yaml"
MAIN = "postcall.conversation-extracted.v1"
RETRY = "postcall.dispatcher.retry-2.v1"
NS = {"namespace": "postcall"}
INGRESS_POD = "postcall-ingress-5d8f7c9b4-x7k2q"  # a Deployment's pods: <name>-<template hash>-<suffix>
API_POD = "postcall-api-6c9d4b7f8-p2m4z"


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in sorted({**NS, **labels}.items()))
    return {"series": f"{metric}{{{text}}}", "values": values}


def fires(**labels: str) -> dict[str, Any]:
    return {"exp_labels": {**NS, **labels}}


def absent_case(job: str, pod: str, severity: str) -> tuple[list[dict[str, str]], list[tuple[int, list[Any]]]]:
    """`job`'s last target in namespace postcall goes at minute 6 (scaled to zero); the router stays."""
    dev = {"namespace": "postcall-dev"}
    inputs = [
        series("up", "1x5 stale", job=job, pod=pod),
        series("up", "1x30", job="postcall-router", pod="postcall-router-0"),
        series("up", "0x30", job=job, pod=pod, **dev),
        series("up", "1x30", job="postcall-router", pod="postcall-router-0", **dev),
    ]
    return inputs, [(4, []), (9, []), (13, [fires(severity=severity)])]


# alert -> (input series, [(minute, the alerts firing then)]); "_" in values: no sample (series absent)
CASES: dict[str, tuple[list[dict[str, str]], list[tuple[int, list[dict[str, Any]]]]]] = {
    "PostcallConsumerLagGrowing": (
        [
            series("postcall_consumer_lag_records", "0+100x60", service="router", topic=MAIN, partition="0"),
            series("postcall_consumer_lag_records", "5000+100x60", service="dispatcher", topic=RETRY, partition="0"),
            series("postcall_consumer_lag_records", "9000-100x60", service="extractor", topic=MAIN, partition="0"),
        ],
        [(12, []), (40, [fires(service="router", severity="warning")])],
    ),
    "PostcallConsumerNotReady": (
        [
            series("kube_pod_status_ready", "0x30", pod="postcall-router-1", condition="true"),
            series("kube_pod_status_ready", "1x30", pod="postcall-router-0", condition="true"),
            series("kube_pod_status_ready", "0x30", pod="some-other-app-0", condition="true"),
            series("kube_pod_status_ready", "0x30", pod="postcall-recorder-0", condition="true"),
        ],
        [
            (5, []),
            (
                15,
                [
                    fires(pod="postcall-recorder-0", severity="critical"),
                    fires(pod="postcall-router-1", severity="critical"),
                ],
            ),
        ],
    ),
    "PostcallMetricsDown": (
        [
            series("up", "0x20", job="postcall-router", pod="postcall-router-0"),
            series("up", "1x20", job="postcall-router", pod="postcall-router-1"),
            # every ingress and API pod crash-looping: nothing else about them can fire
            series("up", "0x20", job="postcall-ingress", pod=INGRESS_POD),
            series("up", "0x20", job="postcall-api", pod=API_POD),
            series("up", "0x20", job="some-other-app", pod="some-other-app-0"),
        ],
        [
            (3, []),
            (
                10,
                [
                    fires(job="postcall-router", pod="postcall-router-0", severity="warning"),
                    fires(job="postcall-ingress", pod=INGRESS_POD, severity="warning"),
                    fires(job="postcall-api", pod=API_POD, severity="warning"),
                ],
            ),
        ],
    ),
    "PostcallCommitsFailing": (
        [
            series("postcall_commits_total", "0+2x30", service="router", result="failed", pod="stuck"),
            series("postcall_commits_total", "5x30", service="router", result="ok", pod="stuck"),
            series("postcall_commits_total", "0+2x30", service="router", result="failed", pod="fine"),
            series("postcall_commits_total", "0+60x30", service="router", result="ok", pod="fine"),
        ],
        [(3, []), (20, [fires(pod="stuck", service="router", severity="critical")])],
    ),
    "PostcallDependencyPaused": (
        [
            series("postcall_dependency_paused", "1x30", service="extractor", pod="a"),
            series("postcall_dependency_paused", "0x30", service="router", pod="b"),
        ],
        [(5, []), (15, [fires(service="extractor", severity="warning")])],
    ),
    "PostcallDeadLettersArriving": (
        [
            series("postcall_dead_letters_total", "0+1x30", service="router", category="poison", pod="a"),
            series("postcall_dead_letters_total", "7x30", service="extractor", category="permanent", pod="b"),
        ],
        [(20, [fires(category="poison", service="router", severity="warning")])],
    ),
    "PostcallLLMCircuitOpen": (
        [
            series("postcall_llm_circuit_open", "1x20", provider="openai", pod="a"),
            series("postcall_llm_circuit_open", "0x20", provider="heuristic", pod="a"),
        ],
        [(2, []), (10, [fires(provider="openai", severity="warning")])],
    ),
    "PostcallFlowsHeld": (
        [
            series("postcall_router_flows_total", "0x10 1x20", outcome="held", pod="a"),
            series("postcall_router_flows_total", "0+5x30", outcome="fired", pod="a"),
        ],
        [(5, []), (12, [fires(severity="warning")]), (45, [])],
    ),
    "PostcallAgentConfigProblems": (
        [series("postcall_router_config_problems", "0 0 2x20", pod="a")],
        [(4, []), (10, [fires(severity="warning")])],
    ),
    "PostcallAgentConfigReloadFailed": (
        [
            series("postcall_router_config_reload_failed", "0 0 1x20", job="postcall-router", pod="postcall-router-0"),
            series("postcall_router_config_reload_failed", "0x22", job="postcall-router", pod="postcall-router-1"),
            # failed for 3 minutes, then loaded; later failed for good
            series("postcall_extractor_config_reload_failed", "0x5 1x3 0x3 1x12", job="postcall-extractor", pod="a"),
        ],
        [
            (4, []),
            (10, [fires(job="postcall-router", severity="warning")]),
            (
                22,
                [fires(job="postcall-router", severity="warning"), fires(job="postcall-extractor", severity="warning")],
            ),
        ],
    ),
    "PostcallDestinationDisabled": (
        [
            series("postcall_destination_disabled", "0 0 1x10", destination="crm", pod="a"),
            series("postcall_destination_disabled", "0x12", destination="ops-slack", pod="a"),
        ],
        [(2, []), (5, [fires(destination="crm", severity="critical")])],
    ),
    "PostcallDestinationCircuitOpen": (
        [
            series("postcall_destination_circuit_open", "1x30", destination="crm", pod="a"),
            series("postcall_destination_circuit_open", "1 0x30", destination="ops-slack", pod="a"),
        ],
        [(10, []), (20, [fires(destination="crm", severity="warning")])],
    ),
    "PostcallLedgerIndexLarge": (
        [
            series("postcall_ledger_index_bytes", f"{4 * 2**30}x40", pod="postcall-dispatcher-0"),
            series("postcall_ledger_index_bytes", f"{2**30}x40", pod="postcall-dispatcher-1"),
        ],
        [(20, []), (35, [fires(pod="postcall-dispatcher-0", severity="warning")])],
    ),
    "PostcallIngressKafkaUnavailable": (
        [
            series("postcall_ingress_requests_total", "0x5 0+3x10", outcome="unavailable", source="vapi", pod="a"),
            series("postcall_ingress_requests_total", "0+10x15", outcome="published", source="vapi", pod="a"),
        ],
        [(4, []), (10, [fires(severity="critical")])],
    ),
    "PostcallIngressOverloaded": (
        [
            series("postcall_ingress_requests_total", "0x5 0+2x15", outcome="overloaded", source="retell", pod="a"),
            series("postcall_ingress_requests_total", "0x20", outcome="overloaded", source="retell", pod="b"),
            series("postcall_ingress_requests_total", "0+10x20", outcome="published", source="retell", pod="a"),
        ],
        [(4, []), (14, [fires(severity="warning")])],
    ),
    "PostcallIngressErrors": (
        [
            series("postcall_ingress_requests_total", "0x5 1x15", outcome="error", source="retell", pod="a"),
            series("postcall_ingress_requests_total", "0x20", outcome="error", source="vapi", pod="a"),
            series("postcall_ingress_requests_total", "0+10x20", outcome="published", source="vapi", pod="a"),
        ],
        [(4, []), (7, [fires(source="retell", severity="critical")]), (14, [])],
    ),
    "PostcallIngressNotReady": (
        [
            series("kube_pod_status_ready", "0x30", pod=INGRESS_POD, condition="true"),
            series("kube_pod_status_ready", "1x30", pod="postcall-ingress-5d8f7c9b4-b9w5n", condition="true"),
            series("kube_pod_status_ready", "0x30", pod=API_POD, condition="true"),
            series("kube_pod_status_ready", "0x30", pod="postcall-router-0", condition="true"),
        ],
        [(5, []), (15, [fires(pod=INGRESS_POD, severity="critical")])],
    ),
    "PostcallAPINotReady": (
        [
            series("kube_pod_status_ready", "0x30", pod=API_POD, condition="true"),
            series("kube_pod_status_ready", "1x30", pod="postcall-api-6c9d4b7f8-q8r2t", condition="true"),
            series("kube_pod_status_ready", "0x30", pod=INGRESS_POD, condition="true"),
        ],
        [(5, []), (15, [fires(pod=API_POD, severity="warning")])],
    ),
    # scaled to zero in postcall at minute 6 (its last target gone); in postcall-dev a target that is down is
    # still there (PostcallMetricsDown's case, not this one)
    "PostcallIngressAbsent": absent_case("postcall-ingress", INGRESS_POD, "critical"),
    "PostcallAPIAbsent": absent_case("postcall-api", API_POD, "warning"),
    "PostcallIngressRefusingSignatures": (
        [
            series(
                "postcall_ingress_requests_total",
                "0+2x40",
                outcome="unauthorized",
                source="vapi",
                endpoint="v",
                pod="a",
            ),
            series(
                "postcall_ingress_requests_total",
                "0+2x40",
                outcome="unauthorized",
                source="retell",
                endpoint="r",
                pod="a",
            ),
            series(
                "postcall_ingress_requests_total", "0+9x40", outcome="published", source="retell", endpoint="r", pod="a"
            ),
            # rotated at minute 10: accepted until then, only refused after. From minute 25 (24 with Prometheus
            # 3's left-open ranges) the 15-minute window no longer holds its last acceptance, then `for: 10m`:
            # it fires at 35, 25 minutes after the last request accepted (docs/runbooks.md says so)
            series(
                "postcall_ingress_requests_total",
                "0x10 2+2x30",
                outcome="unauthorized",
                source="retell",
                endpoint="rotated",
                pod="a",
            ),
            series(
                "postcall_ingress_requests_total",
                "0+9x10 90x30",
                outcome="published",
                source="retell",
                endpoint="rotated",
                pod="a",
            ),
        ],
        [
            (5, []),
            (30, [fires(source="vapi", endpoint="v", severity="warning")]),
            (33, [fires(source="vapi", endpoint="v", severity="warning")]),
            (
                35,
                [
                    fires(source="vapi", endpoint="v", severity="warning"),
                    fires(source="retell", endpoint="rotated", severity="warning"),
                ],
            ),
        ],
    ),
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: scripts/ensure-tools.sh installs it (Debian package prometheus)")
    return found


def rules_without_annotations() -> dict[str, Any]:
    spec = yaml.safe_load(ALERTS.read_text())["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return {"groups": spec["groups"]}


def alert_names() -> list[str]:
    return [r["alert"] for g in rules_without_annotations()["groups"] for r in g["rules"]]


def run(promtool: str, tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_without_annotations()))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}))
    return subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )


def unit(alert: str, inputs: list[dict[str, str]], checks: list[tuple[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [{"eval_time": f"{m}m", "alertname": alert, "exp_alerts": exp} for m, exp in checks],
    }


def test_every_alert_rule_has_a_case() -> None:
    assert sorted(alert_names()) == sorted(CASES)


def test_every_alert_fires_when_and_only_when_it_should(promtool: str, tmp_path: Path) -> None:
    done = run(promtool, tmp_path, [unit(alert, *case) for alert, case in CASES.items()])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_first_dead_letter_of_a_new_series_fires(promtool: str, tmp_path: Path) -> None:
    """A counter first seen at 1 (a pod that started since, without the zero series): increase() is 0."""
    inputs = [series("postcall_dead_letters_total", "_x5 1x20", service="dispatcher", category="permanent", pod="new")]
    checks = [(3, []), (8, [fires(category="permanent", service="dispatcher", severity="warning")])]
    done = run(promtool, tmp_path, [unit("PostcallDeadLettersArriving", inputs, checks)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_absent_alerts_fire_when_no_postcall_target_is_scraped_at_all(promtool: str, tmp_path: Path) -> None:
    """No namespace left to compare with (the whole release gone, or no ServiceMonitor picked up): absent()."""
    inputs = [{"series": 'up{job="node-exporter", instance="n1"}', "values": "1x20"}]
    tests = [
        unit(alert, inputs, [(10, [{"exp_labels": {"job": job, "severity": severity}}])])
        for alert, job, severity in (
            ("PostcallIngressAbsent", "postcall-ingress", "critical"),
            ("PostcallAPIAbsent", "postcall-api", "warning"),
        )
    ]
    done = run(promtool, tmp_path, tests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_expectation_fails(promtool: str, tmp_path: Path) -> None:
    inputs = [series("postcall_llm_circuit_open", "0x20", provider="openai", pod="a")]
    done = run(promtool, tmp_path, [unit("PostcallLLMCircuitOpen", inputs, [(10, [fires(provider="openai")])])])
    assert done.returncode != 0


def test_the_runbook_says_when_the_signature_alert_fires() -> None:
    """docs/runbooks.md said 15 minutes; the alert waits for its window to hold no accepted request and then
    for `for:`, about 25 minutes after the last one (the promtool case above pins it)."""
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if r.get("alert") == "PostcallIngressRefusingSignatures"]
    windows = set(re.findall(r"\[(\d+)m\]", rule["expr"]))
    assert len(windows) == 1 and rule["for"].endswith("m"), (windows, rule["for"])
    minutes = int(windows.pop()) + int(rule["for"].removesuffix("m"))
    runbooks = (ALERTS.parents[2] / "docs" / "runbooks.md").read_text()
    section = runbooks.split("## PostcallIngressRefusingSignatures\n", 1)[1].split("\n## ", 1)[0]
    assert f"about {minutes} minutes" in " ".join(section.split())
    assert f"about {minutes} minutes" in " ".join(rule["annotations"]["description"].split())


def test_the_dependency_runbook_covers_every_service_that_pauses_for_a_dependency() -> None:
    """PostcallDependencyPaused fires for any service whose handler raises DependencyUnavailable; its runbook
    and description spoke of the LLM alone, so a recorder paused by a store outage was sent to the LLM's
    dashboards."""
    root = ALERTS.parents[2]
    pausing = sorted(
        d.name
        for d in (root / "services").iterdir()
        if d.is_dir() and d.name != "common" and any("DependencyUnavailable(" in f.read_text() for f in d.glob("*.py"))
    )
    assert pausing == ["dispatcher", "extractor", "recorder"], pausing  # a new one: say what its dependency is
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if r.get("alert") == "PostcallDependencyPaused"]
    runbooks = (root / "docs" / "runbooks.md").read_text()
    section = runbooks.split("## PostcallDependencyPaused\n", 1)[1].split("\n## ", 1)[0]
    for service in pausing:
        assert f"for the {service}," in section and f"- {service}" in section, service
        assert f"the {service}'s" in rule["annotations"]["description"], service


def test_the_store_runbooks_quote_the_lines_a_pod_logs_while_the_store_is_down_at_start() -> None:
    """The API and the recorder wait at start while the database cannot be reached (walk25; they exited 2
    before, walk24): the runbooks quote the line they log (starting.py's), the reason in it (db.py's), and
    the line once the store answers."""
    root = ALERTS.parents[2]
    reason = "cannot migrate the store at"
    assert f'f"{reason} ' in (root / "services" / "store" / "db.py").read_text()
    starting = (root / "services" / "store" / "starting.py").read_text()
    runbooks = (root / "docs" / "runbooks.md").read_text()
    for alert in ("PostcallAPINotReady", "PostcallDependencyPaused"):
        section = " ".join(runbooks.split(f"## {alert}\n", 1)[1].split("\n## ", 1)[0].split())
        for line in ("waiting for the store", "the store answers, starting"):
            assert f'"{line}"' in starting and f"`{line}`" in section, (alert, line)
        assert f"`{reason} ..." in section, alert
