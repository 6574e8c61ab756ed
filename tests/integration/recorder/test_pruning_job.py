"""The recorder's retention job (services/recorder/__main__.py `pruning`): it prunes at start, again every
interval, and a failed run (the store down for a while) does not stop the next ones."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.recorder.__main__ import pruning
from services.store import prune, queries, writer
from services.store.db import Store
from services.store.settings import DatabaseSettings
from tests.support.calls import rows_of, story


async def stored(store: Store, cid: str) -> bool:
    async with store.read() as conn:
        return await queries.get_conversation(conn, cid) is not None


async def until_gone(store: Store, cid: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await stored(store, cid):
        assert time.monotonic() < deadline, f"{cid} is older than the retention and still stored after {timeout}s"
        await asyncio.sleep(0.05)


async def test_the_job_prunes_at_start_and_every_interval_and_survives_a_failed_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    real, runs = prune.prune, []

    async def second_run_fails(*args: Any, **kwargs: Any) -> dict[str, int]:
        runs.append(time.monotonic())
        if len(runs) == 2:
            raise ConnectionError("the store is down for a while")
        return await real(*args, **kwargs)

    monkeypatch.setattr(prune, "prune", second_run_fails)
    settings = DatabaseSettings(url=database_url, retention_days=10, prune_interval_seconds=0.2)
    async with Store.open(settings, writer=True) as store:
        await writer.write(store, rows_of(story("old", at=now - timedelta(days=30)) + story("new", at=now)))
        async with pruning(store, settings):
            await until_gone(store, "old")  # the first run, at start
            await writer.write(store, rows_of(story("older", at=now - timedelta(days=11)), first_offset=100))
            await until_gone(store, "older")  # a later run, after the failed one
        assert await stored(store, "new"), "a call inside the retention was pruned"
    assert len(runs) >= 3
