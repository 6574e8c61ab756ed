"""The console's pages over a real store (SQLite and PostgreSQL): filters and pages, new calls, one call as
a timeline, hostile text escaped, dead letters, agents, and a dry run on an edited configuration."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update

from schemas import headers as h
from schemas.events import ConversationEnded, DestinationState, WebhookRequested
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS, Topic
from services.api import auth
from services.common.api import Context
from services.common.errors import Deferred
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.console import letters, pages, trial
from services.console.destinations import DestinationStates
from services.dispatcher.handler import failed_result
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from services.store.models import Conversation, table
from tests.hostile.corpus import SCRIPT, SCRIPT_NAME, cases
from tests.integration.api.conftest import unreachable_store
from tests.integration.console.conftest import AGENTS, ROOT, console_for, csrf_of
from tests.support.calls import T0, action_id, ended, extracted, result, rows_of, story, trace
from tests.support.kafka import produce, unique


@pytest.fixture(autouse=True)
def open_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests use the loopback open mode (no token); tests/…/test_console_access.py covers logins."""
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)


async def seed(store: Store) -> None:
    records: list[tuple[str, Any]] = []
    for i in range(7):
        records += story(f"c{i}", at=T0 + timedelta(minutes=i), agent="sales-line" if i % 2 else "support-line")
    event = ended("failing", at=T0 + timedelta(hours=1), customer="Dana Failing")
    aid = action_id("failing", "crm-sync")
    records += [
        (CONVERSATION_ENDED, event),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook"])])),
        (ACTION_RESULTS, result(aid, "failing", "failed", 1, status_code=503, error="HTTP 503: <b>try later</b>")),
    ]
    rows = rows_of(records)
    source = r.Source("postcall.router.dlq.v1", 1, 9, int(T0.timestamp() * 1000))
    headers = {
        h.EXCEPTION_MESSAGE: "InvalidRecord: not JSON",
        h.ORIGINAL_TOPIC: "postcall.conversation-extracted.v1",
    }
    rows.extend(r.dead_letter(source, "router", b"c3", b"<html><script>x</script>", headers))
    await writer.write(store, rows)


def ids(html: str) -> list[str]:
    return re.findall(r'<tr[^>]* data-href="/console/conversations/([^"]+)"', html)


async def test_an_agent_id_as_long_as_the_contract_allows_is_filtered_whole(store: Store) -> None:
    """The conversations and dead-letters forms cut every value at 200 characters while an id may have 256
    (schemas.events.MAX_ID_LENGTH): filtering by a 250-character agent id found nothing."""
    agent = "a" * 250
    await writer.write(store, rows_of(story("long", agent=agent)))
    async with console_for(store) as c:
        page = await c.get("/console/conversations", params={"agent": agent})
        assert ids(page.text) == ["long"]


async def test_filters_search_and_pages(store: Store) -> None:
    await seed(store)
    async with console_for(store, console={"page_size": 5}) as c:
        first = (await c.get("/console/conversations")).text
        assert ids(first) == ["failing", "c6", "c5", "c4", "c3"]
        older = re.search(r'href="(/console/conversations\?[^"]*cursor=[^"]+)"', first)
        assert older is not None
        assert ids((await c.get(older.group(1).replace("&amp;", "&"))).text) == ["c2", "c1", "c0"]
        assert ids((await c.get("/console/conversations", params={"agent": "sales-line"})).text) == ["c5", "c3", "c1"]
        assert ids((await c.get("/console/conversations", params={"agent": "sales-line", "version": "9"})).text) == []
        assert ids((await c.get("/console/conversations", params={"failed": "1"})).text) == [
            "failing",
            "c3",
        ]  # c3: a dead letter
        assert ids((await c.get("/console/conversations", params={"q": "dana"})).text) == ["failing"]


async def test_a_filter_or_cursor_the_conversations_page_cannot_read_is_a_400_naming_it(store: Store) -> None:
    """It was named on a 200 page that listed the calls without it (an unknown end reason listed every call, as
    if they were the ones asked for); the dead-letter and task pages answer 400. The form stays, to correct
    it; no list and no poller. A time zone the server does not know (the browser sends its own) is a note on a
    200 page, the dates read as UTC."""
    await seed(store)
    htmx = {"HX-Request": "true", "HX-Target": "results"}
    async with console_for(store, console={"page_size": 5}) as c:
        bad = await c.get("/console/conversations", params={"end_reason": "ALIENS", "since": "tuesday"})
        cursor = await c.get("/console/conversations", params={"cursor": "not-a-cursor"})
        swapped = await c.get("/console/conversations", params={"cursor": "not-a-cursor"}, headers=htmx)
        zone = await c.get("/console/conversations", params={"tz": "Mars/Olympus_Mons", "since": "2020-01-01"})
    assert bad.status_code == 400 and "unknown end reason &#39;ALIENS&#39;" in bad.text
    assert "since: &#39;tuesday&#39; is not a date" in bad.text
    assert ids(bad.text) == [] and 'name="end_reason"' in bad.text and "/console/conversations/new" not in bad.text
    assert cursor.status_code == 400 and "malformed cursor" in cursor.text and ids(cursor.text) == []
    assert swapped.status_code == 400 and "malformed cursor" in swapped.text and "<html" not in swapped.text
    assert zone.status_code == 200 and "unknown time zone &#39;Mars/Olympus_Mons&#39;" in zone.text
    assert ids(zone.text) == ["failing", "c6", "c5", "c4", "c3"]


async def test_rows_show_agent_end_reason_duration_flows_and_failure(store: Store) -> None:
    await seed(store)
    async with console_for(store) as c:
        html = (await c.get("/console/conversations")).text
    row = html[html.index('data-href="/console/conversations/failing"') :].split("</tr>")[0]
    assert "Support Line" in row and "v3" in row and "CUSTOMER_HANGUP" in row and "3:00" in row
    assert '<td class="num">1</td>' in row and '<span class="badge bad">failed</span>' in row


async def stored_when_they_ended(store: Store) -> None:
    """As if every call so far had been stored as it ended (minutes apart): outside each other's overlap."""
    c = table(Conversation).c
    async with store.write() as conn:
        await conn.execute(update(table(Conversation)).values(stored_at=c.ended_at))


