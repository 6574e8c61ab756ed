"""Every record a service produces in the integration suite is checked against schemas/json/ by an
independent validator (`jsonschema`, formats asserted), never by the pydantic models that wrote it.

A record is a service's product when its CloudEvents `ce_source` is `/postcall/<service>` and it is not a
copy of somebody else's record (a retry-tier, dead-letter or replayed copy keeps the original bytes).
Its schema comes from `ce_type`: the registry's type of a main topic, or `dev.postcall.<Model>.v1` on a
test's own topic. Records of other types (the test worker's jobs) are not contracts and are skipped.

Two nets, so that nothing produced escapes: every AIOKafkaConsumer in the test process is watched (a
violation fails the test that read it), and at the end of the session every topic on the session's
broker is read once (services run as subprocesses are covered too).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from jsonschema import Draft202012Validator, FormatChecker

from schemas import headers as h
from schemas.generate import SCHEMA_SUFFIX
from schemas.topics import CE_TYPE_PREFIX, STREAMS
from services.common.settings import KafkaSettings

JSON_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
# a retry-tier copy, a dead letter, a replayed record: the original bytes, not this service's product
COPY_HEADERS = frozenset({*h.HOP_HEADERS, h.REPLAY_COUNT, h.REPLAYED_FROM})


@functools.cache
def validators() -> dict[str, Draft202012Validator]:
    """ce_type -> the validator of its published schema."""
    by_name = {
        p.name.removesuffix(SCHEMA_SUFFIX): Draft202012Validator(
            orjson.loads(p.read_bytes()), format_checker=FormatChecker()
        )
        for p in JSON_DIR.glob(f"*{SCHEMA_SUFFIX}")
    }
    out = {f"{CE_TYPE_PREFIX}.{name}.v1": v for name, v in by_name.items()}
    out.update({stream.ce_type: by_name[stream.model.__name__] for stream in STREAMS})
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def violation(topic: str, offset: int, value: bytes | None, headers: Iterable[tuple[str, Any]]) -> str | None:
    """Why a service's record breaks its published schema, or None (also for records that are not one)."""
    hdrs = {k: _text(v) for k, v in headers or ()}
    if not hdrs.get(h.CE_SOURCE, "").startswith("/postcall/") or not COPY_HEADERS.isdisjoint(hdrs):
        return None
    validator = validators().get(hdrs.get(h.CE_TYPE, ""))
    if validator is None:
        return None
    where = f"{topic}@{offset} from {hdrs[h.CE_SOURCE]} ({hdrs[h.CE_TYPE]})"
    if value is None:
        return f"{where}: no value"
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"{where}: not JSON: {exc}"
    error = next(iter(validator.iter_errors(record)), None)
    if error is None:
        return None
    return f"{where}: {'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:300]}"


@dataclass
class Watch:
    """Violations seen by the test process's consumers, and the records already checked."""

    violations: list[str] = field(default_factory=list)
    seen: set[tuple[str, int, int]] = field(default_factory=set)

    def check(self, records: Iterable[Any]) -> None:
        for r in records:
            where = (r.topic, r.partition, r.offset)
            if where in self.seen:
                continue
            self.seen.add(where)
            found = violation(r.topic, r.offset, r.value, r.headers)
            if found:
                self.violations.append(found)


def watch_consumers(watch: Watch) -> Callable[[], None]:
    """Check every record an AIOKafkaConsumer in this process hands out; returns the undo."""
    getmany, getone = AIOKafkaConsumer.getmany, AIOKafkaConsumer.getone

    @functools.wraps(getmany)
    async def checked_getmany(self: AIOKafkaConsumer, *partitions: TopicPartition, **kwargs: Any) -> Any:
        batch = await getmany(self, *partitions, **kwargs)
        for records in batch.values():
            watch.check(records)
        return batch

    @functools.wraps(getone)
    async def checked_getone(self: AIOKafkaConsumer, *partitions: TopicPartition) -> Any:
        record = await getone(self, *partitions)
        watch.check([record])
        return record

    AIOKafkaConsumer.getmany, AIOKafkaConsumer.getone = checked_getmany, checked_getone

    def undo() -> None:
        AIOKafkaConsumer.getmany, AIOKafkaConsumer.getone = getmany, getone

    return undo


async def sweep(kafka: KafkaSettings, watch: Watch) -> int:
    """Read every topic of the broker once (what the watched consumers did not see); returns how many
    records were read."""
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    tps = [
        TopicPartition(t["topic"], p["partition"]) for t in described if t["error_code"] == 0 for p in t["partitions"]
    ]
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        pending = {tp for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        read = 0
        while pending:
            batch = await AIOKafkaConsumer.getmany(consumer, *pending, timeout_ms=2000, max_records=5000)
            for tp, records in batch.items():
                read += len(records)
                watch.check(r for r in records if r.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return read
    finally:
        await consumer.stop()
