"""`postcall dlq replay` with a store, without a broker: the replay's send is stood in for, and what the
recorder and the console do meanwhile is done on the same SQLite store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from schemas import headers as h
from services.cli import dlq
from services.cli.dlq import DeadLetter, replay_claimed
from services.common.settings import KafkaSettings
from services.store import claims, writer
from services.store import rows as r
from services.store.db import Store
from services.store.models import DeadLetter as StoredLetter
from services.store.settings import DatabaseSettings

TOPIC = "postcall.router.dlq.v1"
LEASE = timedelta(minutes=5)


def letter(offset: int, *, age: timedelta = timedelta(0)) -> DeadLetter:
    at = datetime.now(UTC) - age
    headers = {h.ORIGINAL_TOPIC: "postcall.conversation-extracted.v1", h.EXCEPTION_MESSAGE: "PermanentError: bug"}
    value = b'{"conversation_id": "c%d"}' % offset
    return DeadLetter(TOPIC, 0, offset, int(at.timestamp() * 1000), b"c%d" % offset, value, headers)


def recorded(d: DeadLetter) -> r.Rows:
    """The rows the recorder makes of the letter when it reads it."""
    return r.dead_letter(r.Source(d.topic, d.partition, d.offset, d.timestamp_ms), "router", d.key, d.value, d.headers)


async def test_a_letter_the_recorder_has_not_stored_yet_is_claimed_so_a_console_replay_meanwhile_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line sent a letter the recorder had not stored yet without a claim: the recorder then
    stored it as pending while the command line was still replaying, and a console replay of it took it
    and sent it a second time (a routing or a paid re-extraction run twice; the marker that says it was
    replayed comes only after). Now the command line stores it first, as the recorder will (the
    recorder's insert of the same letter then adds nothing), and claims it like the others."""
    d = letter(7)
    console: dict[str, Any] = {}

    async def sending(kafka: Any, letters: Sequence[DeadLetter], *_: Any) -> int:
        await writer.write(store, recorded(d))  # the recorder catches up while the command line sends
        found = await claims.stored(store, [(d.topic, d.partition, d.offset)])
        stored = found[d.topic, d.partition, d.offset]
        console["claim"], console["got"] = await claims.claim(store, [(stored.id, stored.replayed_at)], LEASE)
        return len(letters)

    monkeypatch.setattr(dlq, "replay", sending)
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    async with Store.open(settings, writer=True) as store:
        done = await replay_claimed(store, KafkaSettings(), [d], 0, None, "ops@host", LEASE)
        async with store.read() as conn:
            row = (await conn.execute(select(StoredLetter))).one()
    assert console["got"] == set(), "the console's replay took a letter the command line was sending"
    assert (done.sent, done.unrecorded) == (1, [])
    assert (row.replayed_by, row.replay_claim, row.conversation_id) == ("ops@host", None, "c7")


async def test_a_letter_older_than_the_retention_is_not_stored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder skips such a letter (and pruning deleted it): the command line does not bring it back."""

    async def sending(kafka: Any, letters: Sequence[DeadLetter], *_: Any) -> int:
        return len(letters)

    monkeypatch.setattr(dlq, "replay", sending)
    old = letter(3, age=timedelta(days=11))
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", retention_days=10)
    async with Store.open(settings, writer=True) as store:
        done = await replay_claimed(store, KafkaSettings(), [old, letter(4)], 0, None, "ops@host", LEASE)
        async with store.read() as conn:
            offsets = list((await conn.execute(select(StoredLetter.kafka_offset))).scalars())
    assert (done.sent, done.unrecorded, offsets) == (2, [old], [4])
