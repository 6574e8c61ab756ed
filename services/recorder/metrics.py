"""The recorder's own metrics (the runtime's are common to every service)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.store.rows import TABLES, Rows

ROWS = Counter("postcall_recorder_rows_total", "Rows written to the store, by table.", ["table"])
BATCH_SECONDS = Histogram(
    "postcall_recorder_batch_duration_seconds",
    "Time to write one batch (both transactions).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
BATCH_RECORDS = Histogram(
    "postcall_recorder_batch_records",
    "Kafka records per batch written (group commit).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
PRUNED = Counter("postcall_store_pruned_rows_total", "Rows deleted by the retention job, by table.", ["table"])
SKIPPED = Counter(
    "postcall_recorder_skipped_total", "Records not stored, by reason (older_than_retention).", ["reason"]
)
_ROWS = {name: ROWS.labels(name) for name in TABLES}


def observe_batch(rows: Rows, records: int, seconds: float) -> None:
    for name in TABLES:
        count = len(getattr(rows, name))
        if count:
            _ROWS[name].inc(count)
    BATCH_RECORDS.observe(records)
    if seconds:
        BATCH_SECONDS.observe(seconds)
