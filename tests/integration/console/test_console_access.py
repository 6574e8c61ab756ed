"""Who may use the console and how: login with a store token into a session that expires, roles, CSRF on
every state change, open only on loopback with no token, and never the session cookie on the JSON API."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from schemas import headers as h
from services.api import auth
from services.console.access import CSRF_COOKIE, SESSION_COOKIE
from services.store import rows as r
from services.store import tokens, writer
from services.store.db import Store
from services.store.models import AuditEntry, ConsoleSession, table
from tests.integration.console.conftest import console_for, create_token, csrf_of, login, post
from tests.support.calls import rows_of, story

REDRIVE = {"service": "router", "dry_run": "1"}


async def test_with_a_token_in_the_store_every_page_asks_for_a_login(store: Store) -> None:
    await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        for path in ("/console/conversations", "/console/dead-letters", "/console/agents", "/console/try"):
            answer = await c.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next=")
        htmx = await c.get("/console/conversations/new", headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["HX-Redirect"].startswith("/console/login")
        assert (await c.post("/console/operations/redrive", data=REDRIVE)).status_code in (303, 403)


async def test_login_with_a_token_opens_a_session_and_logout_ends_it(store: Store) -> None:
    token = await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        wrong = await login(c, "pc_not-a-token")
        assert wrong.status_code == 401 and "unknown, revoked or expired token" in wrong.text
        done = await login(c, token)
        assert done.status_code == 303 and done.headers["location"] == "/console/conversations"
        cookie = done.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/console" in cookie
        page = await c.get("/console/conversations")
        assert page.status_code == 200 and "alice" in page.text and "operator" in page.text
        async with store.read() as conn:
            [stored] = (await conn.execute(select(ConsoleSession.id_sha256))).scalars().all()
        session = c.cookies[SESSION_COOKIE]
        assert stored != session and len(stored) == 64  # only its hash is kept
        out = await post(c, "/console/logout", "/console/conversations", {})
        assert out.status_code == 303
        again = await c.get("/console/conversations", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
        assert again.status_code == 303  # the old cookie, sent again, opens nothing
    async with store.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(ConsoleSession))).scalar_one() == 0


async def test_the_login_page_shows_no_message_a_link_chose(store: Store) -> None:
    """Only a failed login names an error: a link's ?error=... is another site's text in the console's own
    alert, above the box where people paste their token."""
    await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        lure = await c.get("/console/login", params={"error": "Session expired: send your token to help@evil.example"})
    assert lure.status_code == 200 and "evil.example" not in lure.text and 'role="alert"' not in lure.text


async def test_the_login_page_states_the_idle_limit_the_console_applies(store: Store) -> None:
    await create_token(store, "alice", "operator")
    async with console_for(store, console={"session_idle_minutes": 5}) as c:
        form = (await c.get("/console/login")).text
        wrong = (await login(c, "pc_not-a-token")).text
    assert all("Sessions end after 5 idle minutes" in html for html in (form, wrong)), "30 whatever the setting"


async def test_a_session_ends_when_idle_too_long_and_when_its_token_is_revoked(store: Store) -> None:
    token = await create_token(store, "bob", "viewer")
    async with console_for(store, console={"session_idle_minutes": 0.01}) as c:
        await login(c, token)
        assert (await c.get("/console/conversations")).status_code == 200
        await asyncio.sleep(0.7)
        assert (await c.get("/console/conversations")).status_code == 303
    async with console_for(store) as c:
        await login(c, token)
        assert (await c.get("/console/conversations")).status_code == 200
        async with store.write() as conn:
            await tokens.revoke_token(conn, "bob")
        assert (await c.get("/console/conversations")).status_code == 303


async def test_the_conversations_pages_poll_for_new_calls_does_not_keep_an_idle_session_open(store: Store) -> None:
    """The page asks for new calls every few seconds on its own: those requests are no use by a person, so a
    console left open on that page (an unattended desk) still ends after the idle limit, not 12 hours later."""
    token = await create_token(store, "bob", "viewer")
    poll = {"HX-Request": "true", "HX-Trigger": "poller", "HX-Target": "poller"}
    async with console_for(store) as c:  # 30 idle minutes
        await login(c, token)
        page = (await c.get("/console/conversations")).text
        found = re.search(r'hx-get="(/console/conversations/new\?[^"]*)"', page)
        assert found is not None
        url = found.group(1).replace("&amp;", "&")
        idle = {"at": datetime.now(UTC) - timedelta(minutes=20)}
        async with store.write() as conn:
            await conn.execute(text("UPDATE console_sessions SET last_seen_at = :at"), idle)
        assert (await c.get(url, headers=poll)).status_code == 200  # still within the limit
        async with store.read() as conn:
            seen = (await conn.execute(select(ConsoleSession.last_seen_at))).scalar_one()
        assert seen == idle["at"], "the poll reset the idle clock"
        longer = {"at": idle["at"] - timedelta(minutes=11)}
        async with store.write() as conn:
            await conn.execute(text("UPDATE console_sessions SET last_seen_at = :at"), longer)
        expired = await c.get(url, headers=poll)
        assert expired.status_code == 204 and expired.headers["HX-Redirect"].startswith("/console/login")


async def test_a_page_left_open_past_its_session_asks_for_a_login_not_a_fresh_csrf_token(store: Store) -> None:
    """A page drawn in a session that has since ended carries that session's CSRF token: its Redrive (htmx) was
    answered 403 "missing or wrong CSRF token: reload the page", and its Log out could not be done at all. Both
    now go to the login, which comes back to the page; a request from another site is still refused."""
    token = await create_token(store, "olivia", "operator")
    async with console_for(store) as c:
        await login(c, token)
        html = (await c.get("/console/dead-letters?service=router")).text
        async with store.write() as conn:  # an hour without a request: past the 30 idle minutes
            await conn.execute(
                text("UPDATE console_sessions SET last_seen_at = :at"), {"at": datetime.now(UTC) - timedelta(hours=1)}
            )
        shown = "http://localhost/console/dead-letters?service=router"
        form = {"csrf_token": csrf_of(html), **REDRIVE}
        redrive = await c.post(
            "/console/operations/redrive", data=form, headers={"HX-Request": "true", "HX-Current-URL": shown}
        )
        assert redrive.status_code == 204, redrive.text
        assert redrive.headers["HX-Redirect"] == "/console/login?next=/console/dead-letters%3Fservice%3Drouter"
        out = await c.post("/console/logout", data={"csrf_token": csrf_of(html)}, headers={"Referer": shown})
        assert out.status_code == 303 and out.headers["location"].startswith(
            "/console/login?next=/console/dead-letters"
        )
        elsewhere = await c.post("/console/operations/redrive", data=form, headers={"Origin": "http://evil.example"})
        assert elsewhere.status_code == 403 and "cross-site request refused" in elsewhere.text
        again = await login(c, token)  # the ended session's cookie does not stand in the way of a new one
        assert again.status_code == 303 and (await c.get("/console/dead-letters")).status_code == 200
    async with store.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one() == 0  # nothing ran


async def test_after_a_login_asked_by_a_background_request_the_person_lands_on_their_page_not_a_fragment(
    store: Store,
) -> None:
    """The poll for new calls, once the session is gone, sent the browser to the login with next= the poll's
    own URL: after logging in, the page was a handful of bare table rows."""
    token = await create_token(store, "bob", "viewer")
    async with console_for(store) as c:
        poll = await c.get(
            "/console/conversations/new",
            params={"q": "rosa"},
            headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/console/conversations?q=rosa"},
        )
        assert poll.status_code == 204
        form = await c.get(poll.headers["HX-Redirect"])
        done = await c.post(
            "/console/login", data={"csrf_token": csrf_of(form.text), "token": token, "next": next_of(form.text)}
        )
        assert done.headers["location"] == "/console/conversations?q=rosa"
        assert "<h1>Conversations</h1>" in (await c.get(done.headers["location"])).text


def next_of(html: str) -> str:
    found = re.search(r'name="next" value="([^"]*)"', html)
    assert found is not None
    return found.group(1).replace("&amp;", "&")


async def test_a_session_ends_when_its_token_expires_and_an_expired_token_cannot_log_in(store: Store) -> None:
    async with store.write() as conn:
        token = await tokens.create_token(conn, "erin", "viewer", timedelta(days=1))
    past = {"at": datetime.now(UTC) - timedelta(minutes=1)}
    async with console_for(store) as c:
        await login(c, token)
        assert (await c.get("/console/conversations")).status_code == 200
        async with store.write() as conn:
            await conn.execute(text("UPDATE api_tokens SET expires_at = :at WHERE name = 'erin'"), past)
        assert (await c.get("/console/conversations")).status_code == 303
    async with console_for(store) as c:
        refused = await login(c, token)
        assert SESSION_COOKIE not in refused.cookies
        assert (await c.get("/console/conversations")).status_code == 303


async def test_a_session_ends_at_its_absolute_limit_however_busy(store: Store) -> None:
    token = await create_token(store, "carol", "viewer")
    async with console_for(store, console={"session_max_hours": 0.0002}) as c:  # 0.72 s
        await login(c, token)
        assert (await c.get("/console/conversations")).status_code == 200
        await asyncio.sleep(0.8)
        assert (await c.get("/console/conversations")).status_code == 303


async def test_a_viewer_reads_but_cannot_redrive_reextract_or_redeliver(store: Store) -> None:
    await writer.write(store, rows_of(story("c1")))
    token = await create_token(store, "viewer", "viewer")
    async with console_for(store) as c:
        await login(c, token)
        letters = await c.get("/console/dead-letters")
        assert letters.status_code == 200 and "Redrive" not in letters.text
        timeline = await c.get("/console/conversations/c1")
        assert timeline.status_code == 200 and "Re-extract" not in timeline.text
        for path, data in [
            ("/console/operations/redrive", REDRIVE),
            ("/console/operations/reextract", {"conversation_id": "c1"}),
            ("/console/operations/redeliver", {"conversation_id": "c1"}),
        ]:
            refused = await post(c, path, "/console/conversations", data)
            assert refused.status_code == 403 and "operator" in refused.text, path


async def test_every_state_change_needs_the_csrf_token_and_a_same_site_origin(store: Store) -> None:
    token = await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        await login(c, token)
        good = csrf_of((await c.get("/console/dead-letters")).text)
        assert (await c.post("/console/operations/redrive", data=REDRIVE)).status_code == 403
        assert (
            await c.post("/console/operations/redrive", data={**REDRIVE, "csrf_token": "x" * 43})
        ).status_code == 403
        foreign = {"Origin": "https://evil.example"}
        refused = await c.post("/console/operations/redrive", data={**REDRIVE, "csrf_token": good}, headers=foreign)
        assert refused.status_code == 403 and "cross-site" in refused.text
        assert (await c.post("/console/operations/redrive", data={**REDRIVE, "csrf_token": good})).status_code == 200
        by_header = await c.post("/console/operations/redrive", data=REDRIVE, headers={"X-CSRF-Token": good})
        assert by_header.status_code == 200 and "Dry run: 0 dead letter(s)" in by_header.text
    async with console_for(store) as other:  # another browser: its own login form token only
        form = await other.get("/console/login")
        assert other.cookies.get(CSRF_COOKIE) and csrf_of(form.text) == other.cookies.get(CSRF_COOKIE)
        refused = await other.post("/console/login", data={"csrf_token": "y" * 43, "token": token})
        assert refused.status_code == 403


async def test_a_state_change_whose_body_is_not_a_form_is_refused_not_read_as_an_empty_one(store: Store) -> None:
    """The console reads its POSTs as forms: a JSON body (a script that took the console for the API) was read
    as no field at all, so {"id": 7, "dry_run": "1"} to the redrive was a real redrive of every pending letter
    (no filter, not a dry run): letters nobody chose, sent."""
    await writer.write(store, r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 1, 0), "router", b"k", b"{}", {
        h.ORIGINAL_TOPIC: "postcall.conversation-extracted.v1", h.EXCEPTION_MESSAGE: "PermanentError: x"}))  # fmt: skip
    token = await create_token(store, "alice", "operator")
    async with console_for(store, kafka={"bootstrap_servers": "127.0.0.1:1"}) as c:
        await login(c, token)
        good = {"X-CSRF-Token": csrf_of((await c.get("/console/dead-letters")).text)}
        as_json = await c.post("/console/operations/redrive", json={"id": 7, "dry_run": "1"}, headers=good)
        bare = await c.post("/console/operations/redrive", headers=good)
        assert (
            await c.post("/console/logout", content=b"x", headers={**good, "Content-Type": "text/plain"})
        ).status_code == 415
    for answer in (as_json, bare):
        assert answer.status_code == 415, (answer.status_code, answer.text[:300])
        assert "send the form as application/x-www-form-urlencoded or multipart/form-data" in answer.text
    async with store.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(table(AuditEntry))) == 0  # nothing tried


async def test_open_mode_only_on_loopback_with_no_token_and_still_csrf_protected(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)
    async with console_for(store) as c:
        page = await c.get("/console/dead-letters")
        assert page.status_code == 200 and "open mode" in page.text and "local" in page.text
        assert (await c.post("/console/operations/redrive", data=REDRIVE)).status_code == 403
        assert (await post(c, "/console/operations/redrive", "/console/dead-letters", REDRIVE)).status_code == 200
    async with console_for(store, api={"host": "0.0.0.0"}) as remote:
        assert (await remote.get("/console/conversations")).status_code == 303  # never open off loopback


async def test_the_json_api_never_takes_the_console_session(store: Store) -> None:
    token = await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        await login(c, token)
        session = c.cookies[SESSION_COOKIE]
        answer = await c.get("/api/v1/conversations", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    assert answer.status_code == 401


async def test_pages_forbid_inline_script_and_framing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)
    async with console_for(store) as c:
        headers = (await c.get("/console/conversations")).headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert headers["x-content-type-options"] == "nosniff"


async def test_a_form_field_the_console_refuses_is_named_in_its_own_escaped_page_not_fastapis_json(
    store: Store,
) -> None:
    """htmx swaps a 4xx answer into the page (b8bfbd3). A form field FastAPI refuses (too long, not a number)
    was answered with FastAPI's JSON, which echoes the field's value: swapped as HTML, that value became
    markup in the page. The console answers with its error fragment naming the field, never the value."""
    token = await create_token(store, "alice", "operator")
    async with console_for(store) as c:
        await login(c, token)
        hostile = "<b id=injected>x</b>" * 20  # over the 256 characters a conversation id may have
        for path, data in [
            ("/console/operations/reextract", {"conversation_id": hostile}),
            ("/console/operations/redrive", {**REDRIVE, "limit": "<i>many</i>"}),
        ]:
            for headers in ({"HX-Request": "true"}, {}):
                html = (await c.get("/console/dead-letters")).text
                refused = await c.post(path, data={"csrf_token": csrf_of(html), **data}, headers=headers)
                assert refused.status_code == 422, path
                assert refused.headers["content-type"].startswith("text/html"), path
                assert "<b id=injected>" not in refused.text and "<i>many" not in refused.text, path
                assert "conversation_id" in refused.text or "limit" in refused.text, refused.text
