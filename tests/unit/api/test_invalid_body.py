"""A JSON body the API refuses is a 422 naming each problem, whatever the body holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.store.db import Store
from services.store.settings import DatabaseSettings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}"), writer=True) as store:
        app = create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}}), store=store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/dead-letters/replay", '{"dry_run": true, "filter": {"key": "c-\\ud800"}}', "key"),
        ("/api/v1/conversations/reextract", '{"dry_run": true, "filter": {"q": "\\udfff"}}', "q"),
        ("/api/v1/conversations/reextract", '{"dry_run": true, "filter": {"ids": ["\\ud83d"]}}', "ids"),
    ],
)
async def test_a_lone_surrogate_in_a_json_body_is_a_422_not_a_500(
    client: httpx.AsyncClient, path: str, body: str, field: str
) -> None:
    """json.loads takes "\\ud800" (an escaped half of a surrogate pair) and pydantic refuses it, but FastAPI's
    422 writes the refused input back as UTF-8, which cannot hold it: UnicodeEncodeError, a 500, for anyone
    (the body is validated before the token is checked)."""
    answer = await client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    (problem,) = json.loads(answer.content)["detail"]
    assert problem["loc"][:3] == ["body", "filter", field] and "unicode" in problem["msg"], problem


async def test_a_422_keeps_fastapis_body_otherwise(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/conversations/reextract", json={"filter": {"q": "é" * 201}})
    assert answer.status_code == 422
    assert '"input":"' + "é" * 201 + '"' in answer.text  # as FastAPI writes it: UTF-8, not escaped


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        # a misspelt dry_run would send for real; a misspelt filter would choose every record
        ("/api/v1/conversations/reextract", {"filter": {"ids": ["c-1"]}, "dryrun": True}, ["body", "dryrun"]),
        ("/api/v1/dead-letters/replay", {"filter": {"key": "c-1"}, "dry-run": True}, ["body", "dry-run"]),
        ("/api/v1/dead-letters/replay", {"filter": {"keys": "c-1"}, "dry_run": True}, ["body", "filter", "keys"]),
        (
            "/api/v1/conversations/reextract",
            {"filter": {"agent": "support-line", "idz": ["c-1"]}, "dry_run": True},
            ["body", "filter", "idz"],
        ),
    ],
)
async def test_an_operation_with_a_field_it_does_not_know_is_refused(
    client: httpx.AsyncClient, path: str, body: dict[str, object], loc: list[str]
) -> None:
    answer = await client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == loc and problem["type"] == "extra_forbidden", problem
