"""The console in a real browser: Debian's headless Chromium (Playwright) against the query API served by
uvicorn on 127.0.0.1, over a real store. Log in, find a call by filter, open its timeline, see an
evidence quote highlighted, hostile text shown as text, run "try a flow" on an edited configuration, and
a viewer who cannot redrive. Screenshots go to docs/console/ with `make screenshots` (docs/console.md)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Page, expect
from sqlalchemy import delete, func, select

from schemas.events import ConversationEnded, TaskRequested
from schemas.topics import CONVERSATION_ENDED, CONVERSATION_EXTRACTED, action_topic
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.devkit.kafka import free_port
from services.store import rows as r
from services.store import writer
from services.store.db import Store
from services.store.models import AuditEntry, Task, table
from services.store.settings import DatabaseSettings
from tests.hostile.corpus import SCRIPT, cases
from tests.integration.console.conftest import AGENTS, ROOT, create_token
from tests.support.browser import PHONE, chromium, needs_chromium, screenshot
from tests.support.calls import T0, ended, extracted, rows_of, story

pytestmark = needs_chromium
EXAMPLE = ROOT / "examples" / "conversations" / "0005-callback-request.json"


@dataclass
class Served:
    url: str
    store: Store
    operator: str
    viewer: str
    agents: Path  # a copy of examples/agents: the folder the console reads, which a test may change


async def seed(store: Store) -> None:
    records: list[tuple[str, Any]] = []
    for i in range(12):
        records += story(f"call-{i:02d}", at=T0 + timedelta(minutes=i), customer=f"Customer {i}")
    callback = ConversationEnded.model_validate_json(EXAMPLE.read_bytes())
    records += [(CONVERSATION_ENDED, callback), (CONVERSATION_EXTRACTED, extracted(callback))]
    hostile = ConversationEnded.model_validate_json(next(c.value for c in cases() if c.key == "hostile-script"))
    records += [(CONVERSATION_ENDED, hostile), (CONVERSATION_EXTRACTED, extracted(hostile))]
    special = ended("evidence-call", at=T0 + timedelta(hours=2), customer="Rosa Evidence")
    records += [(CONVERSATION_ENDED, special), (CONVERSATION_EXTRACTED, extracted(special))]
    rows = rows_of(records)
    source = r.Source("postcall.dispatcher.dlq.v1", 0, 3, int(T0.timestamp() * 1000))
    rows.extend(r.dead_letter(source, "dispatcher", b"call-03", b'{"action_id": "a"}', {}))
    await writer.write(store, rows)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    port = free_port()
    agents = shutil.copytree(AGENTS, tmp_path / "agents")
    settings = ApiSettings.model_validate(
        {
            "database": {"url": url},
            "api": {"port": port},
            # no broker here: the destination-state panel is covered by test_console_pages.py
            "console": {"config_dir": str(agents), "refresh_seconds": 1, "destination_state": False},
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},  # nothing listens: an operation's send fails at once
        }
    )
    async with Store.open(DatabaseSettings(url=url), writer=True) as store:
        await seed(store)
        operator, viewer = (
            await create_token(store, "olivia", "operator"),
            await create_token(store, "victor", "viewer"),
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, store=store), host="127.0.0.1", port=port, log_config=None)
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            yield Served(f"http://127.0.0.1:{port}", store, operator, viewer, agents)
        finally:
            server.should_exit = True
            await task


async def log_in(page: Page, served: Served, token: str) -> None:
    await page.goto(served.url + "/console/conversations")
    await expect(page).to_have_url(f"{served.url}/console/login?next=/console/conversations")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(served.url + "/console/conversations")


async def test_log_in_find_a_call_by_filter_and_see_its_evidence_highlighted(served: Served) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        await expect(page.get_by_text("olivia")).to_be_visible()
        await screenshot(page, "conversations")
        await page.get_by_label("Search").fill("rosa")
        await page.get_by_role("button", name="Filter").click()
        rows = page.locator("table.nav-rows tbody tr[data-href]")
        await expect(rows).to_have_count(1)
        await expect(page).to_have_url(re.compile(r"/console/conversations\?q=rosa&.*tz=America%2FChicago"))
        ended_at = rows.first.locator("time")
        await expect(ended_at).to_contain_text("06:00:00 AM CDT")  # 11:00 UTC in the viewer's zone
        await rows.first.get_by_role("link").click()
        await expect(page.get_by_role("heading", name="Call evidence-call")).to_be_visible()
        value = page.locator("button.evidence").first
        mark = page.locator("section.transcript mark.ev").first
        await expect(mark).not_to_have_class("ev hl")
        await value.click()
        await expect(mark).to_have_class("ev hl")
        await expect(mark).to_have_text("Please call me back tomorrow.")
        background = await mark.evaluate("m => getComputedStyle(m).backgroundColor")
        assert background not in ("rgba(0, 0, 0, 0)", "transparent")
        await screenshot(page, "timeline", full_page=True)


async def test_back_and_forward_after_a_filter_reload_the_pages_and_keep_no_copy_of_them_in_the_tab(
    served: Served,
) -> None:
    """Pages are Cache-Control: no-store; htmx's history cache kept a copy of each page a filter left
    (customers' names and numbers, the CSRF token) in the tab's sessionStorage, after logout too."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        rows = page.locator("table.nav-rows tbody tr[data-href]")
        await expect(rows).to_have_count(15)
        await page.get_by_label("Search").fill("rosa")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await expect(page).to_have_url(re.compile(r"q=rosa"))
        for back in (True, False):
            await (page.go_back() if back else page.go_forward())
            await expect(rows).to_have_count(15 if back else 1)
            await expect(rows.first.locator("time")).to_contain_text("CDT")  # console.js ran on the page
            await expect(page.locator("input[name=tz]")).to_have_value("America/Chicago")
        stored = await page.evaluate("JSON.stringify(Object.values(sessionStorage))")
        assert "Customer" not in stored and "Rosa" not in stored and "csrf" not in stored.lower()


async def test_hostile_transcripts_render_as_text_in_the_browser(served: Served) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await log_in(page, served, served.viewer)
        await page.goto(served.url + "/console/conversations/hostile-script")
        transcript = page.locator("section.transcript")
        await expect(transcript).to_contain_text("<script>document.title='pwned'</script>")
        await expect(transcript).to_contain_text("<img src=x onerror=\"document.title='pwned'\">")
        assert await transcript.locator("script, img, b, svg").count() == 0
        await page.goto(served.url + "/console/conversations")
        await expect(page.get_by_text("<svg onload=alert(1)>Mallory")).to_be_visible()
        assert await page.locator("main svg").count() == 0
        await page.wait_for_timeout(300)
        assert await page.title() != "pwned" and dialogs == []
        assert SCRIPT.startswith("<script>")


async def test_no_page_breaks_its_own_content_security_policy(served: Served) -> None:
    """style-src 'self' refuses style="..." attributes: the browser dropped a layout the templates asked for
    (the redrive form's explanation squeezed between its inputs, panels without their margins)."""
    async with chromium() as browser:
        page = await browser.new_page()
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        await log_in(page, served, served.operator)
        for path in ("conversations", "conversations/call-01", "dead-letters", "agents"):
            await page.goto(f"{served.url}/console/{path}")
            await expect(page.locator("h1")).to_be_visible()
        await page.goto(served.url + "/console/try?conversation_id=call-01")
        await page.get_by_role("button", name="Run the dry run").click()
        await expect(page.locator("#try-result details").first).to_be_visible(timeout=60_000)
        explained = page.locator("#redrive p")
        await page.goto(served.url + "/console/dead-letters")
        width = await explained.evaluate("p => p.getBoundingClientRect().width / p.parentElement.clientWidth")
        assert width > 0.9  # a line of its own above the inputs
        assert refused == []


# whether an element's first character is drawn left of its last one
LEFT_TO_RIGHT = """s => { const text = s.firstChild, range = document.createRange();
    const left = i => { range.setStart(text, i); range.setEnd(text, i + 1);
                        return range.getBoundingClientRect().left; };
    return left(0) < left(text.length - 1); }"""


async def test_a_right_to_left_override_in_a_callers_name_does_not_reverse_the_number_beside_it(served: Served) -> None:
    """An unclosed U+202E in the customer's (or agent's) name turned the rest of its line around: the page
    showed the number +16305550123 as 32105550361+, and the agent's id backwards."""
    event = ended("rlo-call", at=T0 + timedelta(hours=3), customer="Ana \u202e")
    event = event.model_copy(update={"agent": event.agent.model_copy(update={"name": "Sales \u202e"})})
    await writer.write(served.store, rows_of([(CONVERSATION_ENDED, event)]))
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)
        await page.goto(served.url + "/console/conversations/rlo-call")
        number = page.locator("dd span.dim", has_text="+16305550123")
        agent = page.locator("dd span.dim", has_text="(support-line v3)")
        assert await number.evaluate(LEFT_TO_RIGHT) and await agent.evaluate(LEFT_TO_RIGHT)
        await page.goto(served.url + "/console/conversations")
        version = page.locator("tr", has_text="Sales").locator("span.dim", has_text="v3")
        assert await version.evaluate(LEFT_TO_RIGHT)


