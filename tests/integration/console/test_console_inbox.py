"""Tasks and team alerts: every one the router asked for is kept (from the action topics' records); the
console shows an inbox of tasks (priority, assignee, mark done, open the call) and an alert feed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from schemas.events import TaskRequested, TeamAlertRequested, WebhookRequested
from schemas.topics import action_topic
from services.api import auth
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from tests.integration.console.conftest import console_for, create_token, csrf_of, login, post
from tests.support.calls import T0, action_id, rows_of, story


def common(cid: str, index: int, minutes: int = 0) -> dict[str, object]:
    return {
        "action_id": f"{cid}-a{index}",
        "conversation_id": cid,
        "agent_id": "support-line",
        "flow_id": "callback",
        "action_index": index,
        "config_revision": "rev-1",
        "requested_at": T0 + timedelta(minutes=minutes),
        "source_event_id": f"x-{cid}",
    }


async def seed(store: Store) -> None:
    rows = rows_of(story("c1") + story("c2"))
    actions = [
        TaskRequested(**common("c1", 0), title="Call back <Tom>", priority="High", description="asked twice"),
        TaskRequested(**common("c2", 0, 1), title="Send the quote", priority="Low"),
        TeamAlertRequested(
            **common("c1", 1, 2), message="Complaint from <b>Tom</b>", everyone=False, teammates=["dana"]
        ),
        TeamAlertRequested(**common("c2", 1, 3), message="Escalation for everyone"),
        WebhookRequested(**common("c1", 2, 4), destination="crm", body={"status": "closed"}),
    ]
    for offset, action in enumerate(actions):
        rows.extend(r.requested(action, r.Source(action_topic(action.type), 0, offset, 0)))
        rows.extend(r.requested(action, r.Source(action_topic(action.type), 0, offset, 0)))  # read twice: one row
    await writer.write(store, rows)


async def test_the_task_inbox_filters_marks_done_and_assigns(store: Store) -> None:
    await seed(store)
    token = await create_token(store, "olivia", "operator")
    async with console_for(store) as c:
        await login(c, token)
        inbox = (await c.get("/console/tasks")).text
        assert inbox.count("open the call") == 2 and "Call back &lt;Tom&gt;" in inbox
        assert 'href="/console/conversations/c1"' in inbox
        high = (await c.get("/console/tasks", params={"priority": "High"})).text
        assert "Call back" in high and "Send the quote" not in high
        assigned = await post(c, "/console/tasks/assign", "/console/tasks", {"action_id": "c2-a0", "assignee": "me"})
        assert assigned.status_code == 200 and "olivia" in assigned.text
        mine = (await c.get("/console/tasks", params={"assignee": "me"})).text
        assert "Send the quote" in mine and "Call back" not in mine
        done = await post(c, "/console/tasks/done", "/console/tasks", {"action_id": "c1-a0"})
        assert done.status_code == 200 and "done" in done.text and "by olivia" in done.text
        still_open = (await c.get("/console/tasks")).text
        assert "Call back" not in still_open and "Send the quote" in still_open
        assert "Call back" in (await c.get("/console/tasks", params={"state": "done"})).text
        missing = await post(c, "/console/tasks/done", "/console/tasks", {"action_id": "nope"})
        assert missing.status_code == 404
        audit = (await c.get("/api/v1/audit", headers={"authorization": f"Bearer {token}"})).json()["items"]
    assert [a["action"] for a in audit] == ["task_done", "task_assign"]


async def test_a_task_done_or_taken_by_another_operator_is_not_taken_over_by_a_stale_page(store: Store) -> None:
    """Two operators on the same inbox: the second click (its page still shows the task open and unassigned)
    silently replaced who did the task and who owns it; the first operator's row said otherwise."""
    await seed(store)
    olivia, bob = await create_token(store, "olivia", "operator"), await create_token(store, "bob", "operator")
    async with console_for(store) as first, console_for(store) as second:
        await login(first, olivia)
        await login(second, bob)
        stale = (await second.get("/console/tasks")).text
        assert (await post(first, "/console/tasks/done", "/console/tasks", {"action_id": "c1-a0"})).status_code == 200
        form = {"assignee": "me", "action_id": "c2-a0"}
        assert (await post(first, "/console/tasks/assign", "/console/tasks", form)).status_code == 200
        done = await second.post("/console/tasks/done", data={"csrf_token": csrf_of(stale), "action_id": "c1-a0"})
        taken = await second.post("/console/tasks/assign", data={"csrf_token": csrf_of(stale), **form})
        assert done.status_code == 409 and "already done by olivia" in done.text
        assert taken.status_code == 409 and "already assigned to olivia" in taken.text
        rows = (await first.get("/console/tasks", params={"state": "all"})).text
        audit = (await first.get("/api/v1/audit", headers={"authorization": f"Bearer {olivia}"})).json()["items"]
    assert "by olivia" in rows and "by bob" not in rows and "<td>bob</td>" not in rows
    assert [a["actor"] for a in audit] == ["olivia", "olivia"]


