"""schemas.content.content_digest: the definition the router computed on its own until 2026-12-07, unchanged.

The pinned digests below were computed by the router's own content_digest (services/router/actions.py
at 2e8fd85, both its model_dump path and its fields-as-they-are path) for one action of every type it
builds: the ledger holds digests written by that code, and re-delivery ids were derived from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import router as bench
from schemas.content import NOT_CONTENT, content_digest
from schemas.events import ActionBase, ConversationExtracted
from services.common.codec import encode
from services.router.catalog import CatalogHolder
from tests.unit.router.support import write
from tests.unit.router.test_built_actions import NOW
from tests.unit.router.test_emitted import EVERY_ACTION, _records

_COMMON = {
    "action_id": "3f1c2a4e-0000-5000-8000-000000000001",
    "conversation_id": "conv-1",
    "agent_id": "support-line",
    "flow_id": "follow-up",
    "action_index": 0,
    "config_revision": "rev-1",
    "requested_at": "2026-03-10T12:00:07.123456Z",
    "source_event_id": "evt-1",
    "flow_revision": "frev-1",
}
CARD = {"title": "Lead", "fields": [{"label": "Interest", "value": "high"}], "context": "today", "button": "Open"}
#: (type, content fields, the digest 2e8fd85's router wrote for it)
PINNED: list[tuple[str, dict[str, Any], str]] = [
    ("WebhookRequested", {"destination": "crm", "method": None, "body": {"status": "won", "n": 3}}, "83d77d02f8a38129"),
    (
        "WebhookRequested",
        {"destination": "crm", "method": "PUT", "body": {"z": {"b": [True, -0.0, 1e16, "\u2028ü"]}, "a": None}},
        "3dcbab0725cd3c8c",
    ),
    (
        "HttpRequested",
        {
            "destination": "cases",
            "method": "PATCH",
            "path": "/cases/1",
            "query": {"by": "me"},
            "headers": {"x-a": "b"},
            "body": {"note": "called"},
            "result_id_pointer": "/id",
        },
        "7b4cafcb47de0a79",
    ),
    (
        "EmailRequested",
        {
            "destination": None,
            "to": ["a@example.com", "b@example.com"],
            "recipients_source": "dynamic",
            "subject": "Follow-up",
            "text": "Hello",
            "html": "<p>Hello</p>",
        },
        "3de47557383b433c",
    ),
    (
        "SlackRequested",
        {"destination": "sales", "text": "New lead", "channel": "#leads", "card": CARD},
        "21084648291ffe39",
    ),
    ("SlackRequested", {"destination": "sales", "text": "New lead", "channel": None, "card": None}, "5057dde75b4051a2"),
    ("TeamsRequested", {"destination": "ops", "text": "New lead", "card": CARD}, "ae1947f5230901f9"),
    (
        "RowAppendRequested",
        {
            "destination": "sheets",
            "spreadsheet_id": "abc_1",
            "sheet": "Leads",
            "values": ["x", 2, 2.5, True, None],
            "id_column": "F",
        },
        "692d2bcd0b8fe70d",
    ),
    (
        "ScheduleCallRequested",
        {
            "destination": None,
            "to_number": "+13125550100",
            "from_number": "+13125550101",
            "scheduled_at": "2026-03-11T15:00:00Z",
            "schedule_source": "field",
            "business_hours_applied": True,
        },
        "509b07836843d3bc",
    ),
    (
        "ScheduleCallRequested",
        {
            "destination": "dialer",
            "to_number": "+13125550100",
            "from_number": None,
            "scheduled_at": "2026-03-11T09:00:00.250000-05:00",
            "schedule_source": "fallback",
            "business_hours_applied": False,
        },
        "7c12e7227c2cf5d5",
    ),
    (
        "TaskRequested",
        {"destination": None, "title": "Call back", "description": "", "priority": "High"},
        "46860be1e5a4ffda",
    ),
    (
        "TeamAlertRequested",
        {"destination": None, "message": "Hot lead", "everyone": False, "teammates": ["dana"]},
        "193179b58255dcb1",
    ),
]


def _action(name: str, fields: dict[str, Any], **common: Any) -> ActionBase:
    model = next(m for m in ActionBase.__subclasses__() if m.__name__ == name)
    return model.model_validate({**_COMMON, **common, **fields})


@pytest.mark.parametrize(("name", "fields", "pinned"), PINNED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(PINNED)])
def test_the_digest_is_what_the_router_wrote_before(name: str, fields: dict[str, Any], pinned: str) -> None:
    assert content_digest(_action(name, fields)) == pinned


def test_every_action_type_is_pinned() -> None:
    assert {name for name, _, _ in PINNED} == {m.__name__ for m in ActionBase.__subclasses__()}


def test_ids_and_times_are_not_content_and_everything_else_is() -> None:
    name, fields, _ = PINNED[0]
    first = _action(name, fields)
    other = {
        "action_id": "other",
        "requested_at": "2027-01-01T00:00:00+02:00",
        "source_event_id": "evt-2",
        "config_revision": "rev-2",
        "content_digest": "0123456789abcdef",
        "supersedes": "3f1c2a4e-0000-5000-8000-000000000000",
    }
    assert set(other) == NOT_CONTENT
    assert content_digest(_action(name, fields, **other)) == content_digest(first)
    for changed in ({"conversation_id": "conv-2"}, {"flow_revision": "frev-2"}, {"action_index": 1}):
        assert content_digest(_action(name, fields, **changed)) != content_digest(first)
    assert content_digest(_action(name, {**fields, "body": {"status": "lost", "n": 3}})) != content_digest(first)


def test_an_assignee_is_content_when_set_and_an_unassigned_task_keeps_its_earlier_digest() -> None:
    """TaskRequested.assignee came after the digest's definition: a task without one has the digest the
    ledger holds from before (the pin above), one with an assignee another, and each assignee its own."""
    fields = next(f for n, f, _ in PINNED if n == "TaskRequested")
    unassigned = content_digest(_action("TaskRequested", {**fields, "assignee": None}))
    assert unassigned == content_digest(_action("TaskRequested", fields)) == "46860be1e5a4ffda"
    dana = content_digest(_action("TaskRequested", {**fields, "assignee": "dana.ortiz"}))
    assert dana != unassigned
    assert dana != content_digest(_action("TaskRequested", {**fields, "assignee": "sam"}))


def test_a_body_orjson_cannot_write_still_has_a_digest() -> None:
    """JSON may hold an integer beyond 64 bits; the router never digested one (orjson refused it), the
    dispatcher must not fail a delivery on it."""
    name, fields, _ = PINNED[0]
    big = _action(name, {**fields, "body": {"n": 2**70}})
    assert len(content_digest(big)) == 16
    assert content_digest(big) != content_digest(_action(name, {**fields, "body": {"n": 2**70 + 1}}))


def test_every_action_the_router_builds_has_the_same_digest_after_the_wire(tmp_path: Path) -> None:
    """What the dispatcher computes from the record it reads is what the router computes from the action it
    built (its re-delivery's digest), for every action type of test_emitted's agent and the bench agent."""
    emitted: list[ActionBase] = []
    sources = ((EVERY_ACTION, "support-line", _records()), (bench.AGENT, "bench-line", _bench_records()))
    for text, agent_id, records in sources:
        (tmp_path / agent_id).mkdir()
        write(tmp_path / agent_id, "agent.yaml", text)
        compiled = CatalogHolder(tmp_path / agent_id, "(n/a)").lookup(agent_id, None)
        assert compiled is not None
        emitted += [a for record in records for a in compiled.route(record, NOW)[1]]
    assert {type(a) for a in emitted} == set(ActionBase.__subclasses__())
    for action in emitted:
        read = type(action).model_validate_json(encode(action))
        assert content_digest(read) == content_digest(action)


def _bench_records() -> list[ConversationExtracted]:
    return [ConversationExtracted.model_validate_json(bench.record(i, mix)) for mix in bench.MIXES for i in range(50)]
