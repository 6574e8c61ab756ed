"""`postcall dlq list | show | replay`: inspect dead letters and send chosen ones back.

Replay republishes the original key and value to the original topic (never the retry tiers) with the
hop headers stripped and x-replay-* headers added, rate-limited, waiting for acks=all. The main
consumer groups are never rewound: only the selected records run again, and side effects stay
idempotent by action_id. A service whose route replays privately (the recorder, which shares every
topic it reads) gets its letters on its own replay topic instead, with where each first arrived
(x-original-*): it handles the copy as if read there, and no other consumer of that topic sees it.

With a store (--database-url or POSTCALL_DATABASE__URL), replay claims each letter in it first, as the
API's and the console's replays do (services/store/claims.py, POSTCALL_API__REPLAY_LEASE_SECONDS): a
letter another replay is sending is skipped, so two replays at once send it once, and those sent are
marked replayed in the store at once. A letter the recorder has not stored yet is stored first, as the
recorder will store it, so that it is claimed too.

Dead letters are printed as plain text (services/cli/plain.py), the value of a credential-like header
as [redacted], as the API and the console show it (a replay sends it as it was). Their headers are not
trusted: a malformed `x-replay-count` counts as 0, and a dead letter whose original topic is missing,
or names one of our topics that the service which dead-lettered it does not consume, is not replayed
(it is listed as skipped, with why).
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import typer
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from schemas import headers as h
from schemas.routes import SERVICES, registry, route_of
from schemas.topics import dead_letter_topic
from services.api.settings import HttpSettings
from services.cli.options import Bootstrap, aware, kafka_settings
from services.cli.plain import plain, plain_lines
from services.cli.republish import Interrupted, RepublishFailed, republish
from services.cli.store import with_store
from services.common import codec
from services.common.codec import Outgoing, now_iso
from services.common.kafka import partitions_of, read_partition
from services.common.settings import KafkaSettings
from services.store import claims, writer
from services.store import rows as store_rows
from services.store.db import Store
from services.store.queries import shown_headers
from services.store.writer import horizon

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
    replayed_by: str | None = None  # set when a replay marker for it was found

    @classmethod
    def of(cls, topic: str, partition: int, r: Any) -> DeadLetter:
        return cls(topic, partition, r.offset, r.timestamp, r.key, r.value, codec.header_dict(r.headers))

    @property
    def service(self) -> str:
        return self.headers.get(h.DLQ_SERVICE, self.topic.split(".")[1])

    @property
    def reason(self) -> str:
        return self.headers.get(h.EXCEPTION_MESSAGE, "")

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
    replayed: bool = False  # also those already replayed

    def match(self, d: DeadLetter) -> bool:
        ts = datetime.fromtimestamp(d.timestamp_ms / 1000, UTC)
        return (
            (
                self.reason is None
                or self.reason.lower() in f"{d.reason} {d.headers.get(h.DLQ_FAILURE_CATEGORY)}".lower()
            )
            and (self.since is None or ts >= aware(self.since))
            and (self.until is None or ts < aware(self.until))
            and (self.key is None or (d.key or b"").decode(errors="replace") == self.key)
        )


async def select(kafka: KafkaSettings, filters: Filters) -> list[DeadLetter]:
    """Every dead letter of the chosen services that matches the filters, oldest first per partition;
    those already replayed (a replay marker follows them) only with `filters.replayed`."""
    out: list[DeadLetter] = []
    for service in filters.services:
        topic = dead_letter_topic(service)
        for partition in await partitions_of(kafka, topic):
            letters, replayed = [], {}
            async for r in read_partition(kafka, topic, partition):
                d = DeadLetter.of(topic, partition, r)
                if h.DLQ_REPLAYED in d.headers:  # a replay marker, not a dead letter
                    replayed[d.headers[h.DLQ_REPLAYED]] = d.headers.get(h.REPLAYED_BY, "unknown")
                elif filters.match(d):
                    letters.append(d)
            for d in letters:
                if d.coordinates in replayed:
                    d = dataclasses.replace(d, replayed_by=replayed[d.coordinates])
                if filters.replayed or d.replayed_by is None:
                    out.append(d)
    return out


def replay_count(d: DeadLetter) -> int:
    """How many times it was replayed before; a header that is not a small ASCII number counts as 0."""
    value = d.headers.get(h.REPLAY_COUNT, "0").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0


def replay_target(d: DeadLetter) -> str | None:
    """The topic to replay to: the dead letter's original topic, unless it is missing or is one of our
    topics that the service which dead-lettered it does not consume (a forged header must not aim a
    replay at, say, an action topic), or a retry, dead-letter or replay topic. A service that replays
    privately (Route.private_replay: the recorder) gets its letters on its own replay topic instead, those
    from a topic it does not read not at all."""
    target = d.headers.get(h.ORIGINAL_TOPIC, "").strip()
    service = next((s for s in SERVICES if dead_letter_topic(s) == d.topic), None)
    ours = {t.name: t for t in registry()}
    if not target or (service is None and target in ours):
        return None
    if service is not None:
        route = route_of(service)
        hops = {route.dead_letter_topic, *route.retry_topics, *route.replay_topics}
        if target in hops or (target in ours and service not in ours[target].consumers):
            return None
        if route.private_replay:  # the copy is read as if from its original topic: one the service reads
            return route.replay_topics[0] if target in route.input_topics else None
    return target


PRIVATE_REPLAY_TOPICS = frozenset(topic for service in SERVICES for topic in route_of(service).replay_topics)


def replay_headers(d: DeadLetter, by: str, private: bool = False) -> dict[str, str]:
    """Original headers without the hop headers, plus where this replay came from. A re-extraction's
    `x-reextracted-by` is dropped too: that operator's action was audited from the first copy, and the
    replay is this operator's (its marker says who), not a second re-extraction by the first. `private`:
    the copy goes to its service's replay topic, which handles it as if read where it first arrived: it
    keeps the x-original-* headers that say where (stripped, as `replay_target` reads the topic)."""
    out = {k: v for k, v in d.headers.items() if k not in h.HOP_HEADERS and k != h.REEXTRACTED_BY}
    out[h.REPLAY_COUNT] = str(replay_count(d) + 1)
    out[h.REPLAYED_FROM] = d.coordinates
    out[h.REPLAYED_AT] = now_iso()
    out[h.REPLAYED_BY] = by
    if private:
        out |= {name: d.headers[name].strip() for name in h.ORIGIN if name in d.headers}
    return out


def replay_marker(d: DeadLetter, by: str, via: str = "cli") -> Outgoing:
    """Written to the dead letter's own partition once its replay is acknowledged: `dlq list` and the
    store then show it as replayed (a replay that fails again is dead-lettered anew, and listed), and
    the recorder audits a command line's replay from it (`via`)."""
    at = now_iso()
    headers = {h.DLQ_REPLAYED: d.coordinates, h.REPLAYED_BY: by, h.REPLAYED_AT: at, h.REPLAYED_VIA: via}
    value = orjson.dumps({"replayed": d.coordinates, "by": by, "at": at})
    return Outgoing(d.topic, d.key, value, headers, partition=d.partition)


