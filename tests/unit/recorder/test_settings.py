"""The recorder's settings: a value the environment gets wrong stops the start, named, instead of failing
every record the recorder reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.api import Context
from services.recorder.handler import Recorder
from services.recorder.settings import RecorderSettings
from services.store.settings import MAX_RETENTION_DAYS
from tests.support.calls import ended


@pytest.mark.parametrize("days", ["1000000", "1e9", "inf"])
def test_a_retention_past_the_calendar_is_refused_at_start(days: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retention "for good" (a million days, `inf`) was accepted: the recorder then raised OverflowError
    on every record it read (the horizon before year 1), so every record went to its dead-letter topic and
    the store got nothing; the hourly pruning logged the same traceback."""
    monkeypatch.setenv("POSTCALL_DATABASE__RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="retention_days"):
        RecorderSettings()


async def test_the_longest_retention_allowed_still_stores_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTCALL_DATABASE__RETENTION_DAYS", str(MAX_RETENTION_DAYS))
    settings = RecorderSettings()
    added: list[Any] = []

    class Batcher:
        async def add(self, rows: Any) -> None:
            added.append(rows)

    recorder = Recorder(Batcher(), settings.database.retention_days)  # type: ignore[arg-type]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    await recorder.handle(ended("c1"), Context("recorder", "postcall.conversation-ended.v1", timestamp_ms=now_ms))
    assert len(added) == 1