async def stored_before(store: Store, cid: str, other: str, seconds: float) -> None:
    """As if `cid`'s recorder had read the store's clock `seconds` before `other`'s and committed after it."""
    c = table(Conversation).c
    async with store.write() as conn:
        then = (await conn.execute(select(c.stored_at).where(c.conversation_id == other))).scalar_one()
        await conn.execute(
            update(table(Conversation))
            .where(c.conversation_id == cid)
            .values(stored_at=then - timedelta(seconds=seconds))
        )


def poll_of(html: str) -> str:
    poll = re.search(r'hx-get="(/console/conversations/new\?[^"]+)"', html)
    assert poll is not None
    return poll.group(1).replace("&amp;", "&")


async def test_new_calls_are_offered_without_a_reload(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "NEW_CALLS_OVERLAP", timedelta(0))
    await seed(store)
    async with console_for(store) as c:
        url = poll_of((await c.get("/console/conversations")).text)
        assert ids((await c.get(url)).text) == []
        await writer.write(
            store, rows_of(story("late-1", at=T0 + timedelta(hours=2)) + story("late-2", at=T0 + timedelta(hours=3)))
        )
        fresh = (await c.get(url)).text
        assert ids(fresh) == ["late-2", "late-1"] and 'class="new"' in fresh
        assert 'id="call-late-2"' in fresh  # what the page recognizes a call by (console.js)
        assert ids((await c.get(poll_of(fresh))).text) == []


async def test_a_call_stored_after_the_page_loaded_is_offered_though_it_ended_before_the_newest_shown(
    store: Store,
) -> None:
    """The poller asked for calls that ended after the newest row shown: a call whose vendor webhook (Retell's
    call_analyzed, ElevenLabs' post_call_transcription) or record reached the store late, with an end before
    that row, was never offered; only a reload showed it. It is asked for by arrival in the store now."""
    await seed(store)
    await stored_when_they_ended(store)
    async with console_for(store, console={"page_size": 5, "refresh_seconds": 1}) as c:
        page = (await c.get("/console/conversations", params={"agent": "support-line"})).text
        assert ids(page)[0] == "failing"  # ended at T0 + 1 h
        url = poll_of(page)
        assert ids((await c.get(url)).text) == []
        await writer.write(
            store,
            rows_of(
                story("late-webhook", at=T0 + timedelta(minutes=30))
                + story("other-agent", at=T0 + timedelta(minutes=31), agent="sales-line")
            ),
        )
        fresh = (await c.get(url)).text
        assert ids(fresh) == ["late-webhook"] and 'class="new"' in fresh  # the page's filter holds
        assert ids((await c.get(poll_of(fresh))).text) == []


