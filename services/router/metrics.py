"""Router metrics (registered in the default registry beside the runtime's).

The flow and action counters are counted as the router routes, in plain ints read at scrape time
(`Tally`): a prometheus Counter's inc() takes a lock and checks its labels on every call, which cost
more per record than routing a flow that did not fire. They are exported as counters like any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import prometheus_client.metrics
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.topics import ACTION_TYPES

FLOW_OUTCOME_NAMES = ("fired", "not_fired", "disabled", "held")


class Tally(Collector):
    """A counter family whose every label set is known up front: `values[labels] += n` counts (no lock:
    one event loop counts, and a scrape only reads), collect() exports them as a Counter would."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        labels: Iterable[tuple[str, ...]],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.values: dict[tuple[str, ...], int] = dict.fromkeys(labels, 0)
        self.created = time.time()
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = self.created if getattr(prometheus_client.metrics, "_use_created", True) else None
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value, created=created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


FLOWS = Tally(
    "postcall_router_flows_total",
    "Flows evaluated, by outcome: fired, not_fired, disabled, held (extraction failed and the flow uses it).",
    ("outcome",),
    [(o,) for o in FLOW_OUTCOME_NAMES],
)
ACTIONS = Tally(
    "postcall_router_actions_total",
    "Actions, by type and outcome: planned, skipped.",
    ("type", "outcome"),
    [(t, o) for t in ACTION_TYPES for o in ("planned", "skipped")],
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