def operator() -> str:
    """Who replays from this command line: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def replay_records(letters: Sequence[DeadLetter], by: str, via: str = "cli") -> list[Outgoing]:
    """Each dead letter to its original topic (or its service's replay topic) with its key, then its
    replay marker (those without a valid original topic are left out: see `replay_target`)."""
    return [
        Outgoing(
            target,
            d.key,
            d.value,
            replay_headers(d, by, target in PRIVATE_REPLAY_TOPICS),
            then=replay_marker(d, by, via),
        )
        for d in letters
        if (target := replay_target(d)) is not None
    ]


async def replay(
    kafka: KafkaSettings,
    letters: Sequence[DeadLetter],
    rate: float,
    progress: Progress | None,
    by: str,
    on_signals: bool = False,
) -> int:
    """Republish to the original topics at most `rate` records/s; returns how many were acknowledged.
    `on_signals`: a signal stops it between two letters, each sent with its marker (Interrupted)."""
    return await republish(kafka, replay_records(letters, by), rate, progress, "replaying", on_signals)


@dataclass(frozen=True)
class Claimed:
    """What a replay through the store's claims did."""

    sent: int
    held: list[DeadLetter]  # another replay is sending it, or it was replayed since it was chosen
    unrecorded: list[DeadLetter]  # older than the store's retention (pruned): sent without a claim


async def replay_claimed(
    store: Store,
    kafka: KafkaSettings,
    letters: Sequence[DeadLetter],
    rate: float,
    progress: Progress | None,
    by: str,
    lease: timedelta,
    replayed: bool = False,
    on_signals: bool = False,
) -> Claimed:
    """As `replay`, each letter the store holds claimed first as the API's replay claims it
    (services/store/claims.py): one that another replay is sending (or sent since) is left alone, so two
    replays at once send it once, and those sent are marked replayed. `replayed`: also a letter the store
    says was replayed (`--all`). A letter the recorder has not stored yet is stored first, as it will
    store it (its insert then adds nothing), and claimed: unclaimed, the recorder could store it as
    pending while this replay sends it, and a replay from the store send it again. One older than the
    store's retention (which the recorder skips) is sent without a claim. Stopped part-way (Kafka failed,
    or a signal with `on_signals`), those sent are marked replayed and the others released at once."""
    found = await claims.stored(store, (_at(d) for d in letters))
    if await _record(store, [d for d in letters if _at(d) not in found]):
        found = await claims.stored(store, (_at(d) for d in letters))
    mine, got = await claims.claim(
        store,
        ((s.id, s.replayed_at if replayed else None) for d in letters if (s := found.get(_at(d))) is not None),
        lease,
    )
    held_at = {at for at, s in found.items() if s.id not in got}
    held = [d for d in letters if _at(d) in held_at]
    sending = [d for d in letters if _at(d) not in held_at]
    ids = [found[_at(d)].id if _at(d) in found else None for d in sending]

    def sent(done: int) -> list[int]:
        return [i for i in ids[:done] if i is not None]

    try:
        async with claims.held(store, mine, lease):
            done = await replay(kafka, sending, rate, progress, by, on_signals)
    except (RepublishFailed, Interrupted) as exc:  # released at once: the operator retries when ready
        await claims.settle(store, mine, sent(exc.done), by)
        if isinstance(exc, Interrupted):
            exc.skipped = [d.coordinates for d in held]
        raise
    await claims.settle(store, mine, sent(done), by)
    return Claimed(done, held, [d for d in sending if _at(d) not in found])


def _at(d: DeadLetter) -> claims.Coordinates:
    return d.topic, d.partition, d.offset


async def _record(store: Store, letters: Sequence[DeadLetter]) -> int:
    """Store the letters the recorder would store (those within the retention) as it stores them: the
    same row, keyed by the letter's coordinates. Returns how many."""
    keep_from = horizon(store.settings.retention_days).timestamp() * 1000
    recordable = [d for d in letters if d.timestamp_ms >= keep_from]
    for start in range(0, len(recordable), claims.BATCH):
        rows = store_rows.Rows()
        for d in recordable[start : start + claims.BATCH]:
            source = store_rows.Source(d.topic, d.partition, d.offset, d.timestamp_ms)
            service = next((s for s in SERVICES if dead_letter_topic(s) == d.topic), d.service)
            rows.extend(store_rows.dead_letter(source, service, d.key, d.value, d.headers))
        await writer.write(store, rows)
    return len(recordable)


# ── commands ─────────────────────────────────────────────────────────────────────────────────────────

Service = Annotated[
    list[str] | None, typer.Option("--service", "-s", help="extractor, router, dispatcher, recorder (repeat).")
]
Reason = Annotated[str | None, typer.Option(help="Substring of the reason or failure category.")]
Since = Annotated[datetime | None, typer.Option(help="Dead-lettered at or after (UTC if no offset).")]
Until = Annotated[datetime | None, typer.Option(help="Dead-lettered before.")]
Key = Annotated[str | None, typer.Option(help="Record key (conversation id) to match exactly.")]
All = Annotated[bool, typer.Option("--all", help="Also dead letters already replayed.")]


def _filters(
    service: list[str] | None, reason: str | None, since: Any, until: Any, key: str | None, everything: bool = False
) -> Filters:
    unknown = set(service or ()) - set(SERVICES)
    if unknown:
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}; choose from {SERVICES}")
    return Filters(tuple(service or SERVICES), reason, since, until, key, everything)


