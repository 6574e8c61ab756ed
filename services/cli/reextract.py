"""`postcall reextract`: run extraction again on chosen past conversations (after a schema or model
change, or after a failed extraction was fixed).

The chosen ConversationEnded records are read from postcall.conversation-ended.v1 and republished to the
same topic with the same key and the same payload (event_id included), plus a fresh `ce_id` and an
`x-reextract-of: <original event_id>` header, rate-limited and acknowledged by all in-sync replicas.
Earlier re-extraction copies are never chosen again, and a platform's duplicates (same event_id) are
republished once. The extractor runs with the agent's current configuration; downstream, the
dispatcher's idempotency (action_id = conversation + agent + flow + the flow's own revision + action)
keeps actions whose flow did not change from running twice, and flows held on a failed extraction run
once. `--redeliver` adds `x-redeliver` (passed on by the extractor): the router then gives every action
an id per content that supersedes its own, and the dispatcher sends only those whose content changed.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn

import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from schemas import headers as h
from schemas.headers import REEXTRACT_OF  # the original event_id, passed on by the extractor
from schemas.topics import CONVERSATION_ENDED
from services.cli.apiclient import Api, ApiClient, ApiRefused, ApiUnreachable, Token
from services.cli.dlq import operator
from services.cli.options import Bootstrap, aware, kafka_settings
from services.cli.plain import escape_controls, plain
from services.cli.republish import Interrupted
from services.cli.republish import republish as send_all
from services.common import codec
from services.common.codec import Outgoing, now_iso
from services.common.kafka import partitions_of
from services.common.settings import KafkaSettings

app = typer.Typer(help="Republish past conversations so that they are extracted again.")
console = Console()


@dataclass(frozen=True)
class Chosen:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    event_id: str
    conversation_id: str
    agent_id: str


@dataclass(frozen=True)
class Filters:
    ids: frozenset[str] = frozenset()  # conversation ids or event ids
    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None

    def match(self, c: Chosen) -> bool:
        at = datetime.fromtimestamp(c.timestamp_ms / 1000, UTC)
        return (
            (not self.ids or c.conversation_id in self.ids or c.event_id in self.ids)
            and (self.until is None or at < aware(self.until))
            and (self.agent is None or c.agent_id == self.agent)
        )


def _read(r: Any) -> Chosen | None:
    """A conversation record, or None for a re-extraction copy or a value that is not one."""
    headers = codec.header_dict(r.headers)
    if REEXTRACT_OF in headers or r.value is None:
        return None
    try:
        v = orjson.loads(r.value)
        ids = (str(v["event_id"]), str(v["conversation_id"]), str(v["agent"]["id"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return Chosen(r.partition, r.offset, r.timestamp, r.key, r.value, headers, *ids)


async def select(kafka: KafkaSettings, filters: Filters, topic: str = CONVERSATION_ENDED) -> list[Chosen]:
    """Every matching original conversation up to the topic's end at call time, once per event_id."""
    chosen, seen = [], set()
    for record in await read_to_end(kafka, topic, filters.since):
        c = _read(record)
        if c is not None and c.event_id not in seen and filters.match(c):
            seen.add(c.event_id)
            chosen.append(c)
    return chosen