async def test_a_call_committed_after_a_later_stored_one_is_offered_by_the_next_poll(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two recorders: one reads the store's clock, the other stores a call after it and commits first; the
    poll between the commits has moved past the first one's time. The overlap asks again, and a call that
    has left the overlap is not offered any more."""
    await seed(store)
    await stored_when_they_ended(store)
    async with console_for(store) as c:
        url = poll_of((await c.get("/console/conversations")).text)
        await writer.write(store, rows_of(story("second", at=T0 + timedelta(minutes=2))))
        first_poll = (await c.get(url)).text
        assert ids(first_poll) == ["second"]
        await writer.write(store, rows_of(story("first", at=T0 + timedelta(minutes=1))))
        await stored_before(store, "first", "second", seconds=2)
        assert ids((await c.get(poll_of(first_poll))).text) == ["first"]
        assert ids((await c.get(poll_of(first_poll))).text) == ["first"]  # again: the page keeps its copy
        monkeypatch.setattr(pages, "NEW_CALLS_OVERLAP", timedelta(seconds=1))
        assert ids((await c.get(poll_of(first_poll))).text) == []


async def test_one_call_as_a_timeline(store: Store) -> None:
    await seed(store)
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/c1")).text
        failing = (await c.get("/console/conversations/failing")).text
    for step in ("Received", "Extracted", "Decided", "Outcome"):
        assert f"<h3>{step}" in html
    assert '<button type="button" class="evidence" data-ev="0"' in html  # a value with its evidence
    assert '<mark class="ev" data-ev="0">' in html  # the quote, marked in the transcript
    assert "crm-sync" in html and "fired" in html and "delivered" in html
    assert "2 of 2 action(s) done" in html
    assert "HTTP 503: &lt;b&gt;try later&lt;/b&gt;" in failing and "<b>try later" not in failing
    assert "1 failed (a retry may follow)" in failing


async def test_a_time_sent_with_an_offset_is_shown_in_utc_as_its_label_says(store: Store) -> None:
    """The platform's times keep the offset they were sent with; the page labels every time UTC (console.js
    rewrites it in the viewer's zone, so without the script the label is what an operator reads)."""
    at = datetime(2026, 3, 10, 12, 0, tzinfo=timezone(timedelta(hours=2)))  # 10:00 UTC
    await writer.write(store, rows_of([(CONVERSATION_ENDED, ended("offset", at=at))]))
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/offset")).text
    shown = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', html)
    assert ("2026-03-10T10:00:00+00:00", "2026-03-10 10:00:00 UTC") in shown  # the row's end
    assert ("2026-03-10T09:57:00+00:00", "2026-03-10 09:57:00 UTC") in shown  # the event's start
    assert all(text.endswith(" UTC") and when.endswith("+00:00") for when, text in shown)
    assert not any(text.startswith("2026-03-10 12:00") for _, text in shown)


async def test_hostile_text_is_escaped_everywhere(store: Store) -> None:
    hostile = {case.key: case for case in cases()}
    records: list[tuple[str, Any]] = []
    for key in ("hostile-script", "hostile-inject"):
        event = ConversationEnded.model_validate_json(hostile[key].value)
        records += [(CONVERSATION_ENDED, event), (CONVERSATION_EXTRACTED, extracted(event))]
    await writer.write(store, rows_of(records))
    async with console_for(store) as c:
        listing = (await c.get("/console/conversations")).text
        script = (await c.get("/console/conversations/hostile-script")).text
        inject = (await c.get("/console/conversations/hostile-inject")).text
    for html in (listing, script):
        assert "<svg" not in html and "&lt;svg onload=alert(1)&gt;Mallory" in html
    assert "<script>document" not in script and "<img" not in script and "</textarea><b>" not in script
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in script
    assert SCRIPT not in script and SCRIPT_NAME not in listing
    assert "{{__import__(&#39;os&#39;).system(&#39;id&#39;)}}" in inject and "{% for x in range(9) %}" in inject


async def test_dead_letters_grouped_listed_and_one_in_full(store: Store) -> None:
    await seed(store)
    async with console_for(store) as c:
        page = (await c.get("/console/dead-letters")).text
        assert "router" in page and "InvalidRecord: not JSON" in page and '<td class="num">1</td>' in page
        letter = re.search(r'href="/console/dead-letters/(\d+)"', page)
        assert letter is not None
        detail = (await c.get(f"/console/dead-letters/{letter.group(1)}")).text
        assert "postcall.router.dlq.v1:1:9" in detail and "&lt;html&gt;&lt;script&gt;x&lt;/script&gt;" in detail
        assert "x-exception-message" in detail.lower() and "<script>x" not in detail
        dry = await c.post(
            "/console/operations/redrive",
            data={"service": "router", "dry_run": "1", "rate": "5", "csrf_token": csrf_of(page)},
        )
        assert (
            dry.status_code == 200
            and "Dry run: 1 dead letter(s) would be redriven" in dry.text
            and "at 5.0/s" in dry.text
        )
        assert (await c.get("/console/dead-letters/999999")).status_code == 404


async def test_a_redrive_draws_the_pages_counts_and_list_again(store: Store) -> None:
    """htmx swapped in a redrive's answer alone: "1 dead letter(s) redriven to their original topics" sat
    above counts and a list that still showed the letter pending (walk24, in Chromium), and a second click
    redrove nothing. A redrive's answer now triggers the list (and, out of band, the counts) to be drawn
    again from the page's own URL; a dry run changes nothing and triggers nothing."""
    await seed(store)
    async with console_for(store) as c:
        page = (await c.get("/console/dead-letters", params={"service": "router"})).text
        region = re.search(r'<div id="letter-records" hx-get="([^"]+)" hx-trigger="([^"]+)"', page)
        assert region is not None and 'id="letter-counts"' in page
        assert region.group(1).startswith("/console/dead-letters?") and "service=router" in region.group(1)
        assert region.group(2) == "dead-letters-changed from:body"
        assert 'hx-select="#letter-records" hx-select-oob="#letter-counts"' in page
        form = {"service": "extractor", "rate": "5", "csrf_token": csrf_of(page)}  # matches no letter: sends nothing
        dry = await c.post("/console/operations/redrive", data={**form, "dry_run": "1"})
        assert dry.status_code == 200 and "HX-Trigger" not in dry.headers
        done = await c.post("/console/operations/redrive", data={**form, "dry_run": "0"})
        assert done.status_code == 200 and "0 dead letter(s) redriven" in done.text, done.text
        assert done.headers["HX-Trigger"] == "dead-letters-changed"


async def test_dead_letters_are_counted_by_reason_on_the_first_page_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouped counts are a GROUP BY over every matching letter: an older page (a cursor) does not run it
    again, and says where the counts are."""
    rows = r.Rows()
    for i in range(7):
        source = r.Source("postcall.router.dlq.v1", 0, i, int((T0 + timedelta(minutes=i)).timestamp() * 1000))
        rows.extend(r.dead_letter(source, "router", f"k{i}".encode(), b"{", {h.EXCEPTION_MESSAGE: "InvalidRecord: x"}))
    await writer.write(store, rows)
    counted: list[object] = []
    real = letters.queries.dead_letter_counts

    async def counting(*args: Any, **kwargs: Any) -> Any:
        counted.append(args[1])
        return await real(*args, **kwargs)

    monkeypatch.setattr(letters.queries, "dead_letter_counts", counting)
    async with console_for(store, console={"page_size": 5}) as c:
        first = (await c.get("/console/dead-letters", params={"service": "router"})).text
        assert '<td class="num">7</td>' in first and "data-counts-elsewhere" not in first and len(counted) == 1
        older = re.search(r'href="/console/dead-letters\?([^"]*cursor=[^"]+)" rel="next"', first)
        assert older is not None
        second = (await c.get("/console/dead-letters?" + older.group(1).replace("&amp;", "&"))).text
    assert len(counted) == 1, "an older page ran the grouped counts again"
    assert "data-counts-elsewhere" in second and '<td class="num">7</td>' not in second
    assert len(re.findall(r'<tr data-href="/console/dead-letters/\d+"', second)) == 2
    assert 'href="/console/dead-letters?service=router">first page</a>' in second


async def test_a_filter_the_dead_letters_page_cannot_read_is_a_400_naming_it(store: Store) -> None:
    """An unknown service or state, or a date it could not read, was named on a 200 page that listed the letters
    without that filter (every pending letter, as if they were the ones asked for), as the conversations page
    did. Now a 400 with the form to correct it and no list; an unknown time zone stays a note on a 200 page."""
    await seed(store)
    async with console_for(store) as c:
        service = await c.get("/console/dead-letters", params={"service": "routr"})
        state = await c.get("/console/dead-letters", params={"state": "closed"})
        day = await c.get("/console/dead-letters", params={"since": "tuesday"})
        zone = await c.get("/console/dead-letters", params={"tz": "Mars/Olympus_Mons"})
    for answer, named in ((service, "unknown service &#39;routr&#39;"), (state, "unknown state &#39;closed&#39;"),
                          (day, "since: &#39;tuesday&#39; is not a date")):  # fmt: skip
        assert answer.status_code == 400 and named in answer.text, answer.text
        assert "/console/dead-letters/" not in answer.text and 'name="service"' in answer.text
    assert zone.status_code == 200 and "unknown time zone &#39;Mars/Olympus_Mons&#39;" in zone.text
    assert re.search(r'<tr data-href="/console/dead-letters/\d+"', zone.text)


async def test_a_dead_letters_credential_headers_are_not_shown_on_its_page(store: Store) -> None:
    """A record an outside producer copied its HTTP request's headers onto, dead-lettered: its page names
    the headers and hides the credentials (a redrive sends them from the store as they were)."""
    secrets = {"authorization": "Bearer eyJhbGciOi.tok-en.sig", "Cookie": "sid=0f3c9a77", "X-Api-Key": "ak_live_51Hc9"}
    headers = {h.EXCEPTION_MESSAGE: "PermanentError: bug", h.ORIGINAL_TOPIC: "postcall.decisions.v1", **secrets}
    await writer.write(
        store, r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 3, 0), "router", b"k", b"{}", headers)
    )
    async with console_for(store) as c:
        letter = re.search(r'href="/console/dead-letters/(\d+)"', (await c.get("/console/dead-letters")).text)
        assert letter is not None
        detail = (await c.get(f"/console/dead-letters/{letter.group(1)}")).text
    assert all(value not in detail for value in secrets.values())
    assert all(f"<code>{name}</code></td><td><code>[redacted]</code>" in detail for name in secrets)
    assert "PermanentError: bug" in detail and "a redrive sends them as they were" in detail


async def test_a_recorder_dead_letter_is_redriven_to_the_recorder_alone_and_its_page_says_so(store: Store) -> None:
    """A redrive of the recorder's dead letter goes to its own replay topic, not to the original topic other
    services read: the button said it went to postcall.conversation-ended.v1 (to be extracted again)."""
    headers = {
        h.EXCEPTION_MESSAGE: "PermanentError: the store refused this record",
        h.ORIGINAL_TOPIC: CONVERSATION_ENDED,
    }
    source = r.Source("postcall.recorder.dlq.v1", 0, 5, int(T0.timestamp() * 1000))
    await writer.write(store, r.dead_letter(source, "recorder", b"c-r", b"{}", headers))
    async with console_for(store) as c:
        page = (await c.get("/console/dead-letters?service=recorder")).text
        letter = re.search(r'href="/console/dead-letters/(\d+)"', page)
        assert letter is not None
        detail = (await c.get(f"/console/dead-letters/{letter.group(1)}")).text
    assert f"Redrive this record to the recorder alone, as read from {CONVERSATION_ENDED}</button>" in detail


async def test_a_dead_letter_no_redrive_can_send_says_so_instead_of_offering_the_button(store: Store) -> None:
    """A router letter naming a topic the router does not read (a forged or foreign header) is never replayed
    (replay_target): its page offered "Redrive this record to postcall.decisions.v1", which redrove nothing."""
    headers = {h.EXCEPTION_MESSAGE: "PermanentError: bug", h.ORIGINAL_TOPIC: "postcall.decisions.v1"}
    await writer.write(
        store, r.dead_letter(r.Source("postcall.router.dlq.v1", 0, 4, 0), "router", b"k", b"{}", headers)
    )
    async with console_for(store) as c:
        letter = re.search(r'href="/console/dead-letters/(\d+)"', (await c.get("/console/dead-letters")).text)
        assert letter is not None
        detail = (await c.get(f"/console/dead-letters/{letter.group(1)}")).text
    assert "Redrive this record" not in detail
    assert "No redrive for this record: it names no original topic, or one that the router does not read" in detail


async def test_dates_and_ids_out_of_range_are_named_never_a_500(store: Store) -> None:
    await seed(store)
    async with console_for(store) as c:
        for path, params in [
            ("/console/conversations", {"until": "9999-12-31"}),
            ("/console/conversations", {"since": "0001-01-01", "tz": "Asia/Tokyo"}),
            ("/console/dead-letters", {"until": "9999-12-31"}),
        ]:
            answer = await c.get(path, params=params)
            assert answer.status_code == 400 and "is out of range" in answer.text, (  # a 400 naming it
                path,
                params,
                answer.status_code,
            )
        huge = await c.get(f"/console/dead-letters/{2**64}")
        assert huge.status_code == 404, huge.status_code
        page = (await c.get("/console/dead-letters")).text
        redrive = await c.post(
            "/console/operations/redrive", data={"id": str(2**63), "dry_run": "1", "csrf_token": csrf_of(page)}
        )
        assert redrive.status_code == 400 and "out of range" in redrive.text, redrive.status_code


async def test_a_nul_in_any_pages_parameter_is_never_a_5xx(store: Store) -> None:
    """PostgreSQL refuses NUL in a text parameter (SQLite takes it): a value that reached a query uncleaned
    was a DataError, answered 503 "the store is unavailable" (JSON, on a console page)."""
    await seed(store)
    nul = "c1\x00x"
    async with console_for(store) as c:
        for path, params in [
            ("/console/conversations/c1%00x", {}),
            ("/console/conversations", {"agent": nul, "version": nul, "q": nul}),
            ("/console/conversations/new", {"agent": nul}),
            ("/console/dead-letters", {"reason": nul, "key": nul}),
            ("/console/tasks", {"assignee": nul}),
            ("/console/alerts", {"mine": "1"}),
            ("/console/try", {"conversation_id": nul}),
        ]:
            answer = await c.get(path, params=params)
            assert answer.status_code < 500, (path, params, answer.status_code, answer.text[:200])


async def test_agents_page_shows_problems_with_lines_flows_and_fire_counts(store: Store, tmp_path: Any) -> None:
    (tmp_path / "support.yaml").write_text((AGENTS / "support-line.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("agent: broken\nflows:\n  - id: x\n    actions: [{type: webhok}]\n")
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        html = (await c.get("/console/agents")).text
    assert "<code>broken.yaml:4</code>" in html and "unknown action type &#39;webhok&#39;" in html
    assert "crm-case-update" in html and "callback-requested" in html
    assert "0 of 0" in html  # nothing recorded for this revision in the last 7 days


async def test_agents_page_says_a_file_that_became_invalid_is_served_by_its_last_good_revision(
    store: Store, tmp_path: Any
) -> None:
    """The router and the extractor keep a file's last good configuration when an edit breaks it (a reload
    never drops an agent); the page said "not loaded" for it, as it read the folder afresh each time."""
    good = (AGENTS / "support-line.yaml").read_text()
    (tmp_path / "support.yaml").write_text(good)
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        assert "not loaded" not in (await c.get("/console/agents")).text
        (tmp_path / "support.yaml").write_text(good.replace("flows:", "flows: [", 1))
        html = (await c.get("/console/agents")).text
        assert "bad: the last good revision still serves" in html and "not loaded" not in html
        assert "crm-case-update" in html  # its flows, as they are served
        (tmp_path / "new.yaml").write_text("agent: new-line\nflows: [\n")  # never good: nothing serves it
        html = (await c.get("/console/agents")).text
        assert html.count('"badge bad">broken') == 1 and "bad: the last good revision still serves" in html
        assert "<code>support.yaml:39</code>" in file_section(html, "support.yaml")  # its problem, in its section


def file_section(html: str, path: str) -> str:
    """The agents page's section of one file."""
    (section,) = [
        s for s in html.split('<section class="panel file">')[1:] if s.lstrip().startswith(f"<h2><code>{path}<")
    ]
    return section.split("</section>", 1)[0]


