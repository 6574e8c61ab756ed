from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.store.db import Store
from services.store.settings import DatabaseSettings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as opened:
        yield opened