async def test_the_agents_page_shows_a_file_invalid_since_the_console_first_read_it_as_broken_and_why(
    served: Served,
) -> None:
    """It said only "not loaded" in the file's section (walk24), as if nothing were wrong with it."""
    (served.agents / "new-line.yaml").write_text("agent: new-line\nflows:\n  - id: x\n    actions: [{type: webhok}]\n")
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)
        await page.goto(served.url + "/console/agents")
        section = page.locator("section.file", has=page.get_by_role("heading", name="new-line.yaml"))
        await expect(section.get_by_role("heading")).to_contain_text("broken")
        await expect(section.get_by_role("listitem")).to_contain_text(
            "new-line.yaml:4: flows[0].actions[0]: unknown action type 'webhok'"
        )
        await expect(section).to_contain_text("still serves its last good revision")
        await expect(page.get_by_text("not loaded")).to_have_count(0)


async def test_try_a_flow_on_an_edited_configuration(served: Served) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)  # a dry run has no side effect: viewers may try
        await page.get_by_role("link", name="Try a flow").click()
        await page.get_by_label("Paste a ConversationEnded").check()
        await page.get_by_label("Pasted payload").fill(EXAMPLE.read_text())
        await page.get_by_label("This file, edited:").check()
        await page.get_by_label("File to edit").select_option("support-line.yaml")
        box = page.get_by_label("Configuration file")
        await expect(box).to_contain_text("crm-case-update")
        text = await box.input_value()
        await box.fill(
            text + '  - id: tried-in-the-browser\n    draft: true\n    when: {ai: "Did the customer ask to be '
            'called back, request a follow-up call, or ask for someone to contact them later?"}\n'
            "    actions: [{type: task, priority: Urgent, title: 'Ring {{customer_number}} back'}]\n"
        )
        await page.get_by_role("button", name="Run the dry run").click()
        result = page.locator("#try-result")
        await expect(result).to_contain_text("nothing was produced or sent", timeout=60_000)
        tried = result.locator("details", has_text="tried-in-the-browser")
        await expect(tried).to_contain_text("would fire")
        await expect(tried.locator("pre.payload")).to_contain_text('"title": "Ring +16305550123 back"')
        await screenshot(page, "try-a-flow", full_page=True)


