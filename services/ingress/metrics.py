"""The ingress's Prometheus metrics (the default registry, served at /metrics beside the webhooks)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
)
REQUESTS = Counter(
    "postcall_ingress_requests_total",
    "Webhook requests by source platform, endpoint and outcome: published, duplicate, ignored, unauthorized, "
    "bad_request, invalid, mapping_error (422 from a part the mapping built that the contract refuses: "
    "possibly our bug), too_large, not_found, unavailable (Kafka), overloaded (503: the request bodies in "
    "flight at their limit).",
    ["source", "endpoint", "outcome"],
)
REQUEST_DURATION = Histogram(
    "postcall_ingress_request_duration_seconds",
    "Time from the request's arrival to its answer (for a published event: to the brokers' acknowledgement).",
    ["source"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_DURATION = Histogram(
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