async def test_agents_page_says_a_file_invalid_since_the_console_first_read_it_is_broken_and_why(
    store: Store, tmp_path: Any
) -> None:
    """A file already invalid when the API first read the folder showed only a "not loaded" badge in its
    section (walk24), though a file an edit broke later is marked bad: what is wrong, and where, was only
    in the list above every file. Its section now says it is broken, with each problem's file, line and
    message, and that a service running since it was valid may still serve its last good revision."""
    (tmp_path / "support.yaml").write_text((AGENTS / "support-line.yaml").read_text())
    (tmp_path / "new.yaml").write_text("agent: new-line\nflows:\n  - id: x\n    actions: [{type: webhok}]\n")
    (tmp_path / "torn.yaml").write_text("agent: torn\nflows: [\n")
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        html = (await c.get("/console/agents")).text
    assert "not loaded" not in html
    new = file_section(html, "new.yaml")
    assert "new-line" in new and '"badge bad">broken' in new, new
    assert "<code>new.yaml:4</code>: <code>flows[0].actions[0]</code>: unknown action type" in new, new
    assert "still serves its last good revision" in new
    torn = file_section(html, "torn.yaml")
    assert '"badge bad">broken' in torn and "<code>torn.yaml:3</code>: YAML: " in torn, torn
    assert "broken" not in file_section(html, "support.yaml")


