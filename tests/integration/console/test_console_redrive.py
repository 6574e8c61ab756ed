"""Redrive a dead letter from the console and see it delivered: a real broker, `python -m services.dispatcher`
and `python -m services.recorder` as processes, the query API with the console under uvicorn, a real
receiver that refuses the first delivery (400: dead-lettered at once) and accepts the next, and Debian's
headless Chromium clicking the button."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import expect

from schemas.events import WebhookRequested
from schemas.routes import registry
from schemas.topics import CONVERSATION_ENDED, action_topic
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import KafkaCluster, free_port
from services.devkit.sink import Reply, Sink
from services.store import queries
from services.store.db import Store
from services.store.settings import DatabaseSettings
from tests.integration.console.conftest import create_token
from tests.integration.dispatcher.conftest import SECRET, http_destination
from tests.support import procs
from tests.support.browser import chromium, needs_chromium, screenshot
from tests.support.calls import ended
from tests.support.kafka import produce

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        importlib.util.find_spec("services.recorder") is None, reason="the recorder (issue 15) is not in this build"
    ),
]
CALL = "redrive-call"


@pytest.fixture(scope="module")
def private_kafka() -> Iterator[KafkaSettings]:
    """Its own broker: the dispatcher and the recorder use the real, fixed topic names."""
    cluster = KafkaCluster(size=1).start()
    try:
        yield KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    finally:
        cluster.stop()


@pytest.fixture
async def stack(private_kafka: KafkaSettings, tmp_path: Path) -> AsyncIterator[tuple[str, Store, Sink, str]]:
    kafka = private_kafka
    await ensure_topics(kafka, registry(), replication=1)
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    common = {"POSTCALL_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "POSTCALL_RUNTIME__METRICS_PORT": "0"}
    async with Sink([SECRET], quiet=True) as sink, Store.open(DatabaseSettings(url=url), writer=True) as store:
        sink.script("/crm", Reply(status=400, body=b'{"error":"unknown case"}'), then=Reply())
        destinations = tmp_path / "destinations.yaml"
        destinations.write_text("destinations:\n" + http_destination("crm", sink.url("/crm")))
        dispatcher = procs.start(
            "services.dispatcher", {**common, "POSTCALL_DESTINATIONS_FILE": str(destinations), "SECRET": SECRET}
        )
        recorder = procs.start("services.recorder", {**common, "POSTCALL_DATABASE__URL": url})
        token = await create_token(store, "olivia", "operator")
        port = free_port()
        settings = ApiSettings.model_validate(
            {"database": {"url": url}, "api": {"port": port}, "kafka": {"bootstrap_servers": kafka.bootstrap_servers}}
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, store=store), host="127.0.0.1", port=port, log_config=None)
        )
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            yield f"http://127.0.0.1:{port}", store, sink, token
        finally:
            server.should_exit = True
            await task
            for proc in (dispatcher, recorder):
                proc.term()
            for proc in (dispatcher, recorder):
                if proc.popen.returncode not in (0, -15):
                    print(proc.output()[-3000:])


async def wait_for_letter(store: Store, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with store.read() as conn:
            page = await queries.list_dead_letters(conn, queries.DeadLetterFilter(services=["dispatcher"], key=CALL))
        if page.items:
            return
        await asyncio.sleep(0.5)
    pytest.fail("the refused delivery never reached the store as a dispatcher dead letter")


async def test_redrive_a_dead_letter_and_see_it_delivered(
    stack: tuple[str, Store, Sink, str], private_kafka: KafkaSettings
) -> None:
    base, store, sink, token = stack
    action = WebhookRequested(
        action_id=f"{CALL}-crm",
        conversation_id=CALL,
        agent_id="support-line",
        flow_id="crm-case-update",
        action_index=0,
        config_revision="rev-1",
        requested_at=datetime.now(UTC),
        source_event_id=f"x-{CALL}",
        destination="crm",
        body={"status": "closed"},
    )
    await produce(private_kafka, CONVERSATION_ENDED, [(CALL, ended(CALL, at=datetime.now(UTC)))])
    await produce(private_kafka, action_topic("webhook"), [(CALL, action)])
    await wait_for_letter(store)
    assert len(sink.ids("/crm")) == 1  # refused once
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(base + "/console/dead-letters?service=dispatcher")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Log in").click()
        await page.locator("table.nav-rows tbody tr[data-href] a").first.click()
        await expect(page.locator("dd.bad")).to_contain_text("HTTP 400")
        await page.get_by_role("button", name="Redrive this record to postcall.actions.webhook.v1").click()
        await expect(page.locator("#redrive-result")).to_contain_text("1 dead letter(s) redriven")
        await page.goto(f"{base}/console/conversations/{CALL}")
        deadline = time.monotonic() + 90
        while "1 of 1 action(s) done" not in await page.locator("#outcome").inner_text():
            assert time.monotonic() < deadline, "the redriven action was not reported delivered"
            await page.wait_for_timeout(1000)
            await page.reload()
        await expect(page.locator(".badge", has_text="delivered").first).to_be_visible()
        await expect(page.locator("td", has_text="dead_lettered")).to_be_visible()  # every attempt is kept
        await screenshot(page, "redrive-delivered", full_page=True)
    assert len(sink.ids("/crm")) == 2  # delivered on the redrive, once