async def test_a_refused_dry_run_shows_why_in_the_page(served: Served) -> None:
    """htmx 2 swaps no 4xx answer by default: the console's error fragment (here a 404; a 400, or the 429
    of a full queue, alike) used to be dropped, and the button seemed to do nothing."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)
        await page.goto(served.url + "/console/try")
        await page.get_by_label("A stored call:").check()
        await page.get_by_label("Conversation id").fill("no-such-call")
        await page.get_by_role("button", name="Run the dry run").click()
        alert = page.locator("#try-result").get_by_role("alert")
        await expect(alert).to_have_text("Not found: no stored event for conversation 'no-such-call'", timeout=10_000)


async def test_an_invalid_events_problems_show_one_a_line(served: Served) -> None:
    """The problems of an invalid pasted event came as one line of text (a <p> collapses line breaks)."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)
        await page.goto(served.url + "/console/try")
        await page.get_by_label("Paste a ConversationEnded").check()
        await page.get_by_label("Pasted payload").fill('{"event_id": "e1", "conversation_id": "c1"}')
        await page.get_by_role("button", name="Run the dry run").click()
        alert = page.locator("#try-result").get_by_role("alert")
        await expect(alert).to_contain_text("not a valid ConversationEnded", timeout=60_000)
        lines = (await alert.inner_text()).splitlines()
        assert lines[0] == "not a valid ConversationEnded:" and "  account: Field required" in lines, lines


