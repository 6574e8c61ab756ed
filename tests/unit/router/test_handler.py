"""The handler: outputs and their topics and keys; unknown and broken agents; live reload in the holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.events import DecisionTrace
from schemas.topics import DECISIONS, action_topic
from services.common.errors import PermanentError, RetryableError
from services.common.runtime import RecordContext
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from tests.unit.router.support import NOW, event, write

CTX = RecordContext(
    "router", "postcall.conversation-extracted.v1", "postcall.conversation-extracted.v1", 0, 0, "conv-1", 0, {}
)
CONFIG = """
    agent: support-line
    flows:
      - id: crm
        when: {end_reason: CUSTOMER_HANGUP}
        actions:
          - {type: webhook, destination: crm, body: {id: "{{conversation_uuid}}"}}
          - {type: schedule_call, fallback_delay_minutes: 10}
      - id: never
        when: {end_reason: VOICEMAIL}
        actions: [{type: task, title: x}]
"""


def handler(tmp_path: Path, text: str = CONFIG) -> RouterHandler:
    write(tmp_path, "support-line.yaml", text)
    return RouterHandler(CatalogHolder(tmp_path, "(n/a)"), clock=lambda: NOW)


async def test_emits_one_decision_trace_and_one_command_per_action_keyed_by_conversation(tmp_path: Path) -> None:
    emits = await handler(tmp_path)(event(), CTX)
    assert [(e.topic, e.key) for e in emits] == [
        (DECISIONS, "conv-1"),
        (action_topic("webhook"), "conv-1"),
        (action_topic("schedule_call"), "conv-1"),
    ]
    trace = emits[0].value
    assert isinstance(trace, DecisionTrace) and [f.fired for f in trace.flows] == [True, False]
    assert [p.action_id for p in trace.flows[0].actions] == [e.value.action_id for e in emits[1:]]  # type: ignore[attr-defined]


async def test_agent_without_configuration_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no configuration for agent 'sales-line' version '7'"):
        await handler(tmp_path)(event(agent={"id": "sales-line", "version": "7"}), CTX)


async def test_agent_whose_only_file_is_invalid_is_retried_not_dead_lettered_at_once(tmp_path: Path) -> None:
    with pytest.raises(RetryableError, match="is invalid and was never loaded") as info:
        await handler(tmp_path, CONFIG.replace("webhook", "webhok"))(event(), CTX)
    assert not isinstance(info.value, PermanentError)


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_reload_picks_up_a_change_and_outputs_carry_the_new_revision(tmp_path: Path) -> None:
    h = handler(tmp_path)
    before = (await h(event(), CTX))[0].value
    assert not h.catalog.reload_if_changed()  # nothing changed
    path = write(tmp_path, "support-line.yaml", CONFIG.replace("VOICEMAIL", "CUSTOMER_HANGUP"))
    _touch_later(path)
    assert h.catalog.reload_if_changed()
    after = await h(event(), CTX)
    assert isinstance(before, DecisionTrace) and isinstance(after[0].value, DecisionTrace)
    assert after[0].value.config_revision != before.config_revision
    assert all(e.value.config_revision == after[0].value.config_revision for e in after[1:])  # type: ignore[attr-defined]
    assert [f.fired for f in after[0].value.flows] == [True, True]


async def test_a_bad_edit_keeps_the_last_good_revision(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = handler(tmp_path)
    revision = h.catalog.lookup("support-line", "3").revision  # type: ignore[union-attr]
    path = write(tmp_path, "support-line.yaml", CONFIG.replace("title: x", "title: '{{nope}}'"))
    _touch_later(path)
    assert h.catalog.reload_if_changed()
    assert h.catalog.lookup("support-line", "3").revision == revision  # type: ignore[union-attr]
    assert "template names undefined variable 'nope'" in caplog.text
    emits = await h(event(), CTX)
    assert emits[0].value.config_revision == revision  # type: ignore[attr-defined]
