"""Access control: open only on loopback with no token; bearer tokens with roles, hashed at rest; the
API refuses a non-loopback address without a token; every operator action is audited."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from services.api import auth
from services.devkit.kafka import free_port
from services.store import tokens
from services.store.db import Store
from tests.integration.api.conftest import client_for
from tests.support.procs import ROOT, start

REPLAY = {"filter": {"service": ["router"]}, "dry_run": True}


async def create(store: Store, name: str, role: str) -> str:
    async with store.write() as conn:
        return await tokens.create_token(conn, name, role)


async def test_loopback_without_tokens_is_open_and_closes_once_a_token_exists(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)
    async with client_for(store) as anyone:
        assert (await anyone.get("/api/v1/conversations")).status_code == 200
        assert (await anyone.post("/api/v1/dead-letters/replay", json=REPLAY)).status_code == 200
        await create(store, "ops", "operator")
        closed = await anyone.get("/api/v1/conversations")
    assert closed.status_code == 401 and closed.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in closed.json()["detail"]


async def test_the_open_mode_serves_only_requests_addressed_to_a_loopback_name(store: Store) -> None:
    """DNS rebinding: a page from another site whose name now resolves to 127.0.0.1 reaches the port, but
    its requests carry its own name in Host; the open mode must not serve them as the local operator."""
    async with client_for(store) as anyone:
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.1"):
            assert (await anyone.get("/api/v1/conversations", headers={"host": host})).status_code == 200, host
        for host in ("attacker.example:8000", "attacker.example", "127.0.0.1.attacker.example"):
            api = await anyone.get("/api/v1/conversations", headers={"host": host})
            assert api.status_code == 401, (host, api.status_code)
            replay = await anyone.post("/api/v1/dead-letters/replay", json=REPLAY, headers={"host": host})
            assert replay.status_code == 401, (host, replay.status_code)
            page = await anyone.get("/console/conversations", headers={"host": host})
            assert page.status_code == 303 and page.headers["location"].startswith("/console/login"), host


PROXIES = [
    {"x-forwarded-for": "203.0.113.7"},
    {"forwarded": "for=203.0.113.7"},
    {"x-real-ip": "203.0.113.7"},
    # HTTP asks every proxy to add Via (RFC 9110, 7.6.3: Squid, Varnish, Apache with ProxyVia do), and
    # Envoy, Traefik and load balancers add X-Forwarded-Proto / -Port / -Server, whatever the name's case
    {"Via": "1.1 edge"},
    {"X-Forwarded-Proto": "https"},
    {"x-forwarded-port": "443"},
    {"X-FORWARDED-SERVER": "edge"},
]


@pytest.mark.parametrize("header", PROXIES, ids=lambda header: next(iter(header)))
async def test_the_open_mode_serves_no_request_that_came_through_a_proxy(store: Store, header: dict[str, str]) -> None:
    """A reverse proxy on the same machine forwarding to 127.0.0.1 made every client that reached it the
    local operator (nginx sends the upstream's Host, a loopback name). A request carrying a proxy's
    headers is not served open."""
    async with client_for(store) as anyone:
        api = await anyone.get("/api/v1/conversations", headers={"host": "127.0.0.1:8000", **header})
        assert api.status_code == 401, (header, api.status_code)
        page = await anyone.get("/console/conversations", headers={"host": "127.0.0.1:8000", **header})
        assert page.status_code == 303 and page.headers["location"].startswith("/console/login"), header
        assert (await anyone.get("/api/v1/conversations", headers={"host": "127.0.0.1:8000"})).status_code == 200


async def test_roles_decide_what_a_token_may_do(store: Store) -> None:
    viewer, operator = await create(store, "grafana", "viewer"), await create(store, "alice", "operator")
    async with client_for(store, viewer) as v, client_for(store, operator) as o, client_for(store, "pc_nope") as bad:
        assert (await v.get("/api/v1/conversations")).status_code == 200
        forbidden = await v.post("/api/v1/dead-letters/replay", json=REPLAY)
        assert forbidden.status_code == 403 and "operator" in forbidden.json()["detail"]
        assert (await v.get("/api/v1/audit")).status_code == 403
        assert (await o.post("/api/v1/dead-letters/replay", json=REPLAY)).status_code == 200
        assert (await bad.get("/api/v1/conversations")).status_code == 401
        audit = (await o.get("/api/v1/audit")).json()["items"]
    assert [(a["actor"], a["role"], a["action"], a["dry_run"]) for a in audit] == [
        ("alice", "operator", "replay", True)
    ]
    assert audit[0]["target"]["filters"]["services"] == ["router"]


async def test_a_revoked_token_is_refused(store: Store) -> None:
    token = await create(store, "temp", "viewer")
    async with store.write() as conn:
        await tokens.revoke_token(conn, "temp")
    async with client_for(store, token) as c:
        assert (await c.get("/api/v1/conversations")).status_code == 401


async def expire(store: Store, name: str) -> None:
    """The named active token's expiry moved a minute into the past (as if its lifetime had passed)."""
    async with store.write() as conn:
        await conn.execute(
            text("UPDATE api_tokens SET expires_at = :at WHERE name = :name AND revoked_at IS NULL"),
            {"at": datetime.now(UTC) - timedelta(minutes=1), "name": name},
        )


async def test_a_token_given_a_lifetime_is_refused_once_it_has_passed_and_its_name_is_free_again(
    store: Store,
) -> None:
    """Tokens lived until revoked: a leaked one, or one created for a week's migration, stayed usable for
    ever. A token created with a lifetime works until then, is refused (401) after, and the name goes to a
    new token without revoking the old one first; the expired row is marked revoked at its expiry."""
    async with store.write() as conn:
        token = await tokens.create_token(conn, "migration", "operator", timedelta(days=7))
        with pytest.raises(tokens.TokenError, match="more than 0"):
            await tokens.create_token(conn, "never", "viewer", timedelta(0))
    async with client_for(store, token) as c:
        assert (await c.get("/api/v1/conversations")).status_code == 200
        await expire(store, "migration")
        refused = await c.get("/api/v1/conversations")
    assert refused.status_code == 401
    async with store.write() as conn:
        listed = await tokens.list_tokens(conn)
        assert [(t.name, t.revoked_at) for t in listed] == [("migration", None)]
        assert listed[0].expires_at is not None and listed[0].expires_at < datetime.now(UTC)
        again = await tokens.create_token(conn, "migration", "viewer")
        listed = await tokens.list_tokens(conn)
    assert [(t.role, t.revoked_at == t.expires_at is not None) for t in listed] == [
        ("operator", True),
        ("viewer", False),
    ]
    async with client_for(store, again) as c:
        assert (await c.get("/api/v1/conversations")).status_code == 200


async def test_an_expired_token_still_keeps_a_loopback_api_closed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only revocation counts a token out of the open mode: once every token has expired, the loopback API
    still asks for one (it does not reopen to anyone)."""
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)
    async with store.write() as conn:
        await tokens.create_token(conn, "ci", "viewer", timedelta(days=1))
    await expire(store, "ci")
    async with client_for(store) as anyone:
        assert (await anyone.get("/api/v1/conversations")).status_code == 401


async def test_tokens_are_stored_only_as_hashes(store: Store) -> None:
    token = await create(store, "alice", "operator")
    async with store.read() as conn:
        stored = [str(v) for row in await conn.execute(text("SELECT * FROM api_tokens")) for v in row]
    assert token not in " ".join(stored)
    assert tokens.digest(token) in stored


async def test_a_reextraction_without_a_selection_is_refused(store: Store) -> None:
    async with client_for(store) as c:
        refused = await c.post("/api/v1/conversations/reextract", json={"filter": {}})
    assert refused.status_code == 422 and "choose conversations" in refused.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_api_refuses_a_public_address_without_a_token_and_serves_with_one(database_url: str) -> None:
    env = {"POSTCALL_DATABASE__URL": database_url, "POSTCALL_API__HOST": "0.0.0.0", "POSTCALL_API__PORT": "0"}
    refused = subprocess.run(
        [sys.executable, "-m", "services.api"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("postcall api: refusing to listen on 0.0.0.0")
    created = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "api", "token", "create", "ci", "--role", "viewer"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    token = created.stdout.strip()
    port = free_port()
    server = start("services.api", {**env, "POSTCALL_API__PORT": str(port)})
    try:
        url = f"http://127.0.0.1:{port}/api/v1/conversations"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(url)
                break
            except httpx.ConnectError:
                assert server.alive() and time.monotonic() < deadline, server.output()
                time.sleep(0.2)
        assert answer.status_code == 401
        assert httpx.get(url, headers={"authorization": f"Bearer {token}"}).json() == {"items": [], "next_cursor": None}
    finally:
        server.stop()
    assert token not in server.output()


async def test_no_answer_is_kept_by_a_cache_or_sniffed_as_another_type(store: Store) -> None:
    """Answers carry transcripts and customers' numbers: a browser or a proxy must not store them (a page
    on a shared machine, a cache in front of the API), whoever asked and however it ended."""
    token = await create(store, "grafana", "viewer")
    async with client_for(store, token) as viewer, client_for(store) as nobody:
        answers = [
            await viewer.get("/api/v1/conversations"),
            await viewer.get("/api/v1/conversations/nope"),
            await viewer.get("/api/v1/dead-letters", params={"cursor": "xyz"}),
            await viewer.get("/api/v1/stats", params={"since": "yesterday"}),
            await viewer.post("/api/v1/dead-letters/replay", json=REPLAY),
            await nobody.get("/api/v1/conversations"),
        ]
    for answer in answers:
        where = (answer.request.url.path, answer.status_code)
        assert answer.headers.get("cache-control") == "no-store", where
        assert answer.headers.get("x-content-type-options") == "nosniff", where
        assert answer.headers["content-type"] == "application/json", where


async def test_a_write_another_sites_page_could_send_is_refused_naming_the_content_type(store: Store) -> None:
    """A page of any site may POST to http://127.0.0.1:8400 without a CORS preflight when the body has no
    Content-Type (fetch with a Blob), or a text/plain or form one; in open mode nothing else stops it. FastAPI
    before 0.132 read a body without Content-Type as JSON; curl -d sends a form type and got an unclear 422."""
    body = b'{"filter": {"ids": ["c1"]}, "redeliver": true}'
    async with client_for(store) as anyone:
        for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"):
            headers = {"origin": "https://attacker.example"} | ({"content-type": content_type} if content_type else {})
            for path in ("/api/v1/conversations/reextract", "/api/v1/dead-letters/replay"):
                refused = await anyone.post(path, content=body, headers=headers)
                assert refused.status_code == 415, (path, content_type, refused.status_code, refused.text)
                assert "Content-Type: application/json" in refused.json()["detail"]
        assert (await anyone.get("/api/v1/audit")).json()["items"] == []
        typed = await anyone.post(
            "/api/v1/conversations/reextract", content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        assert typed.status_code == 200


async def test_a_revoked_tokens_name_can_be_given_to_its_replacement(store: Store) -> None:
    """Rotating a token: `revoke grafana` then `create grafana` (the refusal itself said "revoke it first")."""
    old = await create(store, "grafana", "viewer")
    async with store.write() as conn:
        await tokens.revoke_token(conn, "grafana")
    new = await create(store, "grafana", "operator")
    with pytest.raises(tokens.TokenError, match="exists already"):
        await create(store, "grafana", "viewer")  # one active token per name
    async with client_for(store, old) as before, client_for(store, new) as after:
        assert (await before.get("/api/v1/conversations")).status_code == 401
        assert (await after.get("/api/v1/audit")).status_code == 200
    async with store.read() as conn:
        listed = [(t.name, t.role, t.revoked_at is None) for t in await tokens.list_tokens(conn)]
    assert sorted(listed) == [("grafana", "operator", True), ("grafana", "viewer", False)]


def _exchange(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it (or `wait` runs out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        if data:
            conn.sendall(data)
        got = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := conn.recv(65536):
                got += chunk
        return got


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_what_a_client_can_hold_is_bounded_before_its_token_is_checked(database_url: str) -> None:
    """The API, like the ingress, reads a request's head and body before any route checks its token:
    uvicorn kept every header byte sent (one endless header grew a process by hundreds of MB), held a
    connection that sent nothing or trickled for ever, and queued every pipelined request. The ingress's
    bounds (services/common/serving.py) serve the API too."""
    port = free_port()
    env = {
        "POSTCALL_DATABASE__URL": database_url,
        "POSTCALL_API__PORT": str(port),
        "POSTCALL_API__READ_TIMEOUT_SECONDS": "1",
    }
    server = start("services.api", env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/readyz")
                break
            except httpx.ConnectError:
                assert server.alive() and time.monotonic() < deadline, server.output()
                time.sleep(0.2)
        huge = _exchange(port, b"GET /api/v1/conversations HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 100_000)
        assert huge.startswith(b"HTTP/1.1 431 "), huge[:200]
        started = time.monotonic()
        silent = _exchange(port, b"GET /api/v1/conversations HTTP/1.1\r\nHost: loc")  # never finished
        assert silent.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 8, silent[:200]
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/conversations").status_code == 200, "still serving"
    finally:
        server.stop()
