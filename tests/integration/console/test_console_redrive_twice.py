"""A dead letter's page redrives that letter as the page showed it, and a call's page re-extracts that call as
it showed it: a second click on the same page, or the same letter or call open in a second tab or by a second
operator, once the first redrive or re-extraction is over, sends nothing."""

from __future__ import annotations

import re

import httpx

from schemas import headers as h
from schemas.topics import CONVERSATION_ENDED, Topic
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from tests.integration.console.conftest import console_for
from tests.support.calls import T0, rows_of, story
from tests.support.kafka import create_topics, read_all, unique

HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def redrive_form(html: str) -> dict[str, str]:
    """The fields the letter page's redrive form posts: its hidden inputs and its button's value."""
    form = html.split('action="/console/operations/redrive"', 1)[1].split("</form>", 1)[0]
    return {**dict(HIDDEN.findall(form)), "dry_run": "0"}


async def test_a_letters_page_redrives_it_once_however_often_its_button_is_pressed(
    store: Store, kafka: KafkaSettings
) -> None:
    """The page's form chose the letter by id in every state (so that a redriven one can be redriven again on
    purpose): a click after the first redrive was over, from the same page or another tab that still showed
    it pending, sent it again (the claim compared it with the store as the second request read it)."""
    main, dlq = unique("main"), unique("dlq")
    await create_topics(kafka, [main, dlq])
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: "PermanentError: bug"}
    await writer.write(
        store, r.dead_letter(r.Source(dlq, 0, 0, int(T0.timestamp() * 1000)), "router", b"k", b"{}", headers)
    )
    settings = {"kafka": {"bootstrap_servers": kafka.bootstrap_servers}}
    async with console_for(store, **settings) as c:
        listing = (await c.get("/console/dead-letters")).text
        letter = re.search(r'href="/console/dead-letters/(\d+)"', listing)
        assert letter is not None
        pending = redrive_form((await c.get(f"/console/dead-letters/{letter.group(1)}")).text)
        first = await c.post("/console/operations/redrive", data=pending)
        again = await c.post("/console/operations/redrive", data=pending)  # the same page, or a second tab
        redriven = (await c.get(f"/console/dead-letters/{letter.group(1)}")).text
        assert "redriven" in redriven and "by local" in redriven
        on_purpose = await c.post("/console/operations/redrive", data=redrive_form(redriven))
        garbled = await c.post("/console/operations/redrive", data={**pending, "seen": "<b>yesterday</b>"})
    assert first.status_code == 200 and "1 dead letter(s) redriven" in first.text, first.text
    assert again.status_code == 200 and "0 dead letter(s) redriven" in again.text, again.text
    assert "1 left alone" in again.text
    assert on_purpose.status_code == 200 and "1 dead letter(s) redriven" in on_purpose.text, on_purpose.text
    assert garbled.status_code == 400 and "&lt;b&gt;yesterday&lt;/b&gt;" in garbled.text, garbled.text
    assert len(await read_all(kafka, main, expect=2, timeout=10)) == 2  # the first click and the one on purpose


def reextract_form(html: str) -> dict[str, str]:
    """The fields a call page's Re-extract form posts (its hidden inputs)."""
    form = html.split('action="/console/operations/reextract"', 1)[1].split("</form>", 1)[0]
    return dict(HIDDEN.findall(form))


async def test_a_calls_page_re_extracts_it_once_however_often_its_button_is_pressed(
    store: Store, kafka: KafkaSettings
) -> None:
    """Re-extract sent the call whatever the store held: a click after the first re-extraction was sent, from
    the same page or a second tab, sent it again, an LLM call each (the redrive had its guard, this had none).
    The form now carries when the call was last re-extracted as the page showed it; a re-extraction that was
    not sent (Kafka down) leaves the call as it was, so the same page's next click sends it."""
    await ensure_topics(kafka, [Topic(CONVERSATION_ENDED, "test", 3, 3_600_000)], replication=1)
    cid = unique("call")
    await writer.write(store, rows_of(story(cid)))
    async with console_for(store, kafka={"bootstrap_servers": "127.0.0.1:1"}) as down:
        before = reextract_form((await down.get(f"/console/conversations/{cid}")).text)
        refused = await down.post("/console/operations/reextract", data=before)
    settings = {"kafka": {"bootstrap_servers": kafka.bootstrap_servers}}
    async with console_for(store, **settings) as c:
        shown = reextract_form((await c.get(f"/console/conversations/{cid}")).text)
        first = await c.post("/console/operations/reextract", data=shown)
        again = await c.post("/console/operations/reextract", data=shown)  # the same page, or a second tab
        reloaded = (await c.get(f"/console/conversations/{cid}")).text
        on_purpose = await c.post("/console/operations/reextract", data=reextract_form(reloaded))
        garbled = await c.post("/console/operations/reextract", data={**shown, "seen": "<b>yesterday</b>"})
    assert refused.status_code == 503 and "0 of 1 conversation(s)" in refused.text, refused.text
    assert first.status_code == 200 and "1 conversation(s) sent for extraction again" in first.text, first.text
    assert again.status_code == 200 and "0 conversation(s) sent for extraction again" in again.text, again.text
    assert "1 left alone: sent for extraction again since this page was shown" in again.text
    assert "Last sent for extraction again" in reloaded and "by <bdi>local</bdi>" in reloaded
    assert on_purpose.status_code == 200 and "1 conversation(s) sent" in on_purpose.text, on_purpose.text
    assert garbled.status_code == 400 and "&lt;b&gt;yesterday&lt;/b&gt;" in garbled.text, garbled.text
    copies = [x for x in await read_all(kafka, CONVERSATION_ENDED) if x.key == cid]
    assert len(copies) == 2  # the first click and the one on purpose
    assert before.get("seen") == shown.get("seen") == "never"  # the one Kafka refused left the call as it was


async def test_an_operation_the_api_was_asked_to_stop_before_says_so_and_leaves_the_call_as_it_was(
    store: Store, kafka: KafkaSettings
) -> None:
    """The console's operations stop as the API's do when the server is asked to exit (app.state.stopping):
    the fragment says what was sent and why it stopped (it said "before Kafka failed" for every error)."""
    cid = unique("call")
    await writer.write(store, rows_of(story(cid)))
    settings = {"database": {"url": "sqlite://"}, "kafka": {"bootstrap_servers": kafka.bootstrap_servers}}
    app = create_app(ApiSettings.model_validate(settings), store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        shown = reextract_form((await c.get(f"/console/conversations/{cid}")).text)
        app.state.stopping.set()
        stopped = await c.post("/console/operations/reextract", data=shown)
        after = reextract_form((await c.get(f"/console/conversations/{cid}")).text)
    assert stopped.status_code == 503, stopped.text
    assert "0 of 1 conversation(s) sent for extraction again, then it stopped: the API is shutting down" in stopped.text
    assert after.get("seen") == "never"  # not marked re-extracted: it was not sent
