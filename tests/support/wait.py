"""Waiting in integration tests for something that happens in other processes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(what: str, check: Callable[[], Any], timeout: float = 90, every: float = 0.5) -> Any:
    """Call `check` (sync or async) every `every` seconds until it returns something truthy, and return
    that; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
