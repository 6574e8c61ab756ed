"""What a receiver named comes through to the people reading a call: an http action's result id and
the start of its answer, stored from the results topic (SQLite and PostgreSQL), in the query API's
view and on the call's timeline, escaped."""

from __future__ import annotations

import pytest

from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, DECISIONS
from services.api import auth
from services.store import queries, writer
from services.store.db import Store
from tests.integration.api.conftest import client_for
from tests.integration.console.conftest import console_for
from tests.support.calls import action_id, ended, result, rows_of, trace


@pytest.fixture(autouse=True)
def open_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)


async def test_the_result_id_and_the_answer_are_stored_and_shown_escaped(store: Store) -> None:
    event = ended("c-crm")
    aid = action_id("c-crm", "update-case")
    done = result(aid, "c-crm", "delivered", 1, kind="http").model_copy(
        update={"result_id": "4471", "response_excerpt": '{"case":{"id":"4471","note":"<b>done</b>"}}'}
    )
    records = [(CONVERSATION_ENDED, event), (DECISIONS, trace(event, [("update-case", True, ["http"])]))]
    await writer.write(store, rows_of([*records, (ACTION_RESULTS, done)]))
    async with store.read() as conn:
        detail = await queries.get_conversation(conn, "c-crm")
    assert detail is not None
    [attempt] = detail.actions[0].attempts
    assert (attempt.result_id, attempt.response_excerpt) == ("4471", done.response_excerpt)
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/c-crm")).text
    assert '<span class="dim">id</span> <code>4471</code>' in html
    assert "&lt;b&gt;done&lt;/b&gt;" in html and "<b>done</b>" not in html


async def test_a_retried_action_shows_the_id_only_on_the_attempt_the_receiver_answered(store: Store) -> None:
    """The first attempt failed (no id), the second created case 4472: the API and the page say which."""
    event = ended("c-retry")
    aid = action_id("c-retry", "update-case")
    failed = result(aid, "c-retry", "failed", 1, status_code=503, error="HTTP 503: busy", kind="http")
    done = result(aid, "c-retry", "delivered", 2, kind="http").model_copy(
        update={"result_id": "4472", "response_excerpt": '{"id":"4472"}'}
    )
    records = [(CONVERSATION_ENDED, event), (DECISIONS, trace(event, [("update-case", True, ["http"])]))]
    await writer.write(store, rows_of([*records, (ACTION_RESULTS, failed), (ACTION_RESULTS, done)]))
    async with client_for(store) as api:
        detail = (await api.get("/api/v1/conversations/c-retry")).json()
    (action,) = detail["actions"]
    assert action["final_outcome"] == "delivered"
    assert [(a["attempt"], a["status_code"], a["result_id"]) for a in action["attempts"]] == [
        (1, 503, None),
        (2, 200, "4472"),
    ]
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/c-retry")).text
    assert html.count('<span class="dim">id</span>') == 1
    assert '<span class="dim">id</span> <code>4472</code>' in html


async def test_a_hostile_result_id_is_text_on_the_page_never_markup(store: Store) -> None:
    """The id is whatever the receiver's JSON held at the pointer: the page treats it as untrusted text."""
    event = ended("c-hostile")
    aid = action_id("c-hostile", "update-case")
    hostile = '<img src=x onerror="alert(1)">' + "9" * 200
    done = result(aid, "c-hostile", "delivered", 1, kind="http").model_copy(update={"result_id": hostile})
    records = [(CONVERSATION_ENDED, event), (DECISIONS, trace(event, [("update-case", True, ["http"])]))]
    await writer.write(store, rows_of([*records, (ACTION_RESULTS, done)]))
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/c-hostile")).text
    assert "<img src=x" not in html and 'onerror="alert' not in html
    assert '<span class="dim">id</span> <code>&lt;img src=x onerror=&#34;alert(1)&#34;&gt;999' in html
    assert "9" * 200 not in html  # cut on the page; the API keeps it whole
    async with client_for(store) as api:
        detail = (await api.get("/api/v1/conversations/c-hostile")).json()
    assert detail["actions"][0]["attempts"][0]["result_id"] == hostile