async def test_a_malformed_cursor_is_named_in_the_consoles_page_not_the_apis_json(store: Store) -> None:
    await seed(store)
    async with console_for(store) as c:
        for path in ("/console/tasks", "/console/alerts"):
            answer = await c.get(path, params={"cursor": "not-a-cursor"})
            assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
            assert "malformed cursor" in answer.text and "<h1>Bad request</h1>" in answer.text


async def test_an_unknown_state_or_priority_is_named_not_ignored(store: Store) -> None:
    """?priority=urgent (not Urgent) or ?state=closed listed every task, as if no filter had been asked for,
    with the form showing "any": a mistyped or hand-made link silently showed other tasks than it asked."""
    await seed(store)
    async with console_for(store) as c:
        for params, named in [
            ({"priority": "urgent"}, "unknown priority 'urgent' (Urgent, High, Medium, Low)"),
            ({"state": "closed"}, "unknown state 'closed' (open, done, all)"),
        ]:
            answer = await c.get("/console/tasks", params=params)
            assert answer.status_code == 400, (params, answer.status_code)
            assert named in answer.text.replace("&#39;", "'"), answer.text[-400:]
        assert (await c.get("/console/tasks", params={"state": "all", "priority": "Low"})).status_code == 200


async def test_a_nul_in_the_inbox_filter_or_forms_is_no_503(store: Store) -> None:
    """PostgreSQL refuses NUL in a text parameter: the assignee filter and the forms' action id and assignee
    passed it through, and the refusal was answered 503 "the store is unavailable" (SQLite: nothing matched)."""
    await seed(store)
    token = await create_token(store, "olivia", "operator")
    async with console_for(store) as c:
        await login(c, token)
        inbox = await c.get("/console/tasks", params={"assignee": "oli\x00via"})
        assert inbox.status_code == 200 and "open the call" not in inbox.text
        missing = await post(c, "/console/tasks/done", "/console/tasks", {"action_id": "c1-a0\x00"})
        assert missing.status_code == 404
        assigned = await post(
            c, "/console/tasks/assign", "/console/tasks", {"action_id": "c2-a0", "assignee": "a\x00b"}
        )
        assert assigned.status_code == 200 and "a\ufffdb" in assigned.text


async def test_a_viewer_sees_tasks_but_cannot_change_them(store: Store) -> None:
    await seed(store)
    token = await create_token(store, "victor", "viewer")
    async with console_for(store) as c:
        await login(c, token)
        inbox = (await c.get("/console/tasks")).text
        assert "Mark done" not in inbox
        refused = await post(c, "/console/tasks/done", "/console/tasks", {"action_id": "c1-a0"})
        assert refused.status_code == 403


async def test_a_task_the_flow_assigned_is_in_its_assignees_inbox_and_not_offered_to_others(store: Store) -> None:
    """TaskRequested.assignee (the flow's task action names it): the row starts assigned; a second read of
    the record does not undo an assignment made in the console since."""
    task = TaskRequested(**common("c1", 0), title="Call back <Tom>", priority="High", assignee="dana")
    loose = TaskRequested(**common("c2", 0, 1), title="Send the quote", priority="Low")
    rows = rows_of(story("c1") + story("c2"))
    for offset, action in enumerate((task, loose)):
        rows.extend(r.requested(action, r.Source(action_topic(action.type), 0, offset, 0)))
    await writer.write(store, rows)
    dana = await create_token(store, "dana", "operator")
    olivia = await create_token(store, "olivia", "operator")
    async with console_for(store) as c:
        await login(c, dana)
        mine = (await c.get("/console/tasks", params={"assignee": "me"})).text
        assert "Call back &lt;Tom&gt;" in mine and "Send the quote" not in mine
        unassigned = (await c.get("/console/tasks", params={"assignee": "none"})).text
        assert "Send the quote" in unassigned and "Call back" not in unassigned
    async with console_for(store) as c:
        await login(c, olivia)
        taken = await post(c, "/console/tasks/assign", "/console/tasks", {"action_id": "c1-a0", "assignee": "me"})
        assert taken.status_code == 409 and "already assigned to dana" in taken.text
        assigned = await post(c, "/console/tasks/assign", "/console/tasks", {"action_id": "c2-a0", "assignee": "me"})
        assert assigned.status_code == 200
    again = r.requested(loose, r.Source(action_topic(loose.type), 0, 1, 0))  # the recorder reads it again
    await writer.write(store, again)
    async with console_for(store) as c:
        await login(c, olivia)
        assert "Send the quote" in (await c.get("/console/tasks", params={"assignee": "me"})).text


