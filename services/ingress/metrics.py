"""The ingress's Prometheus metrics (the default registry, served at /metrics beside the webhooks).

The request counter and the two duration histograms are counted in plain numbers that a scrape reads
(`Counts`, `Timings`), and exported with the samples prometheus_client's Counter and Histogram export
(tests/unit/ingress/test_metrics.py compares the two). A prometheus Counter's inc() and a Histogram's
observe() check the metric's labels and take a lock on every call (the histogram twice): about 20,000
instructions of the ingress's work per webhook for the three of them, against about 4,000 now. Every
update happens on the event loop's thread (the webhooks' and the publisher's), and a scrape is served on
the same loop, so no update is ever half seen.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from services.common.observability import Counts, created_sample

OUTCOMES = (
    "published",
    "duplicate",
    "ignored",
    "unauthorized",
    "bad_request",
    "invalid",
    "mapping_error",
    "too_large",
    "not_found",
    "unavailable",
    "overloaded",
    "error",
)


class Timing:
    """One series of a `Timings` family: how many observations fell in each bucket (not cumulative, the
    last bucket +Inf's) and their sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds, self.counts, self.sum, self.created = bounds, [0] * len(bounds), 0.0, time.time()

    def observe(self, amount: float) -> None:
        # the first bucket whose bound is >= amount, as Histogram.observe's `amount <= bound`
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class Timings(Collector):
    """A histogram family: `labels(...)` is a series (`Timing`) to observe(), collect() exports every
    series as a prometheus Histogram does. A family without label names has its one series at once."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        bounds = [float(b) for b in buckets]
        if not bounds or bounds != sorted(bounds):
            raise ValueError("buckets are one or more bounds in increasing order")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._les: tuple[str, ...] = tuple(floatToGoString(b) for b in self.bounds)  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], Timing] = {}
        if not self.labelnames:
            self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Timing:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {values}")
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = Timing(self.bounds)
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self.series.items()):
            total, buckets = 0, []
            for le, count in zip(self._les, series.counts, strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(labels, buckets, series.sum)
            created = created_sample(series.created)
            if created is not None:
                family.add_sample(self.name + "_created", dict(zip(self.labelnames, labels, strict=True)), created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


REQUESTS = Counts(
    "postcall_ingress_requests_total",
    "Webhook requests by source platform, endpoint and outcome: published, duplicate, ignored, unauthorized, "
    "bad_request, invalid, mapping_error (422 from a part the mapping built that the contract refuses: "
    "possibly our bug), too_large, not_found, unavailable (Kafka), overloaded (503: the request bodies in "
    "flight at their limit), error (500: the ingress failed on the request itself: a bug of ours).",
    ["source", "endpoint", "outcome"],
)
REQUEST_DURATION = Timings(
    "postcall_ingress_request_duration_seconds",
    "Time from the request's arrival to its answer (for a published event: to the brokers' acknowledgement).",
    ["source"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_DURATION = Timings(
    "postcall_ingress_publish_duration_seconds",
    "Time from handing a record to the producer to its acknowledgement by the brokers (acks=all).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def label_endpoints(endpoints: list[tuple[str, str]]) -> None:
    """Create every (source, endpoint, outcome) series at 0, so that an alert on the first 503 or 401 sees
    an increase (a series first seen at 1 has none)."""
    for source, endpoint in endpoints:
        REQUEST_DURATION.labels(source)
        for outcome in OUTCOMES:
            REQUESTS.labels(source, endpoint, outcome)
