"""CloudEvents Kafka-binding headers per output record: our codec vs the `cloudevents` SDK (docs/adr/0004).

    python -m bench.run --only cloudevents

Both write the same binary-mode headers (ce_id, ce_type, ce_source, ce_specversion, ce_time, ce_subject,
content-type) for one 1 KB event whose JSON value is already encoded; the SDK through
`cloudevents.core.bindings.kafka.to_binary` with a format that passes the encoded value through, so
only the header work is compared. No broker. CPU time per record, best of the repeats.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka
from cloudevents.core.v1.event import CloudEvent

from bench.context import BenchContext, Blob, blob_bytes
from bench.measure import info_line
from services.common import codec

CE_TYPE = "dev.postcall.Blob.v1"


class PassThroughFormat:
    """The SDK's Format for a value that is already JSON bytes."""

    def read(self, event_factory: Any, data: str | bytes) -> Any:
        raise NotImplementedError

    def write(self, event: Any) -> bytes:
        raise NotImplementedError

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        return bytes(data)

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return body


FORMAT = PassThroughFormat()


def ours(blob: Blob, value: bytes) -> list[tuple[str, bytes]]:
    return codec.header_list(codec.cloudevent_headers(blob, CE_TYPE, "bench", "key-1"))


def sdk(blob: Blob, value: bytes) -> list[tuple[str, bytes]]:
    attributes = {
        "id": codec.event_id_of(blob),
        "type": CE_TYPE,
        "source": "/postcall/bench",
        "specversion": "1.0",
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
        "subject": "key-1",
    }
    message = kafka.to_binary(CloudEvent(attributes=attributes, data=value), FORMAT, key_mapper=lambda e: None)  # type: ignore[arg-type]
    return list(message.headers.items())


def per_record_us(write: Any, blob: Blob, value: bytes, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n):
            write(blob, value)
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


async def run(ctx: BenchContext) -> dict[str, Any]:
    value = blob_bytes(0, 1024)
    blob = Blob.model_validate_json(value)
    n = ctx.scaled(50_000, 2_000)
    assert dict(ours(blob, value)).keys() == dict(sdk(blob, value)).keys()  # the same headers
    mine, theirs = (per_record_us(f, blob, value, n, ctx.repeats) for f in (ours, sdk))
    line = f"ours {mine:.1f} us, cloudevents SDK {theirs:.1f} us per record ({theirs / mine:.1f}x)"
    return {
        "summary": [info_line("CloudEvents headers CPU", line)],
        "data": {"records": n, "ours_us": mine, "sdk_us": theirs},
        "notes": ["CPU time to write one record's CloudEvents headers; see docs/adr/0004-cloudevents-headers.md."],
    }
