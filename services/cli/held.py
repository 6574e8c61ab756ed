"""`postcall held`: the flows held because a conversation's extraction failed, and releasing them.

A flow that uses the extraction is held, not sent, when extraction failed (the decision trace says
`held`, `postcall_router_flows_total{outcome="held"}` counts it, PostcallFlowsHeld alerts). Two ways out:

    postcall reextract --ids <conversation>      extract again (the cause is fixed): held flows run with
                                                  real values, what already ran is not repeated
    postcall held release --ids <conversation>   run them as they are, on the failed extraction

`list` reads postcall.decisions.v1 and shows each conversation whose latest decision still holds flows.
`release` republishes that conversation's latest postcall.conversation-extracted.v1 record with a fresh
ce_id and the `x-run-held` header; the router then runs the held flows with what there is (their
actions keep their ids: a later successful extraction repeats nothing). A conversation it cannot release
is named with why, and the exit code is 1: one asked for by --ids whose latest decision holds nothing,
or one whose extraction record is past the topic's retention (decision traces are kept 14 days,
extractions 7: extract it again from the store, `postcall reextract --source store`). --all choosing
nothing is not an error.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from schemas import headers as h
from schemas.topics import CONVERSATION_EXTRACTED, DECISIONS
from services.cli.options import Bootstrap, kafka_settings
from services.cli.plain import plain
from services.cli.reextract import read_to_end
from services.cli.republish import Interrupted, republish
from services.common import codec
from services.common.codec import Outgoing, now_iso

app = typer.Typer(help="Flows held because extraction failed: list them, or run them as they are.")
console = Console()


@dataclass(frozen=True)
class Held:
    conversation_id: str
    agent_id: str
    flows: tuple[str, ...]
    reason: str
    decided_at: str


def latest_holds(decisions: Sequence[Any], agent: str | None = None) -> list[Held]:
    """Conversations whose latest decision trace holds flows (a later trace that ran them clears them)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in decisions:
        try:
            trace = orjson.loads(record.value)
            latest[str(trace["conversation_id"])] = trace
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    out = []
    for cid, trace in latest.items():
        flows = [f for f in trace.get("flows", []) if isinstance(f, dict) and f.get("held")]
        if flows and (agent is None or trace.get("agent_id") == agent):
            ids = tuple(str(f.get("flow_id")) for f in flows)
            out.append(
                Held(
                    cid, str(trace.get("agent_id")), ids, str(flows[0].get("reason", "")), str(trace.get("decided_at"))
                )
            )
    return out


async def held(kafka: Any, agent: str | None, since: datetime | None, topic: str = DECISIONS) -> list[Held]:
    return latest_holds(await read_to_end(kafka, topic, since), agent)


async def release(
    kafka: Any,
    conversations: frozenset[str],
    rate: float,
    since: datetime | None,
    topic: str = CONVERSATION_EXTRACTED,
    on_signals: bool = False,
) -> tuple[int, frozenset[str]]:
    """Republish each conversation's latest extraction record with RUN_HELD; returns how many were sent and
    the conversations that have none left on the topic (past its retention): those cannot be released.
    `on_signals`: a signal stops it between two conversations (Interrupted, `sent` its conversations)."""
    latest: dict[str, Any] = {}
    for record in await read_to_end(kafka, topic, since):
        key = record.key.decode("utf-8", "replace") if record.key else None
        if key in conversations and record.value:
            latest[key] = record
    outgoing = [Outgoing(topic, r.key, r.value, release_headers(codec.header_dict(r.headers))) for r in latest.values()]
    try:
        return await republish(kafka, outgoing, rate, None, "releasing", on_signals), conversations - latest.keys()
    except Interrupted as exc:
        exc.sent = list(latest)[: exc.done]
        raise


def release_headers(original: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in original.items() if k not in h.HOP_HEADERS}
    out.update({h.CE_ID: str(uuid.uuid4()), h.CE_TIME: now_iso(), h.RUN_HELD: "1"})
    return out


Agent = Annotated[str | None, typer.Option(help="Only this agent id.")]
Since = Annotated[datetime | None, typer.Option(help="Decisions made at or after (UTC if no offset).")]


@app.command("list")
def list_held(agent: Agent = None, since: Since = None, bootstrap: Bootstrap = None) -> None:
    """Conversations whose latest decision holds flows, and why."""
    found = asyncio.run(held(kafka_settings(bootstrap), agent, since))
    table = Table("conversation", "agent", "held flows", "decided at", "why")
    for item in found:
        table.add_row(
            plain(item.conversation_id),
            plain(item.agent_id),
            plain(", ".join(item.flows)),
            plain(item.decided_at),
            plain(item.reason[:160]),
        )
    console.print(table)
    console.print(f"{len(found)} conversation(s) with held flows")


Ids = Annotated[list[str] | None, typer.Option("--ids", help="Conversation ids (repeat, or comma-separated).")]
All = Annotated[bool, typer.Option("--all", help="Every conversation `postcall held list` shows.")]
Rate = Annotated[float, typer.Option(min=0.1, help="Records per second at most.")]


@app.command("release")
def release_held(
    ids: Ids = None,
    every: All = False,
    agent: Agent = None,
    since: Since = None,
    rate: Rate = 10.0,
    bootstrap: Bootstrap = None,
) -> None:
    """Run held flows as they are, on the failed extraction (to extract again instead: postcall reextract).

    Exit 1 when a conversation asked for (or, with --all, one that holds flows) was not released: each is
    named, with why."""
    wanted = frozenset(i.strip() for group in ids or () for i in group.split(",") if i.strip())
    if not wanted and not every:
        raise typer.BadParameter("choose conversations with --ids, or --all")
    kafka = kafka_settings(bootstrap)
    holding = {item.conversation_id for item in asyncio.run(held(kafka, agent, since))}
    chosen = frozenset(holding if every else holding & wanted)
    not_held = sorted(wanted - holding)
    filtered = ", or is outside --agent/--since" if agent or since else ""
    for cid in not_held:
        console.print(
            plain(f"{cid}: not released: no held flows (its latest decision holds nothing{filtered})", "yellow")
        )
    try:
        sent, gone = asyncio.run(release(kafka, chosen, rate, None, on_signals=True)) if chosen else (0, frozenset())
    except Interrupted as exc:
        released = ", ".join(exc.sent) or "none"
        console.print(
            plain(f"interrupted ({signal.Signals(exc.signum).name}): released {exc.done} of {exc.total}: {released}")
        )
        raise typer.Exit(exc.exit_code) from None
    for cid in sorted(gone):
        why = f"no extraction record of it is left on {CONVERSATION_EXTRACTED} (past its retention)"
        console.print(
            plain(f"{cid}: not released: {why}; `postcall reextract --source store` extracts again", "yellow")
        )
    console.print(f"{sent} conversation(s) released; the router runs their held flows as they are")
    if not_held or gone:
        raise typer.Exit(1)
