"""`postcall publish FILE|-`: publish one ConversationEnded, or a vendor's post-call webhook payload
mapped exactly as the ingress maps it (`--from vapi|retell|elevenlabs`), and wait for the brokers'
acknowledgement (acks=all). Exit 0 published, 1 not published (Kafka unavailable, or the payload is
not a finished conversation), 2 a bad file or payload (each problem named)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import orjson
import typer

from schemas.events import ConversationEnded
from services.cli.options import Bootstrap, contract_id, kafka_settings, kafka_unreachable
from services.cli.plain import escape_controls
from services.ingress import publisher as publisher_module
from services.ingress.platforms import Ignored, PayloadError, map_one
from services.ingress.publisher import Published, Publisher, TooLarge, Unavailable, ce_source

Source = Literal["native", "vapi", "retell", "elevenlabs"]


def publish(
    file: Annotated[str, typer.Argument(help="A JSON file, or - for standard input.")],
    source: Annotated[
        Source,
        typer.Option("--from", help="native: a ConversationEnded; vapi, retell, elevenlabs: their webhook body."),
    ] = "native",
    account: Annotated[
        str | None,
        typer.Option(
            help="The account (tenant) id; required with --from a vendor, checked for native.", callback=contract_id
        ),
    ] = None,
    account_name: Annotated[str | None, typer.Option(help="The account's display name.")] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="The postcall agent (configuration id) the call is for: the ingress takes it from the endpoint's "
            "agents:, which the command line does not read. Default: the payload's own agent id.",
            callback=contract_id,
        ),
    ] = None,
    bootstrap: Bootstrap = None,
    timeout: Annotated[float, typer.Option(help="Seconds the brokers get to acknowledge.")] = 10.0,
) -> None:
    """Publish one conversation to postcall.conversation-ended.v1 and print where it landed."""
    raw = sys.stdin.buffer.read() if file == "-" else _read(Path(file))
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _fail(2, f"{file}: not valid JSON: {exc}")
    event = _event(payload, source, account, account_name, agent, file)
    try:
        done = asyncio.run(_publish(event, source, bootstrap, timeout))
    except Unavailable as exc:
        _fail(1, f"not published: {kafka_unreachable(exc)}")
    except TooLarge as exc:
        _fail(1, f"not published: {exc}")
    note = " (already published by this process)" if done.duplicate else ""
    ids = escape_controls(done.event_id), escape_controls(done.conversation_id)  # the payload's: shown, not sent
    typer.echo(
        f"published {ids[0]} (conversation {ids[1]}) to {done.topic} "
        f"partition {done.partition} offset {done.offset}{note}"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(2, f"cannot read {path}: {exc.strerror}")


def _event(
    payload: object, source: Source, account: str | None, account_name: str | None, agent: str | None, file: str
) -> ConversationEnded:
    if source != "native" and not account:
        _fail(2, f"--account is required with --from {source}: the account is never taken from a vendor payload")
    if source == "native" and not account:
        if isinstance(payload, dict) and "account" not in payload:
            _fail(2, f"{file}: the payload cannot be used:\n  account: Field required (a ConversationEnded names its "
                  "account; or pass --account)")  # fmt: skip
        found = payload.get("account") if isinstance(payload, dict) else None
        account = str(found.get("id", "")) if isinstance(found, dict) else ""
    # said here: the ingress's refusal of another account names an endpoint, which the command line has not
    named = payload.get("account") if source == "native" and isinstance(payload, dict) else None
    if isinstance(named, dict) and "id" in named and str(named["id"]) != account:
        _fail(2, f"{file}: the payload names account {escape_controls(repr(named['id']))}, not --account {account!r}")
    try:
        mapped = map_one(source, payload, account or "", account_name, agent)
    except PayloadError as exc:
        problems = (f"  {escape_controls(f)}: {escape_controls(p)}" for f, p in exc.problems)  # the payload's keys
        _fail(2, f"{file}: the payload cannot be used:\n" + "\n".join(problems))
    if isinstance(mapped, Ignored):
        _fail(1, f"not published: {mapped.reason}")
    if agent and mapped.agent.id != agent:  # as `postcall try --agent`
        return mapped.model_copy(update={"agent": mapped.agent.model_copy(update={"id": agent})})
    return mapped


async def _publish(event: ConversationEnded, source: Source, bootstrap: str | None, timeout: float) -> Published:
    # its "kafka not reachable" warning per connection attempt is the ingress's log; the command says it once
    logging.getLogger(publisher_module.__name__).setLevel(logging.ERROR)
    publisher = Publisher(kafka_settings(bootstrap), timeout_seconds=timeout)
    await publisher.start()
    try:
        return await publisher.publish(event, ce_source(source, event))
    finally:
        await publisher.stop()


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)