async def test_a_double_click_on_an_operators_button_sends_one_request(served: Served) -> None:
    """htmx queues a form's second submit behind its first: a double-click re-extracted a call twice, redrove
    a dead letter twice (its page chooses it whether redriven or not), and made Mark done answer 409.

    hx-sync="this:drop" alone dropped the second click only while the first request was in flight: a dry run
    answers in milliseconds, so a double-click whose second press came after the answer sent it again (CI's
    run of d52b801). Here the second press comes only once the first answer is shown, whatever the load (a
    second press timed by a delay came while a slow answer was in flight, and hx-sync dropped it with or
    without the fix). Separate clicks and Enter still send each time."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        await page.goto(served.url + "/console/dead-letters")
        button = page.get_by_role("button", name="Dry run: count")
        box = await button.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down(click_count=1)
        await page.mouse.up(click_count=1)
        await expect(page.locator("#redrive-result")).to_contain_text("Nothing was sent")
        await page.mouse.down(click_count=2)  # the second press of the double-click: its click's detail is 2
        await page.mouse.up(click_count=2)
        await page.wait_for_timeout(500)
        assert posts == [served.url + "/console/operations/redrive"]
        async with served.store.read() as conn:
            audited = await conn.execute(select(func.count()).where(AuditEntry.action == "replay"))
        assert audited.scalar_one() == 1
        # a later, separate click sends, and so does each keyboard press (detail 0); each once its answer is in
        for key in (None, "Enter", "Enter"):
            async with page.expect_response(lambda r: r.request.method == "POST"):
                await (button.click() if key is None else button.press(key))
            await expect(page.locator("#redrive")).not_to_have_class(re.compile("htmx-request"))
        assert len(posts) == 4


async def test_an_operation_kafka_refused_says_so_in_the_page(served: Served) -> None:
    """The console answers an operation Kafka failed with its result fragment and 503, as the API does; htmx
    swapped no 5xx answer, so the operator saw nothing at all happen: nothing sent, and nothing said."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        await page.goto(served.url + "/console/conversations/call-03")
        await page.get_by_role("button", name="Re-extract").click()
        alert = page.locator("#operation-result").get_by_role("alert")
        await expect(alert).to_contain_text("0 of 1 conversation(s) sent for extraction again, then it stopped")
        await expect(alert).to_contain_text("Kafka at 127.0.0.1:1 failed")


