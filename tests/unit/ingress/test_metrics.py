"""The ingress's own counter and histogram families export what prometheus_client's Counter and
Histogram export for the same updates (services/ingress/metrics.py counts in plain numbers)."""

from __future__ import annotations

import re

import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from services.ingress.metrics import Counts, Timings

BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# below, on, between and above the bounds; zero, a negative value and +Inf
AMOUNTS = (0.0, 0.001, 0.002, 0.0021, 0.004, 0.005, 0.3, 2.5, 9.99, 10.0, 11.0, 1e9, -1.0, float("inf"), 0.0004)


def _same_created(text: bytes) -> str:
    """The exposition with every `_created` value the same (each family stamps its own creation)."""
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", text.decode())


def _both(theirs: CollectorRegistry, ours: CollectorRegistry) -> None:
    assert _same_created(generate_latest(ours)) == _same_created(generate_latest(theirs))
    assert _same_created(generate_openmetrics(ours)) == _same_created(generate_openmetrics(theirs))


@pytest.mark.parametrize("created", [True, False])
def test_counts_export_what_a_counter_exports(created: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", created)  # disable_created_metrics()
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_requests_total", "Requests.", ["source", "outcome"], registry=theirs)
    counts = Counts("x_requests_total", "Requests.", ["source", "outcome"], registry=ours)
    _both(theirs, ours)  # no series yet
    for labels in [("vapi", "published"), ("retell", "unauthorized")]:  # made at 0
        counter.labels(*labels)
        counts.labels(*labels)
    for labels, times in [(("vapi", "published"), 3), (("retell", "not_found"), 2), (("vapi", "published"), 1)]:
        for _ in range(times):
            counter.labels(*labels).inc()
            counts.inc(labels)
    _both(theirs, ours)


@pytest.mark.parametrize("created", [True, False])
def test_timings_export_what_a_histogram_exports(created: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", created)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    labelled = Histogram("x_request_seconds", "Requests.", ["source"], buckets=BUCKETS, registry=theirs)
    plain = Histogram("x_publish_seconds", "Publishes.", buckets=BUCKETS[1:], registry=theirs)
    timings = Timings("x_request_seconds", "Requests.", ["source"], buckets=BUCKETS, registry=ours)
    single = Timings("x_publish_seconds", "Publishes.", buckets=BUCKETS[1:], registry=ours)
    _both(theirs, ours)  # a labelled family without series; the unlabelled one's series at 0
    labelled.labels("native")
    timings.labels("native")
    for i, amount in enumerate(AMOUNTS):
        source = ("vapi", "retell")[i % 2]
        labelled.labels(source).observe(amount)
        timings.labels(source).observe(amount)
        plain.observe(amount)
        single.labels().observe(amount)
    _both(theirs, ours)


def test_labels_are_checked() -> None:
    counts = Counts("x_total", "X.", ["a", "b"], registry=None)
    timings = Timings("x_seconds", "X.", ["a"], buckets=(1.0,), registry=None)
    with pytest.raises(ValueError, match="takes the labels"):
        counts.labels("one")
    with pytest.raises(ValueError, match="takes the labels"):
        timings.labels("one", "two")
    with pytest.raises(ValueError, match="increasing order"):
        Timings("y_seconds", "Y.", buckets=(2.0, 1.0), registry=None)
