"""Router metrics (registered in the default registry beside the runtime's)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge

from schemas.events import FlowDecision

FLOWS = Counter(
    "postcall_router_flows_total",
    "Flows evaluated, by outcome: fired, not_fired, disabled, held (extraction failed and the flow uses it).",
    ["outcome"],
)
ACTIONS = Counter(
    "postcall_router_actions_total", "Actions, by type and outcome: planned, skipped.", ["type", "outcome"]
)
CONFIG_RELOADS = Counter(
    "postcall_router_config_reloads_total", "Configuration folder reloads, by result: ok, problems, error.", ["result"]
)
CONFIG_PROBLEMS = Gauge("postcall_router_config_problems", "Problems in the configuration folder right now.")
CONFIG_AGENTS = Gauge("postcall_router_config_agents", "Agent configurations (agent, version) loaded right now.")
CONFIG_RELOAD_FAILED = Gauge(
    "postcall_router_config_reload_failed",
    "1 while the folder's latest change could not be loaded (a reload with result error): the last good "
    "configuration is in use.",
)


FLOW_OUTCOMES = {o: FLOWS.labels(o) for o in ("fired", "not_fired", "disabled", "held")}


def flow_outcome(flow: FlowDecision) -> str:
    if not flow.enabled:
        return "disabled"
    return "fired" if flow.fired else "held" if flow.held else "not_fired"


@functools.cache
def action_outcome(action_type: str, planned: bool) -> Counter:
    """The labelled child, looked up once (labels() costs more than the increment)."""
    return ACTIONS.labels(action_type, "planned" if planned else "skipped")