async def test_agents_page_says_a_folder_without_an_agent_file_is_a_problem(store: Store, tmp_path: Any) -> None:
    """As `postcall config validate` refuses it; the page used to say "No problems: every file is valid."."""
    (tmp_path / "README.md").write_text("agent: support-line\n")
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        html = (await c.get("/console/agents")).text
    assert f"<code>{tmp_path}:0</code>: no agent configuration file (*.yaml or *.yml) found in this folder" in html
    assert "every file is valid" not in html


async def test_agents_page_shows_the_destinations_files_own_problems_as_config_validate_does(
    store: Store, tmp_path: Any
) -> None:
    """A block the dispatcher would refuse at its start (here an SMTP password sent in the clear to a relay
    elsewhere) is listed with its line, as `postcall config validate --destinations` lists it; the page said
    nothing while every destination an action names existed."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "support.yaml").write_text((AGENTS / "support-line.yaml").read_text())
    example = (ROOT / "examples" / "dispatcher" / "destinations.yaml").read_text()
    plain = example.replace("    # username: postcall\n    # password:", "    username: postcall\n    password:")
    local = "    host: 127.0.0.1\n    port: ${SINK_SMTP_PORT:-8025}"
    plain = plain.replace(local, "    host: mail.example.com\n    port: 25")
    assert plain.count("password: {secret_env") == 1 and "mail.example.com" in plain
    (tmp_path / "destinations.yaml").write_text(plain)
    line = plain.split("    password: {secret_env")[0].count("\n") + 1
    files = {"config_dir": str(tmp_path / "agents"), "destinations_file": str(tmp_path / "destinations.yaml")}
    async with console_for(store, console=files) as c:
        html = (await c.get("/console/agents")).text
    problem = html.split(f"destinations.yaml:{line}</code>: ", 1)[1].split("</li>", 1)[0]
    assert problem.startswith("<code>destinations[3].password</code>: ") and "sent in clear text" in problem, problem
    assert "every file is valid" not in html


async def test_try_a_flow_on_an_edited_configuration(store: Store) -> None:
    example = (ROOT / "examples" / "conversations" / "0005-callback-request.json").read_text()
    edited = (AGENTS / "support-line.yaml").read_text() + (
        "  - id: tried-here\n    draft: true\n    when: {end_reason: CUSTOMER_HANGUP}\n"
        "    actions: [{type: task, title: 'Edited <b>{{customer_number}}</b>'}]\n"
    )
    async with console_for(store) as c:
        form = (await c.get("/console/try")).text
        token = csrf_of(form)
        current = await c.post("/console/try", data={"csrf_token": token, "source": "paste", "payload": example})
        tried = await c.post(
            "/console/try",
            data={"csrf_token": token, "source": "paste", "payload": example, "config": "edited",
                  "file": "support-line.yaml", "config_text": edited},
        )  # fmt: skip
        broken = await c.post(
            "/console/try",
            data={"csrf_token": token, "source": "paste", "payload": example, "config": "edited",
                  "file": "support-line.yaml", "config_text": edited.replace("type: task", "type: tsak")},
        )  # fmt: skip
    assert current.status_code == 200 and "tried-here" not in current.text and "callback-requested" in current.text
    assert "would fire" in tried.text and "tried-here" in tried.text
    assert "Edited &lt;b&gt;+16305550123&lt;/b&gt;" in tried.text  # the exact payload, escaped
    assert "nothing was produced or sent" in tried.text
    assert "support-line.yaml:" in broken.text and "unknown action type &#39;tsak&#39;" in broken.text
    assert "postcall-try-" not in broken.text  # the private copy's path is not shown


async def test_try_a_flow_takes_a_pasted_payload_as_large_as_an_uploaded_one(store: Store) -> None:
    """The page posts multipart (it has a file field): a pasted conversation over 1 MiB was refused by the form
    parser's default part size ("Part exceeded maximum size of 1024KB") although the same file uploaded is
    taken up to MAX_PAYLOAD (5 MiB), and the page says so."""
    call = orjson.loads((ROOT / "examples" / "conversations" / "0005-callback-request.json").read_bytes())
    call["messages"] = call["messages"] * (1_500_000 // len(orjson.dumps(call["messages"])) + 1)
    payload = orjson.dumps(call).decode()
    assert 1024 * 1024 < len(payload) < trial.MAX_PAYLOAD
    async with console_for(store) as c:
        token = csrf_of((await c.get("/console/try")).text)
        multipart = {"csrf_token": token, "source": "paste", "payload": payload}
        tried = await c.post("/console/try", data=multipart, files={"upload": ("", b"", "application/json")})
    assert tried.status_code == 200, tried.text[:500]
    assert "callback-requested" in tried.text and "exceeded" not in tried.text


async def test_try_a_flow_on_a_configuration_folder_that_is_not_there_says_so(store: Store, tmp_path: Any) -> None:
    """POSTCALL_CONSOLE__CONFIG_DIR naming a folder that is gone (a ConfigMap not mounted, a typo): an edited
    file's dry run was a 500 (copying the folder raised FileNotFoundError), and the current configuration's
    showed the last line of the command line's usage box, a row of box-drawing characters."""
    example = (ROOT / "examples" / "conversations" / "0005-callback-request.json").read_text()
    gone = tmp_path / ("a-long-folder-name-" * 8) / "agents"  # longer than a line: the box wraps it mid-word
    await writer.write(store, rows_of(story("stored-call")))
    async with console_for(store, console={"config_dir": str(gone)}) as c:
        # a call page's "Try a flow on this call": the form opened on the call's own file, which there is not
        form = await c.get("/console/try", params={"conversation_id": "stored-call"})
        assert form.status_code == 200 and 'value="stored-call"' in form.text, form.status_code
        token = csrf_of((await c.get("/console/try")).text)
        answers = [
            await c.post("/console/try", data={"csrf_token": token, "source": "paste", "payload": example, **more})
            for more in ({}, {"config": "edited", "config_text": "agent: x\n"})
        ]
    for answer in answers:
        assert answer.status_code == 409, (answer.status_code, answer.text[-300:])
        assert f"the agent configuration folder {gone} is not a folder" in answer.text, answer.text[-300:]
    failed = await trial.dry_run(example.encode(), gone, None)  # the command line's own words, not its box
    assert failed.error == f"Invalid value for --agents: {gone} is not a folder", failed.error


