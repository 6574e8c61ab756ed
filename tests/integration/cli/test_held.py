"""`postcall held release` on the real broker: what it releases, and each conversation it could not release
named with why (exit 1), so that a script sees that held flows are still held."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from schemas import headers as h
from schemas.events import DecisionTrace
from schemas.topics import CONVERSATION_EXTRACTED, DECISIONS
from services.cli.held import app
from services.common.settings import KafkaSettings
from tests.support.calls import ended, extracted, trace
from tests.support.kafka import create_topics, produce, read_all, unique


@pytest.fixture(autouse=True)
def topics(kafka: KafkaSettings) -> None:
    asyncio.run(create_topics(kafka, [DECISIONS, CONVERSATION_EXTRACTED]))


def decided(cid: str, agent: str, *, held: bool) -> DecisionTrace:
    decision = trace(ended(cid, agent=agent), [("crm-sync", not held, [] if held else ["webhook"])])
    if not held:
        return decision
    flow = decision.flows[0].model_copy(update={"held": True, "reason": "held: extraction failed"})
    return decision.model_copy(update={"extraction_status": "failed", "flows": [flow]})


def seed(kafka: KafkaSettings, agent: str, holding: list[str], gone: list[str], done: list[str]) -> None:
    """`gone`: held, but its extraction record is no longer on the topic (past its retention)."""
    decisions = [(c, decided(c, agent, held=c not in done)) for c in holding + gone + done]
    extractions = [(c, extracted(ended(c, agent=agent), status="failed")) for c in holding + done]
    asyncio.run(produce(kafka, DECISIONS, decisions))
    asyncio.run(produce(kafka, CONVERSATION_EXTRACTED, extractions))


def release(kafka: KafkaSettings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["release", *args, "--rate", "100", "-b", kafka.bootstrap_servers])
    return result.exit_code, " ".join(result.stdout.split())  # rich wraps long lines


def released(kafka: KafkaSettings, cids: set[str]) -> list[str]:
    records = asyncio.run(read_all(kafka, CONVERSATION_EXTRACTED))
    return sorted(r.key or "" for r in records if r.key in cids and h.RUN_HELD in r.headers)


def test_ids_it_could_not_release_are_named_and_the_exit_is_1(kafka: KafkaSettings) -> None:
    """Used to exit 0: an id holding nothing got a yellow line, one past retention none at all."""
    agent, held, gone, done, unknown = unique("agent"), unique("held"), unique("gone"), unique("done"), unique("none")
    seed(kafka, agent, [held], [gone], [done])
    code, out = release(kafka, "--ids", f"{held},{gone},{done}", "--ids", unknown)
    assert code == 1, out
    assert f"{done}: not released: no held flows" in out and f"{unknown}: not released: no held flows" in out
    assert f"{gone}: not released: no extraction record of it is left on {CONVERSATION_EXTRACTED}" in out
    assert f"{held}: not released" not in out and "1 conversation(s) released" in out
    assert released(kafka, {held, gone, done, unknown}) == [held]


def test_ids_all_released_exit_0(kafka: KafkaSettings) -> None:
    agent, first, second = unique("agent"), unique("held"), unique("held")
    seed(kafka, agent, [first, second], [], [])
    code, out = release(kafka, "--ids", f"{first},{second}")
    assert (code, out) == (0, "2 conversation(s) released; the router runs their held flows as they are")
    assert released(kafka, {first, second}) == sorted([first, second])


def test_all_names_a_held_conversation_it_could_not_release_and_an_empty_choice_is_not_an_error(
    kafka: KafkaSettings,
) -> None:
    agent, held, gone = unique("agent"), unique("held"), unique("gone")
    seed(kafka, agent, [held], [gone], [unique("done")])
    code, out = release(kafka, "--all", "--agent", agent)
    assert code == 1 and f"{gone}: not released: no extraction record" in out and "1 conversation(s) released" in out
    assert released(kafka, {held, gone}) == [held]
    code, out = release(kafka, "--all", "--agent", unique("agent"))
    assert (code, out) == (0, "0 conversation(s) released; the router runs their held flows as they are")
