"""The replay claim's renewer (services/store/claims.py `held`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

from services.store import claims
from services.store.db import Store, StoreUnavailable


class FlakyStore:
    """A store whose first writes fail as an unreachable PostgreSQL does (asyncpg's socket OSError)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.writes = 0

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        self.writes += 1
        if self.writes <= self.failures:
            raise StoreUnavailable("the store at postgresql://db is unavailable")

        class Conn:
            async def execute(self, *_: object) -> None:
                return None

        yield Conn()


async def test_a_store_outage_during_a_replay_skips_a_renewal_and_the_send_goes_on() -> None:
    """The renewer caught only SQLAlchemyError; StoreUnavailable (an OSError) ended it, and `held` raised it
    after the body: a replay whose letters were all sent during a short outage raised instead of settling
    them, so they stayed pending and the next replay sent them again."""
    store = FlakyStore(failures=2)
    async with claims.held(cast(Store, store), "claim-1", timedelta(seconds=0.06)):
        await asyncio.sleep(0.2)  # the body: sending the letters, through a few renewals
    assert store.writes >= 3, "the renewer stopped at the first failure"