async def test_a_viewer_cannot_redrive(served: Served) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.viewer)
        await page.get_by_role("link", name="Dead letters").click()
        await expect(page.get_by_role("heading", name="By service and reason")).to_be_visible()
        await expect(page.get_by_role("button", name="Redrive")).to_have_count(0)
        status = await page.evaluate(
            """async () => {
                const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
                const body = new URLSearchParams({service: 'dispatcher', dry_run: '0', csrf_token: token});
                const answer = await fetch('/console/operations/redrive', {method: 'POST', body});
                return answer.status;
            }"""
        )
        assert status == 403
        async with served.store.read() as conn:
            from services.store import queries

            pending = await queries.list_dead_letters(conn, queries.DeadLetterFilter(state="pending"))
        assert len(pending.items) == 1  # nothing was redriven


async def test_usable_at_phone_width_and_from_the_keyboard(served: Served) -> None:
    async with chromium(PHONE) as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        await screenshot(page, "conversations-phone")
        await page.keyboard.press("/")
        await expect(page.get_by_label("Search")).to_be_focused()
        await page.keyboard.press("Escape")
        await page.locator("body").click(position={"x": 5, "y": 5})
        await page.keyboard.press("j")
        focused = await page.evaluate("document.activeElement.getAttribute('href')")
        assert focused is not None and focused.startswith("/console/conversations/")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        await screenshot(page, "timeline-phone", full_page=True)


async def test_a_refused_mark_done_is_shown_beside_the_task_and_the_row_stays(served: Served) -> None:
    """Since 4xx fragments are swapped (b8bfbd3) a refused Mark done replaced the task's row with the error."""
    task = TaskRequested(
        action_id="task-gone",
        conversation_id="call-01",
        agent_id="support-line",
        flow_id="callback",
        action_index=0,
        config_revision="rev-1",
        requested_at=T0,
        source_event_id="x-call-01",
        title="Call back Customer 1",
        priority="High",
    )
    await writer.write(served.store, r.requested(task, r.Source(action_topic("task"), 0, 0, 0)))
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        await page.goto(served.url + "/console/tasks")
        row = page.locator("tr", has_text="Call back Customer 1")
        await expect(row).to_have_count(1)
        async with served.store.write() as conn:  # gone meanwhile (pruned), as the button is pressed
            await conn.execute(delete(table(Task)).where(table(Task).c.action_id == "task-gone"))
        await row.get_by_role("button", name="Mark done").click()
        await expect(row.get_by_role("alert")).to_have_text("Not found: no task 'task-gone'", timeout=10_000)
        await expect(row.get_by_role("button", name="Mark done")).to_be_visible()
        await writer.write(served.store, r.requested(task, r.Source(action_topic("task"), 0, 0, 0)))  # back
        await row.get_by_role("button", name="Assign to me").click()
        await expect(row.locator("td").nth(3)).to_have_text("olivia")  # the changed row replaced the row
        await expect(row.get_by_role("alert")).to_have_count(0)
        await expect(page.locator("tr", has_text="Call back Customer 1")).to_have_count(1)


async def test_a_late_call_is_pushed_to_the_live_list_once(served: Served) -> None:
    """A call stored after the page loaded whose end is older than the newest row shown (a vendor's webhook
    after its analysis) was never pushed: only a reload showed it. The poller asks again for calls stored
    shortly before its cursor (every seeded row here, stored together), and console.js keeps one row each."""
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, served, served.operator)
        rows = page.locator("#rows > tr[data-href]")
        shown = await rows.count()
        await page.wait_for_timeout(2500)  # polls inside the overlap bring the seeded rows again
        await expect(rows).to_have_count(shown)
        await writer.write(served.store, rows_of(story("late-webhook", at=T0 + timedelta(seconds=30))))
        late = page.locator("#rows > tr#call-late-webhook")
        await expect(late).to_have_count(1, timeout=10_000)
        await expect(rows.first).to_have_id("call-late-webhook")
        await expect(rows.first).to_have_class("new")
        await page.wait_for_timeout(2500)
        await expect(late).to_have_count(1)
        await expect(rows).to_have_count(shown + 1)
