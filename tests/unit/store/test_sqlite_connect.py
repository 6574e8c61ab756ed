"""A SQLite store that cannot be opened ends its process quietly: aiosqlite's worker thread is done first."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiosqlite
import aiosqlite.core
import pytest
from sqlalchemy import text

from services.store.db import Store, StoreError
from services.store.settings import DatabaseSettings


def test_a_store_that_cannot_be_opened_leaves_no_worker_thread_to_report_to_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiosqlite stops the worker thread of a connection that failed but does not wait for it; the thread
    then hands the stop's result to the event loop, and when asyncio.run had closed it by then, the thread
    died on "Event loop is closed" with a traceback on stderr after the command's one-line error
    (`postcall api token list` on a store in a folder that is a file, 2 runs in ~130). The worker is slowed
    here so that the loop closes first every time."""
    stop = aiosqlite.core.Connection.stop

    def slow_stop(self: Any) -> Any:
        self._tx.put_nowait((None, lambda: time.sleep(0.3)))
        return stop(self)

    monkeypatch.setattr(aiosqlite.core.Connection, "stop", slow_stop)
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    before = set(threading.enumerate())
    (tmp_path / "data").write_text("")
    settings = DatabaseSettings.model_validate({"url": f"sqlite:///{tmp_path / 'data' / 'postcall.db'}"})

    async def open_it() -> None:
        async with Store.open(settings, upgrade=False):
            pass

    with pytest.raises(StoreError, match="cannot reach the store"):
        asyncio.run(open_it())
    for thread in set(threading.enumerate()) - before:
        thread.join(5)
    assert died == []


def test_a_store_opens_with_an_aiosqlite_whose_connection_is_its_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before aiosqlite 0.22 (pyproject allows 0.20) a connection was itself the worker Thread, with no
    `_thread`: the connect of 130d532 raised AttributeError for every SQLite store there. It is shaped here
    as one of those: a Thread that is awaited for the connection."""
    connect = aiosqlite.connect
    made: list[threading.Thread] = []

    class ThreadConnection(threading.Thread):  # aiosqlite < 0.22's shape
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(target=lambda: None)
            self._real = connect(*args, **kwargs)
            made.append(self)

        def __await__(self) -> Any:
            self.start()
            return self._real.__await__()

    monkeypatch.setattr(aiosqlite, "connect", ThreadConnection)
    settings = DatabaseSettings.model_validate({"url": f"sqlite:///{tmp_path / 'postcall.db'}"})

    async def open_it() -> int:
        async with Store.open(settings, upgrade=False) as store, store.read() as conn:
            return int(await conn.scalar(text("SELECT 1")))

    assert asyncio.run(open_it()) == 1
    assert made and all(thread.daemon for thread in made)
