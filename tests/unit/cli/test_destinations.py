"""`postcall destinations status`: what the shared destination state says, one plain line per fact."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from schemas.events import DestinationState
from services.cli import destinations
from services.cli.destinations import report


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def fact(**fields: object) -> DestinationState:
    return DestinationState.model_validate({"replica": "dispatcher-0", "at": at(1000), **fields})


def test_status_lists_disabled_destinations_open_circuits_and_live_replicas() -> None:
    facts = {
        "disabled/crm": fact(
            kind="disabled", destination="crm", disabled=True, reason="destination disabled (410 Gone)"
        ),
        "disabled/slack": fact(kind="disabled", destination="slack", disabled=False, reason="enabled by ops"),
        "circuit/sheets": fact(kind="circuit", destination="sheets", circuit="open", open_until=at(1030)),
        "circuit/teams": fact(kind="circuit", destination="teams", circuit="open", open_until=at(990)),
        "replica/dispatcher-0": fact(kind="replica"),
        "replica/dispatcher-1": fact(kind="replica", replica="dispatcher-1", at=at(900)),  # silent: gone
        "replica/dispatcher-2": fact(kind="replica", replica="dispatcher-2", wants=["sheets", "crm"]),
        "replica/dispatcher-3": fact(kind="replica", replica="dispatcher-3", wants=[]),
    }
    lines = [str(line) for line in report(facts, now=1001)]
    assert lines[0].startswith("crm  disabled  since 1970-01-01T00:16:40+00:00  by dispatcher-0: destination")
    assert lines[1].startswith("sheets  circuit open until 1970-01-01T00:17:10+00:00")
    assert lines[2].startswith("slack  enabled")
    assert lines[3].startswith("teams  circuit closed")  # its open time is over
    assert lines[4] == (
        "3 dispatcher replica(s) alive (a rate limit is shared among those that want the destination): "
        "dispatcher-0, dispatcher-2 (wants crm, sheets), dispatcher-3 (wants none)"
    )
    assert lines[5] == "1 destination(s) disabled: crm"


def test_a_destination_name_from_kafka_is_printed_as_plain_text() -> None:
    facts = {"disabled/x": fact(kind="disabled", destination="[red]x\x1b[2J", disabled=True)}
    assert str(report(facts, now=1001)[0]).startswith("[red]x\\x1b[2J  disabled")


def test_enable_writes_the_enable_record_even_when_nothing_recorded_it_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[str] = []

    async def no_state(kafka: object) -> dict[str, DestinationState]:
        return {}

    async def enable(kafka: object, destination: str) -> None:
        written.append(destination)

    monkeypatch.setattr(destinations, "state", no_state)
    monkeypatch.setattr(destinations, "enable", enable)
    result = CliRunner().invoke(destinations.app, ["enable", "crm", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert written == ["crm"]
    assert "crm: enabled on every dispatcher replica (it was not recorded as disabled)" in result.output


def test_enabling_a_name_not_recorded_as_disabled_names_the_ones_that_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt name (`crm-sinc`) said only "enabled on every dispatcher replica", exit 0, and the destination
    the operator meant stayed disabled. The record is still written (a replica may hold a 410 whose record
    never reached the topic), and the line now names what the topic records as disabled, the closest first."""
    facts = {
        "disabled/crm-sink": fact(kind="disabled", destination="crm-sink", disabled=True, reason="410 Gone"),
        "disabled/slack": fact(kind="disabled", destination="slack", disabled=True, reason="410 Gone"),
        "disabled/teams": fact(kind="disabled", destination="teams", disabled=False, reason="enabled by ops"),
    }
    written: list[str] = []

    async def state(kafka: object) -> dict[str, DestinationState]:
        return facts

    async def enable(kafka: object, destination: str) -> None:
        written.append(destination)

    monkeypatch.setattr(destinations, "state", state)
    monkeypatch.setattr(destinations, "enable", enable)
    result = CliRunner().invoke(destinations.app, ["enable", "crm-sinc", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 0 and written == ["crm-sinc"], result.output
    assert "crm-sinc: enabled on every dispatcher replica (it was not recorded as disabled; did you mean " in (
        " ".join(result.output.split())
    )
    assert "recorded as disabled: crm-sink, slack" in " ".join(result.output.split())