@app.command("list")
def list_cmd(
    bootstrap: Bootstrap = None,
    service: Service = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
    everything: All = False,
) -> None:
    """List dead letters not replayed yet (with --all, every one): where they came from, why, attempts."""
    letters = asyncio.run(select(kafka_settings(bootstrap), _filters(service, reason, since, until, key, everything)))
    print_letters(letters, console)
    console.print(f"{len(letters)} dead letter(s)")


DETAILS = ("original topic", "category", "attempts", "reason", "at")
ROOM_PER_DETAIL = 10  # below this the other columns are unreadable: one block per letter instead


def print_letters(letters: Sequence[DeadLetter], out: Console) -> None:
    """A table when the terminal is wide enough for the coordinates and the key whole and room for the
    rest; otherwise one block per letter. Either way the coordinates (`dlq show`) and the key (`--key`)
    are printed whole, never cut or folded."""
    if not letters:
        return
    coordinates = max(len(d.coordinates) for d in letters)
    keys = max(len(plain(d.key)) for d in letters)
    needed = coordinates + keys + ROOM_PER_DETAIL * len(DETAILS) + 3 * (2 + len(DETAILS)) + 1
    if needed <= out.width:
        out.print(letters_table(letters))
        return
    for d in letters:
        out.print(Text.assemble(plain(d.coordinates, "bold"), "  key ", plain(d.key)), soft_wrap=True)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for name, value in zip(DETAILS, _details(d), strict=True):
            grid.add_row(f"  {name}", value)
        out.print(grid)


