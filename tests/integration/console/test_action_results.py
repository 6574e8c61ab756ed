"""What a receiver named comes through to the people reading a call: an http action's result id and
the start of its answer, stored from the results topic (SQLite and PostgreSQL), in the query API's
view and on the call's timeline, escaped."""

from __future__ import annotations

import pytest

from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, DECISIONS
from services.api import auth
from services.store import queries, writer
from services.store.db import Store
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