async def test_try_a_flow_answers_429_with_retry_after_once_two_run_and_two_wait(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Used to queue every dry run behind the two running ones: each may take 180 s and make paid LLM calls."""
    from services.console import trial

    queue = trial.DryRuns(running=2, waiting=2)  # this test's own: a semaphore is bound to one event loop
    monkeypatch.setattr(trial, "_DRY_RUNS", queue)
    finish, started = asyncio.Event(), []

    class Child:  # `postcall try --json`, held until the test lets it finish
        async def communicate(self, _data: bytes) -> tuple[bytes, bytes]:
            started.append(1)
            await finish.wait()
            return orjson.dumps({"ok": False, "config_source": None, "input_kind": None, "error": "held"}), b""

    async def spawn(*_args: Any, **_kwargs: Any) -> Child:
        return Child()

    monkeypatch.setattr(trial.asyncio, "create_subprocess_exec", spawn)
    example = (ROOT / "examples" / "conversations" / "0005-callback-request.json").read_text()
    async with console_for(store) as c:
        form = {"csrf_token": csrf_of((await c.get("/console/try")).text), "source": "paste", "payload": example}
        queued = [asyncio.create_task(c.post("/console/try", data=form)) for _ in range(4)]
        while len(started) < 2 or queue.admitted < 4:
            await asyncio.sleep(0.01)
        refused = await c.post("/console/try", data=form, headers={"HX-Request": "true"})
        finish.set()
        answers = await asyncio.gather(*queued)
        after = await c.post("/console/try", data=form)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
    assert "4 dry runs are running or waiting already (2 at a time): try again in 30 s" in refused.text
    assert [a.status_code for a in answers] == [200] * 4 and "held" in answers[0].text
    assert len(started) == 5
    assert after.status_code == 200  # the places are given back


async def test_try_a_flow_shows_a_dry_run_that_gave_no_answer_as_its_error(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run stopped at the time limit, or a child that printed no JSON, used to be a 500 (the result
    template read the answer's fields, absent then): the viewer saw nothing."""
    from services.console import trial

    example = (ROOT / "examples" / "conversations" / "0005-callback-request.json").read_text()
    async with console_for(store) as c:
        form = {"csrf_token": csrf_of((await c.get("/console/try")).text), "source": "paste", "payload": example}
        monkeypatch.setenv("POSTCALL_RUNTIME__MAX_IN_FLIGHT", "many")  # the child refuses to start
        refused = await c.post("/console/try", data=form)
        monkeypatch.delenv("POSTCALL_RUNTIME__MAX_IN_FLIGHT")
        monkeypatch.setattr(trial, "TIMEOUT_SECONDS", 0.01)
        stopped = await c.post("/console/try", data=form)
    assert refused.status_code == 200 and "POSTCALL_RUNTIME__MAX_IN_FLIGHT" in refused.text, refused.text[-300:]
    assert stopped.status_code == 200 and "the dry run took longer than 0 s and was stopped" in stopped.text


async def test_try_a_flow_keeps_the_lines_of_an_invalid_events_problems(store: Store) -> None:
    """The dry run's error lists an invalid event's problems one a line; the page showed them on one line (a
    <p> collapses line breaks). Its element now keeps them (white-space: pre-wrap), its text escaped."""
    payload = orjson.dumps({"event_id": "e1", "conversation_id": "c1", "ended_at": "<b>nope</b>"}).decode()
    async with console_for(store) as c:
        form = {"csrf_token": csrf_of((await c.get("/console/try")).text), "source": "paste", "payload": payload}
        answer = await c.post("/console/try", data=form)
        css = (await c.get("/console/static/console.css")).text
    alert = re.search(r'<p class="([^"]*)" role="alert">(.*?)</p>', answer.text, re.S)
    assert answer.status_code == 200 and alert is not None, answer.text[-500:]
    classes, text = alert.group(1).split(), alert.group(2)
    assert text.startswith("not a valid ConversationEnded:\n  ") and "\n  account: Field required\n" in text, text
    assert "&lt;b&gt;nope&lt;/b&gt;" in text and "<b>" not in text  # escaped: no markup from the error text
    kept = [c for c in classes if re.search(rf"^\.{c} {{[^}}]*white-space: pre-wrap", css, re.M)]
    assert kept, (classes, "no class of the alert keeps its lines")


async def test_try_a_stored_call_with_its_stored_extraction(store: Store) -> None:
    example = ConversationEnded.model_validate_json(
        (ROOT / "examples" / "conversations" / "0001-support-resolved-hangup.json").read_bytes()
    )
    await writer.write(store, rows_of([(CONVERSATION_ENDED, example), (CONVERSATION_EXTRACTED, extracted(example))]))
    async with console_for(store) as c:
        form = await c.get("/console/try", params={"conversation_id": example.conversation_id})
        assert 'value="support-line.yaml" selected' in form.text and "crm-case-update" in form.text
        answer = await c.post(
            "/console/try",
            data={"csrf_token": csrf_of(form.text), "source": "stored", "conversation_id": example.conversation_id,
                  "use_stored_extraction": "1"},
        )  # fmt: skip
        missing = await c.post("/console/try", data={"csrf_token": csrf_of(form.text), "conversation_id": "nope"})
    assert answer.status_code == 200 and "conversation-extracted" in answer.text and "crm-case-update" in answer.text
    assert missing.status_code == 404 and "no stored event" in missing.text


async def test_the_api_document_does_not_list_console_pages(store: Store) -> None:
    async with console_for(store) as c:
        paths = orjson.loads((await c.get("/openapi.json")).content)["paths"]
    assert not [p for p in paths if p.startswith("/console")]


async def test_static_files_are_served_and_htmx_is_the_vendored_one(store: Store) -> None:
    import hashlib

    async with console_for(store) as c:
        js = await c.get("/console/static/htmx.min.js")
    vendored = (ROOT / "services" / "console" / "static" / "VENDORED.md").read_text()
    assert js.status_code == 200 and hashlib.sha256(js.content).hexdigest() in vendored


async def test_try_a_vendor_payload_mapped_by_the_ingress(store: Store) -> None:
    vapi = (ROOT / "examples" / "webhooks" / "vapi" / "phone-inbound-with-analysis.json").read_text()
    async with console_for(store) as c:
        token = csrf_of((await c.get("/console/try")).text)
        answer = await c.post(
            "/console/try", data={"csrf_token": token, "source": "paste", "payload": vapi, "agent": "support-line"}
        )
    assert answer.status_code == 200 and "Input: vapi" in answer.text and "crm-case-update" in answer.text


async def test_agents_page_counts_how_often_each_flow_fired_in_the_last_7_days(store: Store, tmp_path: Any) -> None:
    import hashlib
    from datetime import UTC, datetime

    text = (
        "agent: support-line\nflows:\n  - {id: crm-sync, actions: [{type: task, title: x}]}\n"
        "  - {id: callback, when: {end_reason: VOICEMAIL}, actions: [{type: task, title: y}]}\n"
    )
    (tmp_path / "support.yaml").write_text(text)
    revision = hashlib.sha256(text.encode()).hexdigest()[:16]
    now = datetime.now(UTC)
    records: list[tuple[str, Any]] = []
    for i, (days, fired) in enumerate([(1, True), (2, True), (3, False), (10, True)]):
        event = ended(f"a{i}", at=now - timedelta(days=days), version=None)
        decided = trace(event, [("crm-sync", True, ["task"]), ("callback", fired, ["task"])])
        records += [(CONVERSATION_ENDED, event), (DECISIONS, decided.model_copy(update={"config_revision": revision}))]
    await writer.write(store, rows_of(records))
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        html = (await c.get("/console/agents")).text
    rows = {m[0]: m[1] for m in re.findall(r"<code>([a-z-]+)</code>.*?(\d+ of \d+)</td>", html, re.S)}
    assert rows == {"crm-sync": "3 of 3", "callback": "2 of 3"}  # the call 10 days ago is outside the window


async def test_agents_page_counts_fires_over_the_newest_traces_only_when_there_are_more(
    store: Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    from datetime import UTC, datetime

    from services.console import agents

    monkeypatch.setattr(agents, "MAX_TRACES", 2)
    text = "agent: support-line\nflows:\n  - {id: callback, actions: [{type: task, title: y}]}\n"
    (tmp_path / "support.yaml").write_text(text)
    revision = hashlib.sha256(text.encode()).hexdigest()[:16]
    records: list[tuple[str, Any]] = []
    for i, (hours, fired) in enumerate([(1, False), (2, True), (3, True)]):  # the oldest fired: not counted
        event = ended(f"a{i}", at=datetime.now(UTC) - timedelta(hours=hours), version=None)
        decided = trace(event, [("callback", fired, ["task"])])
        records.append((DECISIONS, decided.model_copy(update={"config_revision": revision})))
    await writer.write(store, rows_of(records))
    async with console_for(store, console={"config_dir": str(tmp_path)}) as c:
        html = (await c.get("/console/agents")).text
    assert "2 decision trace(s) (the newest 2 only)" in html
    assert re.findall(r"<code>callback</code>.*?(\d+ of \d+)</td>", html, re.S) == ["1 of 2"]


def test_the_console_defaults_to_the_services_own_configuration_files(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.api.settings import ApiSettings

    monkeypatch.setenv("POSTCALL_CONFIG_DIR", "/etc/postcall/agents")
    monkeypatch.setenv("POSTCALL_DESTINATIONS_FILE", "/etc/postcall/destinations.yaml")
    settings = ApiSettings()
    assert str(settings.console.config_dir) == "/etc/postcall/agents"
    assert str(settings.console.destinations_file) == "/etc/postcall/destinations.yaml"
    monkeypatch.setenv("POSTCALL_CONSOLE__CONFIG_DIR", "/srv/other")
    assert str(ApiSettings().console.config_dir) == "/srv/other"


async def test_a_call_shows_its_held_flows_and_its_destinations_state_from_the_dispatchers_topic(
    store: Store, kafka: KafkaSettings
) -> None:
    """The dispatcher group's facts on a topic of the real broker, followed as the API follows them: crm
    disabled by a 410, the breaker of sheets open, a rate-limited attempt; the latest decision holds a flow."""
    event = ended("held-call", at=T0 + timedelta(hours=2), customer="Hal Held")
    held = trace(event, [("crm-sync", True, ["webhook"])])
    flow = held.flows[0].model_copy(update={"held": True, "fired": False, "reason": "held: extraction failed"})
    held = held.model_copy(
        update={"extraction_status": "failed", "flows": [flow, trace(event, [("log", True, ["webhook"])]).flows[0]]}
    )
    aid = action_id("held-call", "log")
    # as the dispatcher records a deferral (the result's error); the test wrote limits.py's message alone, which
    # no result carries, so the page's "rate limited" never showed for a real one
    action = WebhookRequested(
        action_id=aid,
        conversation_id="held-call",
        agent_id="support-line",
        flow_id="log",
        action_index=0,
        config_revision="rev",
        requested_at=T0,
        source_event_id="e",
        destination="crm",
        body={},
    )
    deferral = Deferred("rate limit of destination crm reached", retry_after=1)  # limits.py's
    deferred = failed_result(action, Context(service="dispatcher", topic="t"), deferral, "failed").error
    records = [
        (CONVERSATION_ENDED, event),
        (DECISIONS, held),
        (ACTION_RESULTS, result(aid, "held-call", "failed", 1, status_code=None, error=deferred)),
        (
            ACTION_RESULTS,
            result(
                aid, "held-call", "dead_lettered", 1, status_code=None, error="HTTP 410 Gone: destination crm disabled"
            ),
        ),
    ]
    await writer.write(store, rows_of(records))

    topic = unique("destination-state")
    await ensure_topics(kafka, [Topic(topic, "test", 1, 3_600_000, "compact")], replication=1)
    now = datetime.now(UTC)
    facts = [
        DestinationState(
            kind="disabled",
            destination="crm",
            disabled=True,
            reason="destination disabled (410 Gone)",
            replica="dispatcher-1",
            at=now,
        ),
        DestinationState(
            kind="circuit",
            destination="other",
            circuit="open",
            open_until=now + timedelta(minutes=5),
            replica="dispatcher-0",
            at=now,
        ),
    ]
    await produce(kafka, topic, [(f.key, f) for f in facts])

    states = DestinationStates()
    follower = asyncio.create_task(states.follow(kafka, topic))  # as the API's lifespan runs it
    try:
        await wait_for(lambda: states.error is None and "disabled/crm" in states.facts)
    finally:
        follower.cancel()
    files = {"destinations_file": str(ROOT / "examples" / "dispatcher" / "destinations.yaml")}
    async with console_for(store, states, console=files) as c:
        html = (await c.get("/console/conversations/held-call")).text
        agents = (await c.get("/console/agents")).text
    crm_row = agents.split("<code>crm</code>", 1)[1].split("</tr>", 1)[0]
    assert "disabled by 410" in crm_row
    panel = html.split('id="held-flows"', 1)[1].split("</div>", 1)[0]
    assert "1 flow(s) held" in panel and "crm-sync" in panel and "postcall held release --ids held-call" in panel
    state = html.split('id="destination-state"', 1)[1].split("</div>", 1)[0]
    assert "disabled by 410" in state and "postcall destinations enable crm" in state
    assert "rate limited" in state and "1 attempt(s) of this call" in state
    timeline = html.split(aid, 1)[1]
    assert '<td class="warn">deferred</td>' in timeline and '<td class="bad">dead_lettered</td>' in timeline
    assert "breaker open" not in state  # `other` is not one of this call's destinations
    assert "1 flow(s) held until an extraction succeeds" in html

    states.facts["circuit/crm"] = facts[1].model_copy(update={"destination": "crm"})
    async with console_for(store, states) as c:
        html = (await c.get("/console/conversations/held-call")).text
    assert "breaker open" in html.split('id="destination-state"', 1)[1]


async def test_agents_page_names_an_smtp_destinations_last_reply_as_smtp(store: Store) -> None:
    """An email destination's last attempt read "(HTTP 250)": it is the SMTP server's reply."""
    now = datetime.now(UTC)  # the page reads the last 7 days
    mail = result("act-mail", "mail-call", "delivered", status_code=250, kind="email", at=now)
    await writer.write(
        store,
        rows_of(
            [*story("mail-call", at=now), (ACTION_RESULTS, mail.model_copy(update={"destination": "support-email"}))]
        ),
    )
    files = {"destinations_file": str(ROOT / "examples" / "dispatcher" / "destinations.yaml")}
    async with console_for(store, console=files) as c:
        agents = (await c.get("/console/agents")).text
    row = agents.split("<code>support-email</code>", 1)[1].split("</tr>", 1)[0]
    assert "(SMTP 250)" in row and "HTTP" not in row
    assert "(HTTP 200)" in agents.split("<code>crm</code>", 1)[1].split("</tr>", 1)[0]


async def test_agents_page_counts_deferred_attempts_apart_from_failures(store: Store) -> None:
    """A delivery a rate limit held back is recorded as a failed attempt that was not made ("Deferred: ...");
    the agents page counted it as the destination failing: "ops-slack: delivered 45 failed 7" with no
    delivery having failed (walk24, 1/s behind 30 escalations)."""
    now = datetime.now(UTC)
    held = "Deferred: rate limit of destination crm reached"
    results = [
        result("act-a", "slack-call", "failed", 1, status_code=None, error=held, at=now),
        result("act-a", "slack-call", "delivered", 1, at=now + timedelta(seconds=5)),
        result("act-b", "slack-call", "failed", 1, status_code=503, error="HTTP 503: busy", at=now),
    ]
    await writer.write(store, rows_of([*story("slack-call", at=now), *((ACTION_RESULTS, r) for r in results)]))
    async with console_for(store) as c:
        agents = (await c.get("/console/agents")).text
    row = agents.split("<code>crm</code>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge warn">deferred 1</span>' in row
    assert '<span class="badge bad">failed 1</span>' in row, row


async def test_a_call_page_says_when_destination_state_cannot_be_read(store: Store) -> None:
    await writer.write(store, rows_of(story("plain-call")))
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/plain-call")).text
    state = html.split('id="destination-state"', 1)[1].split("</div>", 1)[0]
    assert "destination state not read yet" in state and "enabled" not in state


async def wait_for(check: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_an_unreachable_store_is_the_consoles_own_503_page_saying_so() -> None:
    """PostgreSQL down: every page was a 500 "Internal Server Error" (asyncpg's OSError), and a database error
    SQLAlchemy wraps was the API's JSON on a console page; htmx swapped neither into the page."""
    store = unreachable_store()
    try:
        async with console_for(store) as c:
            for path in ("conversations", "conversations/c1", "dead-letters", "tasks"):
                answer = await c.get(f"/console/{path}")
                assert answer.status_code == 503, (path, answer.status_code, answer.text[:200])
                assert answer.headers["content-type"].startswith("text/html"), answer.headers["content-type"]
                assert "<h1>Store unavailable</h1>" in answer.text and "unavailable; try again shortly" in answer.text
                assert "secret-pw" not in answer.text and "127.0.0.1" not in answer.text
            fragment = await c.get("/console/conversations", headers={"hx-request": "true", "hx-target": "results"})
            assert fragment.status_code == 503 and fragment.text.startswith('<p class="flash error" role="alert">')
            # the live list's poll keeps its row (htmx swaps no 204) and asks again: the page stays as it was
            poll = await c.get("/console/conversations/new", headers={"hx-request": "true"})
            assert poll.status_code == 204, poll.status_code
            assert (await c.get("/console/no-such-page")).status_code == 404  # its error page asks nobody's name
    finally:
        await store.engine.dispose()