def letters_table(letters: Sequence[DeadLetter]) -> Table:
    """The coordinates and the key are never cut (print_letters gives the table only the room it
    needs): `dlq show` and `--key` need them whole; the other columns wrap instead."""
    coordinates = [d.coordinates for d in letters]
    keys = [plain(d.key) for d in letters]
    table = Table()
    table.add_column("dead letter", no_wrap=True, min_width=max(map(len, coordinates), default=11))
    table.add_column("key", no_wrap=True, min_width=max((len(k) for k in keys), default=3))
    for name in DETAILS:
        table.add_column(name, overflow="fold")
    for d, coordinate, key in zip(letters, coordinates, keys, strict=True):
        table.add_row(plain(coordinate), key, *_details(d))
    return table


def _details(d: DeadLetter) -> list[Text]:
    reason = d.reason[:80] + (f" (replayed by {d.replayed_by})" if d.replayed_by else "")
    return [
        plain(d.headers.get(h.ORIGINAL_TOPIC, "?")),
        plain(d.headers.get(h.DLQ_FAILURE_CATEGORY, "?")),
        plain(d.headers.get(h.ATTEMPTS, "?")),
        plain(reason),
        plain(d.headers.get(h.LAST_FAILURE_AT, "")),
    ]


@app.command("show")
def show_cmd(
    coordinates: str = typer.Argument(help="topic:partition:offset, as `dlq list` prints it"),
    bootstrap: Bootstrap = None,
) -> None:
    # \\[ : Typer renders a docstring as rich markup, where [redacted] would be a tag and vanish
    """Show one dead letter: every header (a credential-like one as \\[redacted]) and the value."""
    topic, partition, offset = _coordinates(coordinates)
    letters = asyncio.run(_one(kafka_settings(bootstrap), topic, partition, offset))
    if not letters:
        raise typer.Exit(code=_missing(coordinates))
    d = letters[0]
    for name, value in sorted(shown_headers(d.headers).items()):
        console.print(Text.assemble(plain(name, style="bold"), ": ", plain(value)))
    try:
        pretty = orjson.dumps(orjson.loads(d.value or b"null"), option=orjson.OPT_INDENT_2).decode()
        console.print(plain_lines(pretty))
    except orjson.JSONDecodeError:
        console.print(plain(repr((d.value or b"")[:2000])))


def _coordinates(coordinates: str) -> tuple[str, int, int]:
    """topic:partition:offset, or exit 2 saying it is not."""
    parts = coordinates.rsplit(":", 2)
    if len(parts) == 3 and parts[0] and all(p.isascii() and p.isdigit() for p in parts[1:]):
        return parts[0], int(parts[1]), int(parts[2])
    typer.echo(f"postcall dlq show: {coordinates!r} is not topic:partition:offset (as `dlq list` prints it)", err=True)
    raise typer.Exit(2)