async def read_to_end(kafka: KafkaSettings, topic: str, since: datetime | None = None) -> list[Any]:
    """Every record of the topic published at or after `since`, up to its end at call time, in time order."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await _seek_to_start(consumer, tps, since)
        return await _until_end(consumer, ends)
    finally:
        await consumer.stop()


async def _seek_to_start(consumer: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None) -> None:
    """The first record at or after `since`, else the real beginning (seek_to_beginning is lazy)."""
    ends = await consumer.end_offsets(tps)
    if since is None:
        starts = await consumer.beginning_offsets(tps)
    else:
        found = await consumer.offsets_for_times({tp: int(aware(since).timestamp() * 1000) for tp in tps})
        starts = {tp: at.offset if (at := found.get(tp)) is not None else ends[tp] for tp in tps}
    for tp in tps:
        consumer.seek(tp, starts[tp])


async def _until_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[Any]:
    out: list[Any] = []
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=1000)
        for tp, records in batch.items():
            out.extend(r for r in records if r.offset < ends[tp])
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    return sorted(out, key=lambda r: (r.timestamp, r.partition, r.offset))


def reextract_headers(c: Chosen, redeliver: bool = False, by: str | None = None) -> dict[str, str]:
    """The original headers without hop headers, a fresh ce_id, where the copy came from, who sent it
    (the recorder audits it), and whether changed actions are to be re-delivered."""
    out = {k: v for k, v in c.headers.items() if k not in h.HOP_HEADERS and k not in (h.REDELIVER, h.REEXTRACTED_BY)}
    out[h.CE_ID] = str(uuid.uuid4())
    out[h.CE_TIME] = now_iso()
    out[REEXTRACT_OF] = c.event_id
    if by is not None:
        out[h.REEXTRACTED_BY] = by
    if redeliver:
        out[h.REDELIVER] = "1"
    return out


async def republish(
    kafka: KafkaSettings,
    chosen: Sequence[Chosen],
    rate: float,
    progress: Progress | None,
    topic: str = CONVERSATION_ENDED,
    redeliver: bool = False,
    by: str | None = None,
    on_signals: bool = False,
) -> int:
    """At most `rate` records/s; returns how many were acknowledged (`on_signals`: a signal stops it
    between two, Interrupted)."""
    outgoing = [Outgoing(topic, c.key, c.value, reextract_headers(c, redeliver, by)) for c in chosen]
    return await send_all(kafka, outgoing, rate, progress, "re-extracting", on_signals)


Ids = Annotated[list[str] | None, typer.Option("--ids", help="Conversation or event ids (repeat, or comma-separated).")]
Since = Annotated[datetime | None, typer.Option(help="Published at or after (UTC if no offset).")]
Until = Annotated[datetime | None, typer.Option(help="Published before.")]
Agent = Annotated[str | None, typer.Option(help="Only this agent id.")]
Rate = Annotated[float, typer.Option(min=0.1, help="Records per second at most.")]
RATE = 10.0
DryRun = Annotated[bool, typer.Option("--dry-run", help="List what would be republished; publish nothing.")]
Topic = Annotated[str, typer.Option(help="The conversation-ended topic (read from and republished to).")]
Redeliver = Annotated[
    bool,
    typer.Option(
        "--redeliver",
        help="Send again every action whose content changed, under a new id carrying `supersedes: <old id>` "
        "(receivers upsert); without it, actions already delivered are never repeated.",
    ),
]


Source = Annotated[
    Literal["auto", "store", "topic"],
    typer.Option(help="auto: the store when a query API is configured (--api, POSTCALL_API_URL), else the topic."),
]
Limit = Annotated[int, typer.Option(min=1, help="From the store: at most this many conversations.")]


@app.callback(invoke_without_command=True)
def reextract(
    ids: Ids = None,
    since: Since = None,
    until: Until = None,
    agent: Agent = None,
    rate: Rate = RATE,
    dry_run: DryRun = False,
    bootstrap: Bootstrap = None,
    topic: Topic = CONVERSATION_ENDED,
    source: Source = "auto",
    api: Api = None,
    token: Token = None,
    limit: Limit = 1000,
    redeliver: Redeliver = False,
) -> None:
    """Republish chosen past conversations to postcall.conversation-ended.v1 so they are extracted again.

    From the store (through the query API: audited, and as far back as the store keeps calls, not only
    the topic's 7 days) --ids are conversation ids and --since/--until bound the conversation's end;
    from the topic --ids may also be event ids and --since/--until bound the time it was published.
    Flows held on a failed extraction run once the new extraction succeeds; actions already delivered
    keep their ids and are not repeated, unless --redeliver asks to send changed content again."""
    wanted = frozenset(i.strip() for group in ids or () for i in group.split(",") if i.strip())
    if not (wanted or since or until or agent):
        raise typer.BadParameter("choose conversations with --ids, --since/--until or --agent")
    client = ApiClient.configured(api, token)
    if source == "store" and client is None:
        raise typer.BadParameter("--source store needs the query API: --api URL or POSTCALL_API_URL")
    if client is not None and source != "topic":
        chosen_filter = {"ids": sorted(wanted), "agent": agent, "since": since, "until": until}
        _from_store(client, chosen_filter, rate, dry_run, limit, redeliver)
        return
    kafka = kafka_settings(bootstrap)
    chosen = asyncio.run(select(kafka, Filters(wanted, since, until, agent), topic))
    _table(chosen)
    _unmatched(wanted, {i for c in chosen for i in (c.conversation_id, c.event_id)}, f"on {topic}")
    if dry_run or not chosen:
        console.print(f"{len(chosen)} conversation(s) {'would be republished' if dry_run else 'to republish'}")
        return
    try:
        with Progress(console=console) as progress:
            done = asyncio.run(republish(kafka, chosen, rate, progress, topic, redeliver, operator(), True))
    except Interrupted as exc:
        _interrupted(exc, chosen, _same_run(topic, rate, redeliver, bootstrap))
    console.print(f"{done} conversation(s) republished for re-extraction")


def _from_store(
    client: ApiClient, chosen: dict[str, Any], rate: float, dry_run: bool, limit: int, redeliver: bool = False
) -> None:
    """POST /api/v1/conversations/reextract: the API republishes the stored events and audits it."""
    for name in ("since", "until"):
        if chosen[name] is not None:
            chosen[name] = aware(chosen[name]).isoformat()
    body = {"filter": {k: v for k, v in chosen.items() if v}, "dry_run": dry_run, "rate": rate, "limit": limit}
    if redeliver:
        body["redeliver"] = True
    try:
        result = client.post("/conversations/reextract", body, timeout=60 + limit / rate)
    except (ApiUnreachable, ApiRefused) as exc:
        typer.echo(f"postcall reextract: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # the API does not stop when we stop waiting: say so, not a silent 130
        if not dry_run:
            typer.echo(
                "postcall reextract: interrupted; the query API goes on with a re-extraction it received; "
                f"see its audit: GET {client.shown}/api/v1/audit",
                err=True,
            )
        raise typer.Exit(130) from None
    for conversation_id in result["items"]:
        console.print(plain(conversation_id))
    if result.get("skipped"):  # as the console says it: not sent by this run, and why
        console.print(
            f"{result['skipped']} conversation(s) left alone: another re-extraction chose them at the same moment "
            "and sends them",
            soft_wrap=True,
        )
    if len(result["items"]) == result["matched"]:  # every match listed (not cut at --limit)
        _unmatched(frozenset(chosen["ids"] or ()), set(result["items"]), "in the store")
    verb = "would be republished" if dry_run else f"chosen, {result['sent']} republished"
    console.print(f"{result['matched']} conversation(s) from the store {verb} for re-extraction")
    if result.get("error"):
        typer.echo(f"postcall reextract: {result['error']}", err=True)
        raise typer.Exit(2)


def _interrupted(exc: Interrupted, chosen: Sequence[Chosen], same_run: list[str]) -> NoReturn:
    """Which were republished (the same command again would extract those a second time) and which
    were not: the rows above from the first not sent, and the command that sends only those (with every
    option that changes what it does) when their event ids are few enough to paste."""
    what = f"{exc.done} of {exc.total} conversation(s) republished for re-extraction"
    rest = chosen[exc.done :]
    if rest:
        what += f", the first {exc.done} rows above; not sent: from record {rest[0].partition}:{rest[0].offset} on"
        ids = ",".join(c.event_id for c in rest)
        if len(ids) <= 4000 and all(_pasteable(c.event_id) for c in rest):
            command = ["postcall", "reextract", "--source", "topic", "--ids", ids, *same_run]
            what += f" ({shlex.join(command)} sends only them)"
    # one line however narrow the terminal, so that the command pastes whole
    console.print(plain(f"interrupted ({signal.Signals(exc.signum).name}): {what}"), soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _pasteable(event_id: str) -> bool:
    """--ids takes it back as it is: no comma (it splits at them), no space at either end (stripped), no
    control character (shown escaped)."""
    return "," not in event_id and event_id == event_id.strip() and escape_controls(event_id) == event_id


def _same_run(topic: str, rate: float, redeliver: bool, bootstrap: str | None) -> list[str]:
    """The options of a topic re-extraction, other than which conversations, that a second run needs to do
    the same: where it reads and sends, how fast, and whether changed actions are delivered again."""
    options = [] if bootstrap is None else ["--bootstrap", bootstrap]
    if topic != CONVERSATION_ENDED:
        options += ["--topic", topic]
    if rate != RATE:
        options += ["--rate", str(rate)]
    return [*options, "--redeliver"] if redeliver else options


def _unmatched(wanted: frozenset[str], found: set[str], where: str) -> None:
    """Name the --ids that matched nothing (a typo, a call past the topic's retention): "0 chosen" alone
    did not say which."""
    missing = sorted(wanted - found)
    if missing:
        typer.echo(
            f"postcall reextract: no conversation {where} matches --ids {', '.join(map(escape_controls, missing))}",
            err=True,
        )


def _table(chosen: Sequence[Chosen]) -> None:
    table = Table()  # the conversation ids whole (--ids takes them); the rest folds in a narrow terminal
    table.add_column("record", no_wrap=True)
    shown = [plain(c.conversation_id) for c in chosen]
    table.add_column("conversation", no_wrap=True, min_width=max((len(t) for t in shown), default=12))
    for column in ("agent", "event id", "published at"):
        table.add_column(column, overflow="fold")
    for c, conversation in zip(chosen, shown, strict=True):
        at = datetime.fromtimestamp(c.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
        table.add_row(f"{c.partition}:{c.offset}", conversation, plain(c.agent_id), plain(c.event_id), at)
    console.print(table)
