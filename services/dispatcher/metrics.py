"""The dispatcher's own metrics (the runtime's common ones are in services.common.observability).

Labels stay few: action type (9, one per action model: schemas.topics.ACTION_TYPES), destination (as many
as the destinations file, and UNKNOWN_DESTINATION for a name a record gives that it does not have), outcome
(6: ActionCompleted's five and deferred).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "postcall_deliveries_total",
    "Action attempts by outcome: delivered, published, failed, skipped_duplicate, dead_lettered; and deferred "
    "(not attempted: the destination's rate limit or waiting room was full; retried).",
    ["type", "destination", "outcome"],
)
DELIVERY_DURATION = Histogram(
    "postcall_delivery_duration_seconds",
    "Time one delivery attempt took, from request to response (or error).",
    ["type", "destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
DESTINATION_DISABLED = Gauge(
    "postcall_destination_disabled",
    "1 when the destination answered 410 Gone and is disabled on every replica until `postcall destinations enable`.",
    ["destination"],
)
CIRCUIT_OPEN = Gauge(
    "postcall_destination_circuit_open", "1 while the destination's circuit breaker is open.", ["destination"]
)
RATE_SHARE = Gauge(
    "postcall_destination_rate_share",
    "Requests per second this replica may send to a rate-limited destination now: its share of the group's "
    "limit, split among the live replicas that want the destination.",
    ["destination"],
)
LEDGER_ENTRIES = Gauge(
    "postcall_ledger_entries", "Completed action ids in the ledger's index, per results partition.", ["partition"]
)
LEDGER_BYTES = Gauge(
    "postcall_ledger_index_bytes",
    "Size on disk of the ledger's index of completed action ids (its memory is a fixed page cache).",
)
NO_DESTINATION = "-"  # label value for publish-only actions
UNKNOWN_DESTINATION = "(unknown)"  # label value for a name no destinations file has (no name starts with "(")
_named: set[str] = {NO_DESTINATION}  # the destinations files' names (services.dispatcher.registry.Registry)


def known_destinations(names: Iterable[str]) -> None:
    """Names the destination label may take; any other a record names is counted as UNKNOWN_DESTINATION,
    so a stream of records naming new destinations cannot add label children without end."""
    _named.update(names)
    deliveries.cache_clear()


# .labels() validates and locks on every call; the children are cached (label values are few)
@lru_cache(maxsize=4096)
def deliveries(action_type: str, destination: str, outcome: str) -> Counter:
    return DELIVERIES.labels(action_type, destination if destination in _named else UNKNOWN_DESTINATION, outcome)


@lru_cache(maxsize=4096)
def delivery_duration(action_type: str, destination: str) -> Histogram:
    return DELIVERY_DURATION.labels(action_type, destination)
