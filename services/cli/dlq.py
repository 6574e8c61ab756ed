"""`postcall dlq list | show | replay`: inspect dead letters and send chosen ones back.

Replay republishes the original key and value to the original topic (never the retry tiers) with the
hop headers stripped and x-replay-* headers added, rate-limited, waiting for acks=all. The main
consumer groups are never rewound: only the selected records run again, and side effects stay
idempotent by action_id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from schemas import headers as h
from schemas.topics import SERVICES, dead_letter_topic
from services.cli.options import Bootstrap, kafka_settings
from services.cli.republish import Outgoing, republish
from services.common import codec
from services.common.kafka import partitions_of, read_partition
from services.common.retry import now_iso
from services.common.settings import KafkaSettings

app = typer.Typer(help="Inspect and replay dead-lettered records.", no_args_is_help=True)
console = Console()


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @classmethod
    def of(cls, topic: str, partition: int, r: Any) -> DeadLetter:
        return cls(topic, partition, r.offset, r.timestamp, r.key, r.value, codec.header_dict(r.headers))

    @property
    def service(self) -> str:
        return self.headers.get(h.DLQ_SERVICE, self.topic.split(".")[1])

    @property
    def reason(self) -> str:
        return self.headers.get(h.DLQ_EXCEPTION_MESSAGE, "")

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Filters:
    services: Sequence[str]
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None

    def match(self, d: DeadLetter) -> bool:
        ts = datetime.fromtimestamp(d.timestamp_ms / 1000, UTC)
        return (
            (
                self.reason is None
                or self.reason.lower() in f"{d.reason} {d.headers.get(h.DLQ_FAILURE_CATEGORY)}".lower()
            )
            and (self.since is None or ts >= _aware(self.since))
            and (self.until is None or ts < _aware(self.until))
            and (self.key is None or (d.key or b"").decode(errors="replace") == self.key)
        )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def select(kafka: KafkaSettings, filters: Filters) -> list[DeadLetter]:
    """Every dead letter of the chosen services that matches the filters, oldest first per partition."""
    out: list[DeadLetter] = []
    for service in filters.services:
        topic = dead_letter_topic(service)
        for partition in await partitions_of(kafka, topic):
            async for r in read_partition(kafka, topic, partition):
                d = DeadLetter.of(topic, partition, r)
                if filters.match(d):
                    out.append(d)
    return out


def replay_headers(d: DeadLetter) -> dict[str, str]:
    """Original headers without the hop headers, plus where this replay came from."""
    out = {k: v for k, v in d.headers.items() if k not in h.HOP_HEADERS}
    out[h.REPLAY_COUNT] = str(int(d.headers.get(h.REPLAY_COUNT, "0")) + 1)
    out[h.REPLAYED_FROM] = d.coordinates
    out[h.REPLAYED_AT] = now_iso()
    return out


async def replay(kafka: KafkaSettings, letters: Sequence[DeadLetter], rate: float, progress: Progress | None) -> int:
    """Republish to the original topics at most `rate` records/s; returns how many were acknowledged."""
    outgoing = [Outgoing(d.headers[h.DLQ_ORIGINAL_TOPIC], d.key, d.value, replay_headers(d)) for d in letters]
    return await republish(kafka, outgoing, rate, progress, "replaying")


# ── commands ─────────────────────────────────────────────────────────────────────────────────────────

Service = Annotated[list[str] | None, typer.Option("--service", "-s", help="extractor, router, dispatcher (repeat).")]
Reason = Annotated[str | None, typer.Option(help="Substring of the reason or failure category.")]
Since = Annotated[datetime | None, typer.Option(help="Dead-lettered at or after (UTC if no offset).")]
Until = Annotated[datetime | None, typer.Option(help="Dead-lettered before.")]
Key = Annotated[str | None, typer.Option(help="Record key (conversation id) to match exactly.")]


def _filters(service: list[str] | None, reason: str | None, since: Any, until: Any, key: str | None) -> Filters:
    unknown = set(service or ()) - set(SERVICES)
    if unknown:
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}; choose from {SERVICES}")
    return Filters(tuple(service or SERVICES), reason, since, until, key)


@app.command("list")
def list_cmd(
    bootstrap: Bootstrap = None,
    service: Service = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
) -> None:
    """List dead letters: where they came from, why, how many attempts."""
    letters = asyncio.run(select(kafka_settings(bootstrap), _filters(service, reason, since, until, key)))
    table = Table("dead letter", "key", "original topic", "category", "attempts", "reason", "at")
    for d in letters:
        table.add_row(
            d.coordinates,
            (d.key or b"").decode(errors="replace"),
            d.headers.get(h.DLQ_ORIGINAL_TOPIC, "?"),
            d.headers.get(h.DLQ_FAILURE_CATEGORY, "?"),
            d.headers.get(h.DLQ_ATTEMPTS, "?"),
            d.reason[:80],
            d.headers.get(h.DLQ_LAST_FAILURE_AT, ""),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@app.command("show")
def show_cmd(
    coordinates: str = typer.Argument(help="topic:partition:offset, as `dlq list` prints it"),
    bootstrap: Bootstrap = None,
) -> None:
    """Show one dead letter: every header and the value."""
    topic, partition, offset = coordinates.rsplit(":", 2)
    letters = asyncio.run(_one(kafka_settings(bootstrap), topic, int(partition), int(offset)))
    if not letters:
        raise typer.Exit(code=_missing(coordinates))
    d = letters[0]
    for name, value in sorted(d.headers.items()):
        console.print(f"[bold]{name}[/bold]: {value}")
    try:
        console.print_json(orjson.dumps(orjson.loads(d.value or b"null")).decode())
    except orjson.JSONDecodeError:
        console.print(repr((d.value or b"")[:2000]))


def _missing(coordinates: str) -> int:
    console.print(f"no dead letter at {coordinates}")
    return 1


async def _one(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> list[DeadLetter]:
    async for r in read_partition(kafka, topic, partition, from_offset=offset):
        return [DeadLetter.of(topic, partition, r)]
    return []


@app.command("replay")
def replay_cmd(
    bootstrap: Bootstrap = None,
    service: Service = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
    rate: float = typer.Option(50.0, help="Records per second at most (0: no limit)."),
    limit: int | None = typer.Option(None, help="Replay at most this many."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be replayed."),
) -> None:
    """Send matching dead letters back to their original topic with the same key."""
    kafka = kafka_settings(bootstrap)
    letters = asyncio.run(select(kafka, _filters(service, reason, since, until, key)))[: limit or None]
    if dry_run:
        for d in letters:
            console.print(f"would replay {d.coordinates} -> {d.headers.get(h.DLQ_ORIGINAL_TOPIC)} ({d.reason[:60]})")
        console.print(f"{len(letters)} dead letter(s) would be replayed")
        return
    with Progress(console=console) as progress:
        done = asyncio.run(replay(kafka, letters, rate, progress))
    console.print(f"replayed {done} dead letter(s)")
