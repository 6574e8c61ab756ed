"""What a request may make the query API read before anyone is known: FastAPI reads and parses a route's
whole body before its dependencies run, the token check among them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.api.app import MAX_BODY_BYTES, MAX_TRY_BODY_BYTES, create_app
from services.api.settings import ApiSettings
from services.store import tokens
from services.store.db import Store
from services.store.settings import DatabaseSettings

CHUNK = 64 * 1024


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    """The app on a store with a token, listening beyond loopback: every request needs authentication."""
    async with Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}"), writer=True) as store:
        async with store.write() as conn:
            await tokens.create_token(conn, "ops", "operator")
        settings = ApiSettings.model_validate({"database": {"url": "sqlite://"}, "api": {"host": "0.0.0.0"}})
        yield create_app(settings, store=store)


async def post(app: Any, path: str, content_type: str, body: bytes, declared: bool) -> tuple[int, bytes, int]:
    """POST `body` in chunks, with its Content-Length or streamed without one: (status, answer, bytes read)."""
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    read, answer, status = 0, b"", 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal answer, status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer += message.get("body", b"")

    headers = [(b"host", b"api.example"), (b"content-type", content_type.encode())]
    if declared:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.9", 5555),
        "server": ("0.0.0.0", 8400),
    }
    await app(scope, receive, send)
    return status, answer, read


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/api/v1/dead-letters/replay", "application/json", MAX_BODY_BYTES),
        ("/console/login", "application/x-www-form-urlencoded", MAX_BODY_BYTES),
        ("/console/try", "multipart/form-data; boundary=b", MAX_TRY_BODY_BYTES),
    ],
)
async def test_a_body_over_the_limit_is_refused_413_unread(
    app: Any, path: str, content_type: str, limit: int, declared: bool
) -> None:
    """An unauthenticated POST of 100 MiB of JSON to /api/v1/dead-letters/replay was read and parsed whole
    (answered 422, not even 401); a multipart file part is spooled to disk without a bound."""
    if content_type.startswith("multipart"):
        head = b'--b\r\nContent-Disposition: form-data; name="upload"; filename="x.json"\r\n\r\n'
        body = head + b"x" * (limit + CHUNK) + b"\r\n--b--\r\n"
    else:
        body = b"[" + b"1," * ((limit + CHUNK) // 2) + b"1]"
    status, answer, read = await post(app, path, content_type, body, declared)
    assert read <= (0 if declared else limit + CHUNK), read
    if status == 400 and path == "/console/login" and not declared:
        return  # Starlette refuses one form field over 1 MiB itself, having read that much
    assert status == 413, (status, answer[:200])
    assert "over" in orjson.loads(answer)["detail"]


async def test_a_body_within_the_limit_is_read_as_before(app: Any) -> None:
    body = orjson.dumps({"dry_run": True, "filter": {"ids": [1]}, "padding": "x" * (MAX_BODY_BYTES - 100)})
    status, answer, _ = await post(app, "/api/v1/dead-letters/replay", "application/json", body, declared=True)
    assert status == 401, (status, answer[:200])  # read whole, then the token is asked for


async def test_the_largest_reextraction_the_api_takes_is_within_the_limit(app: Any) -> None:
    """1,000 ids of 256 characters, as `postcall reextract --api` sends them (httpx's json= escapes every
    non-ASCII character: an emoji is 12 bytes), reach the API's own validation, not a 413."""
    body = json.dumps({"dry_run": True, "filter": {"ids": ["\U0001f600" * 256] * 1000}}).encode()
    assert len(body) > 3_000_000
    status, answer, _ = await post(app, "/api/v1/conversations/reextract", "application/json", body, declared=True)
    assert status == 401, (status, answer[:200])
