"""`postcall destinations`: the destination state the dispatcher's replicas share, and re-enabling one.

    postcall destinations status          disabled destinations (410 Gone), open circuits, live replicas
    postcall destinations enable crm      every replica sends to `crm` again (after its owner fixed it)

Both read or write postcall.destination-state.v1 (services/dispatcher/shared.py); no dispatcher restart.
"""

from __future__ import annotations

import asyncio
import difflib
import getpass
import socket
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from schemas.events import DestinationState
from schemas.topics import DESTINATION_STATE, DESTINATION_STATES
from services.cli.options import Bootstrap, kafka_settings
from services.cli.plain import plain
from services.cli.reextract import read_to_end
from services.common import codec
from services.common.kafka import producer
from services.common.settings import KafkaSettings
from services.dispatcher.shared import ALIVE_FOR, HEARTBEAT_SECONDS, OPERATOR, fact

app = typer.Typer(help="Destination state shared by the dispatcher's replicas: status, enable.")
console = Console()


def latest(records: list[Any]) -> dict[str, DestinationState]:
    """key -> the latest fact (a tombstone removes it), as compaction will leave them."""
    out: dict[str, DestinationState] = {}
    for record in records:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        if record.value is None:
            out.pop(key, None)
            continue
        try:
            out[key] = DestinationState.model_validate_json(record.value)
        except ValueError:
            continue
    return out


async def state(kafka: KafkaSettings, topic: str = DESTINATION_STATE) -> dict[str, DestinationState]:
    return latest(await read_to_end(kafka, topic))


async def enable(kafka: KafkaSettings, destination: str, topic: str = DESTINATION_STATE) -> DestinationState:
    who = f"enabled by {getpass.getuser()}@{socket.gethostname()} (postcall destinations enable)"
    record = fact("disabled", OPERATOR, destination=destination, disabled=False, reason=who)
    headers = codec.cloudevent_headers(record, DESTINATION_STATES.ce_type, "cli", record.key)
    p = producer(kafka)
    await p.start()
    try:
        await (await p.send(topic, codec.encode(record), key=record.key.encode(), headers=codec.header_list(headers)))
    finally:
        await p.stop()
    return record


def _at(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


@app.command("status")
def status(bootstrap: Bootstrap = None) -> None:
    """Disabled destinations, open circuits and the replicas alive, as every dispatcher replica sees them."""
    facts = asyncio.run(state(kafka_settings(bootstrap)))
    for line in report(facts, time.time()):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def report(facts: dict[str, DestinationState], now: float) -> list[Text]:
    """One line per destination fact, then the replicas alive and the count disabled."""
    lines: list[Text] = []
    for f in sorted(facts.values(), key=lambda f: (f.destination or "", f.kind)):
        if f.destination is None or f.kind == "replica":
            continue
        if f.kind == "disabled":
            label = "disabled" if f.disabled else "enabled"
        elif f.circuit == "open" and f.open_until is not None and f.open_until.timestamp() > now:
            label = f"circuit open until {_at(f.open_until)}"
        else:
            label = "circuit closed"
        why = f": {f.reason}" if f.reason else ""
        lines.append(plain(f"{f.destination}  {label}  since {_at(f.at)}  by {f.replica}{why}"))
    horizon = now - ALIVE_FOR * HEARTBEAT_SECONDS
    alive = sorted(
        (f.replica, _wants(f)) for f in facts.values() if f.kind == "replica" and f.at.timestamp() >= horizon
    )
    lines.append(plain(f"{len(alive)} dispatcher replica(s) alive (a rate limit is shared among those that want "
                       f"the destination): {', '.join(r + w for r, w in alive) or '-'}"))  # fmt: skip
    disabled = sorted(f.destination for f in facts.values() if f.kind == "disabled" and f.disabled and f.destination)
    lines.append(plain(f"{len(disabled)} destination(s) disabled: {', '.join(disabled) or '-'}"))
    return lines


def _wants(heartbeat: DestinationState) -> str:
    if heartbeat.wants is None:
        return ""  # a replica from before `wants`: it counts as wanting every destination
    return f" (wants {', '.join(sorted(heartbeat.wants))})" if heartbeat.wants else " (wants none)"


Name = Annotated[str, typer.Argument(help="The destination's name in the dispatcher's destinations file.")]


@app.command("enable")
def enable_command(name: Name, bootstrap: Bootstrap = None) -> None:
    """Send to a destination again on every replica (it was disabled by a 410 Gone)."""
    kafka = kafka_settings(bootstrap)
    facts = asyncio.run(state(kafka))
    # written even when nothing says disabled: a replica may hold a 410 whose record never reached the topic
    asyncio.run(enable(kafka, name))
    console.print(plain(enabled_message(name, facts)), soft_wrap=True)


def enabled_message(name: str, facts: dict[str, DestinationState]) -> str:
    current = facts.get(f"disabled/{name}")
    if current is not None and current.disabled:
        return f"{name}: enabled on every dispatcher replica (was: {current.reason or 'disabled'})"
    disabled = sorted(f.destination for f in facts.values() if f.kind == "disabled" and f.disabled and f.destination)
    if not disabled:
        return f"{name}: enabled on every dispatcher replica (it was not recorded as disabled)"
    near = difflib.get_close_matches(name, disabled, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    return (
        f"{name}: enabled on every dispatcher replica (it was not recorded as disabled; {hint}"
        f"recorded as disabled: {', '.join(disabled)})"
    )