def _missing(coordinates: str) -> int:
    console.print(Text.assemble("no dead letter at ", plain(coordinates)))
    return 1


async def _one(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> list[DeadLetter]:
    if partition not in await partitions_of(kafka, topic):  # end_offsets would time out: no such partition
        return []
    async for r in read_partition(kafka, topic, partition, from_offset=offset):
        return [DeadLetter.of(topic, partition, r)]
    return []


StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The store (default: POSTCALL_DATABASE__URL). With one, each letter is claimed first as the "
        "console's replays claim it: one another replay is sending is skipped.",
    ),
]


@app.command("replay")
def replay_cmd(
    bootstrap: Bootstrap = None,
    service: Service = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
    rate: float = typer.Option(50.0, min=0, help="Records per second at most (0: no limit)."),
    limit: int | None = typer.Option(None, min=1, help="Replay at most this many."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be replayed."),
    everything: All = False,
    database_url: StoreUrl = None,
) -> None:
    """Send matching dead letters (not replayed yet, unless --all) back to their original topic; with a
    store, through the claims the console's replays take, so two replays at once send each letter once."""
    kafka = kafka_settings(bootstrap)
    letters = asyncio.run(select(kafka, _filters(service, reason, since, until, key, everything)))[: limit or None]
    targets = [replay_target(d) for d in letters]
    unusable = [d for d, target in zip(letters, targets, strict=True) if target is None]
    for d in unusable:
        original = plain(d.headers.get(h.ORIGINAL_TOPIC, "(none)"))
        why = " is not an input of the service that dead-lettered it; not replayed"
        console.print(Text.assemble(f"skipping {d.coordinates}: its original topic ", original, why))
    letters = [d for d, target in zip(letters, targets, strict=True) if target is not None]
    url = database_url or os.environ.get("POSTCALL_DATABASE__URL")  # no store configured: no claim to take
    if dry_run:
        busy = with_store(url, lambda store: _busy(store, letters, everything)) if url and letters else set()
        for d in letters:
            if _at(d) in busy:
                console.print(f"would skip {d.coordinates}: {HELD}")
                continue
            target = replay_target(d) or ""
            console.print(Text.assemble(f"would replay {d.coordinates} -> {target} (", plain(d.reason[:60]), ")"))
        console.print(f"{len(letters) - len(busy)} dead letter(s) would be replayed")
        return
    try:
        claimed = _replay(kafka, letters, rate, url, everything)
    except Interrupted as exc:
        for coordinates in exc.skipped:
            console.print(f"skipped {coordinates}: {HELD}")
        console.print(
            f"interrupted ({signal.Signals(exc.signum).name}): replayed {exc.done} of {exc.total} dead letter(s), "
            "each with its replay marker; the others were not sent (the same command again sends only them)"
        )
        raise typer.Exit(exc.exit_code) from None
    for d in claimed.held:
        console.print(f"skipped {d.coordinates}: {HELD}")
    if claimed.unrecorded:
        console.print(f"{len(claimed.unrecorded)} older than the store's retention: sent without a claim")
    console.print(f"replayed {claimed.sent} dead letter(s)")


def _replay(
    kafka: KafkaSettings, letters: Sequence[DeadLetter], rate: float, url: str | None, everything: bool
) -> Claimed:
    with Progress(console=console) as progress:
        if url:
            lease, by = _replay_lease(), operator()
            return with_store(
                url,
                lambda store: replay_claimed(store, kafka, letters, rate, progress, by, lease, everything, True),
            )
        return Claimed(asyncio.run(replay(kafka, letters, rate, progress, operator(), True)), [], [])


HELD = "another replay is sending it, or sent it since (its claim in the store)"


async def _busy(store: Store, letters: Sequence[DeadLetter], replayed: bool) -> set[claims.Coordinates]:
    """The letters a replay now would skip: held by a live claim, or replayed since (unless `replayed`)."""
    found = await claims.stored(store, (_at(d) for d in letters))
    return {at for at, s in found.items() if claims.live(s.claimed_until) or (s.replayed_at and not replayed)}


def _replay_lease() -> timedelta:
    """POSTCALL_API__REPLAY_LEASE_SECONDS: the same claims, the same lease as the API's replays."""

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")
        api: HttpSettings = HttpSettings()

    return _Env().api.replay_lease
