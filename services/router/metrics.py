"""Router metrics (registered in the default registry beside the runtime's).

The flow and action counters are counted as the router routes, in plain ints read at scrape time
(`observability.Counts`, as the ingress's requests): a prometheus Counter's inc() takes a lock and
checks its labels on every call, which cost more per record than routing a flow that did not fire. They
are exported as counters like any other.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from schemas.topics import ACTION_TYPES
from services.common.observability import Counts

FLOW_OUTCOME_NAMES = ("fired", "not_fired", "disabled", "held")


# every series made at 0 up front: the router adds to `values[labels]` itself (handler._COUNTS)
FLOWS = Counts(
    "postcall_router_flows_total",
    "Flows evaluated, by outcome: fired, not_fired, disabled, held (extraction failed and the flow uses it).",
    ("outcome",),
    series=[(o,) for o in FLOW_OUTCOME_NAMES],
)
ACTIONS = Counts(
    "postcall_router_actions_total",
    "Actions, by type and outcome: planned, skipped.",
    ("type", "outcome"),
    series=[(t, o) for t in ACTION_TYPES for o in ("planned", "skipped")],
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
