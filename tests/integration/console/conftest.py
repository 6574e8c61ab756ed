"""A console client over the query API's app (ASGI, no server), on the store of each database."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.console.destinations import DestinationStates
from services.store import tokens
from services.store.db import Store
from tests.integration.api.conftest import store

ROOT = Path(__file__).resolve().parents[3]
AGENTS = ROOT / "examples" / "agents"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

__all__ = ["store"]


def console_for(store: Store, states: DestinationStates | None = None, **settings: Any) -> httpx.AsyncClient:
    """A client of the console; `states`: the destination state the pages show (the app follows none here)."""
    console = {"config_dir": str(AGENTS), **settings.pop("console", {})}
    app = create_app(
        ApiSettings.model_validate({"database": {"url": "sqlite://"}, "console": console, **settings}), store=store
    )
    if states is not None:
        app.state.destination_states = states
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture
async def console(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with console_for(store) as c:
        yield c


async def create_token(store: Store, name: str, role: str) -> str:
    async with store.write() as conn:
        return await tokens.create_token(conn, name, role)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post(
        "/console/login", data={"csrf_token": csrf_of(form.text), "token": token, "next": "/console/conversations"}
    )


async def post(client: httpx.AsyncClient, path: str, page: str, data: dict[str, Any]) -> httpx.Response:
    """POST a form the way the page would: with the CSRF token the page carries."""
    html = (await client.get(page)).text
    return await client.post(path, data={"csrf_token": csrf_of(html), **data})