async def test_the_alert_feed_for_everyone_or_for_me(store: Store) -> None:
    await seed(store)
    dana = await create_token(store, "dana", "viewer")
    sam = await create_token(store, "sam", "viewer")
    async with console_for(store) as c:
        await login(c, dana)
        feed = (await c.get("/console/alerts")).text
        assert feed.index("Escalation for everyone") < feed.index("Complaint from &lt;b&gt;Tom&lt;/b&gt;")
        assert "for dana" in feed and "<b>Tom" not in feed
        assert "Complaint" in (await c.get("/console/alerts", params={"mine": "1"})).text
    async with console_for(store) as c:
        await login(c, sam)
        mine = (await c.get("/console/alerts", params={"mine": "1"})).text
        assert "Escalation for everyone" in mine and "Complaint" not in mine


async def test_my_alerts_match_my_name_exactly_on_both_databases(store: Store) -> None:
    """The feed's "for me" finds my name in the alert's teammates with LIKE, which SQLite compares without
    case (ASCII): "DANA"'s alert was dana's there, and not on PostgreSQL (as a task's assignee is on both)."""
    alert = TeamAlertRequested(**common("c1", 1, 2), message="Shouted", everyone=False, teammates=["DANA"])
    rows = rows_of(story("c1"))
    rows.extend(r.requested(alert, r.Source(action_topic(alert.type), 0, 0, 0)))
    await writer.write(store, rows)
    dana = await create_token(store, "dana", "viewer")
    async with console_for(store) as c:
        await login(c, dana)
        assert "Shouted" in (await c.get("/console/alerts")).text
        assert "Shouted" not in (await c.get("/console/alerts", params={"mine": "1"})).text


async def test_the_timeline_shows_each_actions_rendered_payload(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "OPEN_MODE_RECHECK_SECONDS", 0.0)
    await seed(store)
    webhook = WebhookRequested(
        **{**common("c1", 0), "action_id": action_id("c1", "crm-sync", 0), "flow_id": "crm-sync"},
        destination="crm",
        body={"status": "closed <now>"},
    )
    await writer.write(store, r.requested(webhook, r.Source(action_topic("webhook"), 0, 99, 0)))
    async with console_for(store) as c:
        html = (await c.get("/console/conversations/c1")).text
    [payload] = re.findall(r'<pre class="payload">(.*?)</pre>', html, re.S)
    assert action_id("c1", "crm-sync", 0) in payload and "closed &lt;now&gt;" in payload


async def test_a_refused_task_change_is_shown_beside_its_row_and_the_row_stays(store: Store) -> None:
    """The console swaps a 4xx answer's error fragment into the page (b8bfbd3); the row's buttons aimed at
    the row itself, so a refusal (here the task is gone) replaced the row with the error until a reload.
    The buttons aim at the row's error slot; a change that succeeds retargets to the whole row."""
    await seed(store)
    token = await create_token(store, "olivia", "operator")
    async with console_for(store) as c:
        await login(c, token)
        inbox = (await c.get("/console/tasks")).text
        row = next(tr for tr in re.findall(r"<tr>.*?</tr>", inbox, re.S) if 'value="c1-a0"' in tr)
        assert re.findall(r'hx-target="([^"]*)" hx-swap="([^"]*)"', row) == [("next .row-error", "innerHTML")] * 2
        assert row.rindex("</form>") < row.index('<div class="row-error"></div>'), "the slot follows both buttons"
        hx = {"hx-request": "true"}
        csrf = {"csrf_token": csrf_of(inbox)}
        gone = await c.post("/console/tasks/done", data={**csrf, "action_id": "nope"}, headers=hx)
        assert gone.status_code == 404 and 'role="alert"' in gone.text
        assert "HX-Retarget" not in gone.headers, "the refusal goes to the slot the button aims at"
        done = await c.post("/console/tasks/done", data={**csrf, "action_id": "c1-a0"}, headers=hx)
        assert done.status_code == 200 and "by olivia" in done.text
        assert (done.headers["HX-Retarget"], done.headers["HX-Reswap"]) == ("closest tr", "outerHTML")
        assert done.text.strip().startswith("<tr>") and done.text.strip().endswith("</tr>")
