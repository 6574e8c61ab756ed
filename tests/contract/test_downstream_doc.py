"""docs/downstream.md, read literally as a downstream team would: its recipes run on what the router
writes, and what it says about the records is what they hold."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from schemas.events import TaskRequested
from services.router.actions import with_content

DOC = Path(__file__).resolve().parents[2] / "docs" / "downstream.md"


def python_block(marker: str) -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def task(title: str, action_id: str = "a1b2c3d4-0000-5000-8000-000000000001") -> TaskRequested:
    return TaskRequested(
        action_id=action_id, conversation_id="conv-1", agent_id="support-line", flow_id="callback",
        action_index=1, config_revision="rev-1", flow_revision="f" * 16,
        requested_at=datetime(2026, 3, 1, 12, tzinfo=UTC), source_event_id="evt-1", title=title, priority="High",
    )  # fmt: skip


def correction(title: str) -> TaskRequested:
    """What `postcall reextract --redeliver` makes of the task once its content changed (the router's code)."""
    action = task(title)
    with_content(action, redeliver=True)
    return action


def test_the_consumer_example_updates_the_task_a_correction_supersedes_instead_of_creating_another() -> None:
    """The example created a task for every record with a new action_id: each correction of a task
    (`reextract --redeliver`) became a second task, though the doc says to upsert (walked by downstream25:
    one task action, two corrections, three tasks)."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_block("AIOKafkaConsumer"), "docs/downstream.md", "exec"), namespace)  # our own docs
    original, fixed, fixed_again = task("Call back"), correction("Call back at 3 pm"), correction("Call back at 4 pm")
    records = [original, original, fixed, fixed, task("Call back (re-extracted)"), fixed_again]

    async def consume() -> None:
        for action in records:
            await namespace["perform"](orjson.loads(action.model_dump_json()))

    asyncio.run(consume())
    assert fixed.supersedes == fixed_again.supersedes == original.action_id != fixed.action_id
    assert namespace["tasks"] == {original.action_id: {"priority": "High", "title": "Call back at 4 pm"}}
