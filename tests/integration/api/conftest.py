from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.store.db import Store
from services.store.settings import DatabaseSettings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.open(DatabaseSettings(url=database_url), writer=True) as opened:
        yield opened


def client_for(store: Store, token: str | None = None, **settings: object) -> httpx.AsyncClient:
    app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}, **settings}), store=store)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c
