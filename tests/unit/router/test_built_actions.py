"""Actions are built without validating them again (services.router.actions.make): every action the
router emits must be what validating it gives, and write the same bytes.

Each record below is routed twice, once as the router does and once with every action validated by its
model (KEPT_AS_IS emptied: the path before make existed); the two must give equal actions and traces,
byte for byte. Records: every action type of test_emitted's agent (first delivery and re-delivery),
and the bench agent's records of both mixes (bench/router.py). A value validation would refuse or
change is handed to validation, which decides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bench import router as bench
from schemas.events import (
    ActionBase,
    ConversationExtracted,
    DecisionTrace,
    MessageCard,
    WebhookRequested,
)
from services.common.codec import encode
from services.router import actions
from services.router.catalog import CatalogHolder
from services.router.engine import CompiledAgent
from tests.unit.router.support import write
from tests.unit.router.test_emitted import EVERY_ACTION, _records

NOW = datetime(2026, 3, 10, 12, 0, 7, 123456, tzinfo=UTC)


def _agent(tmp_path: Path, text: str, agent_id: str) -> CompiledAgent:
    tmp_path.mkdir()
    write(tmp_path, "agent.yaml", text)
    compiled = CatalogHolder(tmp_path, "(n/a)").lookup(agent_id, None)
    assert compiled is not None
    return compiled


def _routed(
    compiled: CompiledAgent, records: list[ConversationExtracted], redeliver: bool
) -> list[tuple[DecisionTrace, list[ActionBase]]]:
    return [compiled.route(record, NOW, (redeliver, False)) for record in records]


def _bench_records() -> list[ConversationExtracted]:
    return [ConversationExtracted.model_validate_json(bench.record(i, mix)) for mix in bench.MIXES for i in range(100)]


@pytest.mark.parametrize("redeliver", [False, True], ids=["first", "redelivery"])
@pytest.mark.parametrize("which", ["every-action", "bench"])
def test_an_action_built_without_validation_is_the_validated_one_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str, redeliver: bool
) -> None:
    if which == "every-action":
        text, agent_id, records = EVERY_ACTION, "support-line", _records()
    else:
        text, agent_id, records = bench.AGENT, "bench-line", _bench_records()
    fast = _routed(_agent(tmp_path / "fast", text, agent_id), records, redeliver)
    kept = set(actions.KEPT_AS_IS)
    monkeypatch.setattr(actions, "KEPT_AS_IS", {})  # every action validated by its model
    slow = _routed(_agent(tmp_path / "slow", text, agent_id), records, redeliver)
    unvalidated = 0
    for (fast_trace, fast_actions), (slow_trace, slow_actions) in zip(fast, slow, strict=True):
        assert encode(fast_trace) == encode(slow_trace)
        assert [type(a) for a in fast_actions] == [type(a) for a in slow_actions]
        for made, validated in zip(fast_actions, slow_actions, strict=True):
            assert made == validated
            assert made.model_dump() == validated.model_dump()
            assert encode(made) == encode(validated) == validated.__pydantic_serializer__.to_json(validated)
            assert type(made).model_validate_json(encode(made)) == made
            # built without validation: every field counts as set (validation leaves defaults unset)
            unvalidated += made.model_fields_set == set(type(made).model_fields)
    assert unvalidated > 0
    if which == "every-action":  # all but the row append, which is always validated
        kinds = {type(a) for _, built in fast for a in built if a.model_fields_set == set(type(a).model_fields)}
        assert kinds == kept


def _fields(model: type[ActionBase], **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(common, fields) of one valid action of `model`, with `changes` applied to either."""
    common = {
        "action_id": "a-1",
        "conversation_id": "conv-1",
        "agent_id": "support-line",
        "flow_id": "f",
        "action_index": 0,
        "config_revision": "rev",
        "requested_at": NOW,
        "source_event_id": "e-1",
        "flow_revision": "frev",
        "content_digest": None,
        "supersedes": None,
        "destination": "dest",
    }
    fields: dict[str, Any] = {
        "WebhookRequested": {"method": None, "body": {"a": [1, 2.5, None, "x"]}},
        "HttpRequested": {
            "method": "PATCH",
            "path": "/cases/1",
            "query": {"by": "me"},
            "headers": {"x-a": "b"},
            "body": None,
            "result_id_pointer": "/id",
        },
        "EmailRequested": {
            "to": ["a@example.com"],
            "recipients_source": "fixed",
            "subject": "s",
            "text": "t",
            "html": None,
        },
        "SlackRequested": {"text": "t", "channel": None, "card": MessageCard(title="x")},
        "TeamsRequested": {"text": "t", "card": None},
        "ScheduleCallRequested": {
            "to_number": "+13125550100",
            "from_number": None,
            "scheduled_at": NOW + timedelta(days=1),
            "schedule_source": "fallback",
            "business_hours_applied": False,
        },
        "TaskRequested": {"title": "t", "description": "", "priority": "High", "assignee": None},
        "TeamAlertRequested": {"message": "m", "everyone": False, "teammates": ["dana"]},
    }[model.__name__]
    for name, value in changes.items():
        (common if name in common else fields)[name] = value
    return common, fields


class _Text(str):
    pass


REFUSED = [
    ("HttpRequested", {"path": "/" + "x" * 8192}),
    ("HttpRequested", {"method": "TRACE"}),
    ("HttpRequested", {"query": {"n": 1}}),
    ("EmailRequested", {"to": []}),
    ("EmailRequested", {"to": ["a@example.com", 3]}),
    ("EmailRequested", {"recipients_source": "guess"}),
    ("EmailRequested", {"subject": None}),
    ("SlackRequested", {"card": {"title": 3}}),
    ("ScheduleCallRequested", {"scheduled_at": datetime(2026, 3, 11, 9, 0)}),  # naive
    ("ScheduleCallRequested", {"scheduled_at": datetime(3000, 1, 2, tzinfo=UTC)}),
    ("ScheduleCallRequested", {"business_hours_applied": "yes"}),
    ("TaskRequested", {"priority": "Whenever"}),
    ("TaskRequested", {"assignee": 7}),
    ("TeamAlertRequested", {"everyone": 1}),
    ("WebhookRequested", {"destination": None}),
    ("WebhookRequested", {"method": "GET"}),
    ("TaskRequested", {"requested_at": datetime(2026, 3, 10, 12, 0)}),  # naive
]
KEPT_BY_VALIDATION = [  # valid, but not as they are: validation decides what the action holds
    ("TaskRequested", {"title": _Text("t")}),
    ("EmailRequested", {"to": ("a@example.com",)}),
    ("TeamAlertRequested", {"teammates": ("dana",)}),
    ("SlackRequested", {"card": {"title": "x"}}),
]


@pytest.mark.parametrize(("model_name", "changes"), REFUSED, ids=[f"{m}-{next(iter(c))}" for m, c in REFUSED])
def test_what_the_model_refuses_is_refused(model_name: str, changes: dict[str, Any]) -> None:
    model = next(m for m in actions.KEPT_AS_IS if m.__name__ == model_name)
    common, fields = _fields(model, **changes)
    with pytest.raises(ValidationError):
        model(**common, **fields)
    with pytest.raises(ValidationError):
        actions.make(model, common, fields)


@pytest.mark.parametrize(
    ("model_name", "changes"), KEPT_BY_VALIDATION, ids=[f"{m}-{next(iter(c))}" for m, c in KEPT_BY_VALIDATION]
)
def test_what_validation_would_change_is_validated(model_name: str, changes: dict[str, Any]) -> None:
    model = next(m for m in actions.KEPT_AS_IS if m.__name__ == model_name)
    common, fields = _fields(model, **changes)
    made = actions.make(model, common, dict(fields))
    assert made.model_fields_set != set(model.model_fields)  # it went through validation
    assert made == model(**common, **_fields(model, **changes)[1])


VARIANTS = [(m.__name__, {}) for m in actions.KEPT_AS_IS] + [
    ("ScheduleCallRequested", {"scheduled_at": (NOW + timedelta(days=1)).astimezone(timezone(timedelta(hours=-5)))}),
    ("ScheduleCallRequested", {"business_hours_applied": True, "from_number": "+13125550101"}),
    ("WebhookRequested", {"body": {"z": {"b": [True, -0.0, 1e16, "\u2028\x00ü"]}, "a": None}, "method": "PUT"}),
    ("SlackRequested", {"card": MessageCard(title="t", fields=[{"label": "L", "value": "v"}], button="Open")}),
    ("EmailRequested", {"to": ["a@example.com", "b@example.com"], "html": "<p>x</p>", "destination": None}),
    ("TaskRequested", {"requested_at": NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))}),
    ("TaskRequested", {"assignee": "dana.ortiz"}),
]


@pytest.mark.parametrize(("model_name", "changes"), VARIANTS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(VARIANTS)])
def test_a_valid_action_is_built_as_validation_builds_it(model_name: str, changes: dict[str, Any]) -> None:
    model = next(m for m in actions.KEPT_AS_IS if m.__name__ == model_name)
    common, fields = _fields(model, **changes)
    made = actions.make(model, common, dict(fields))
    assert made.model_fields_set == set(model.model_fields)  # built without validation
    validated = model(**common, **fields)
    assert made == validated
    assert encode(made) == encode(validated)
    assert list(made.__dict__) == list(validated.__dict__)  # declaration order


class _Reads(dict[str, Any]):
    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


@pytest.mark.parametrize("model", list(actions.KEPT_AS_IS), ids=lambda m: m.__name__)
def test_every_field_a_builder_adds_is_checked(model: type[ActionBase]) -> None:
    """A field added to an action model must get its check (or the model leaves KEPT_AS_IS)."""
    common, fields = _fields(model)
    values = _Reads({**common, "type": model.model_fields["type"].default, **fields})
    assert actions.KEPT_AS_IS[model](values)
    own = set(model.model_fields) - set(ActionBase.model_fields) - {"type"}
    assert own | {"destination"} <= values.read


def test_models_built_with_every_field_keep_their_fields_set_whatever_is_done_to_another() -> None:
    """`built` gives every model built with all its fields one shared set of the field names: completing
    an action (with_content, a re-delivery's three fields) or copying one with an update must not change
    what another reports as set, and a model given only some fields reports those."""
    model = next(iter(actions.KEPT_AS_IS))
    common, fields = _fields(model)
    first, second = actions.make(model, common, dict(fields)), actions.make(model, common, dict(fields))
    every = set(model.model_fields)
    actions.with_content(first, redeliver=True)
    copied = first.model_copy(update={"destination": "elsewhere", "not_a_field": 1})
    assert copied.model_fields_set == every | {"not_a_field"}
    assert first.model_fields_set == every and second.model_fields_set == every
    some = actions.built(model, {"action_id": "a", "conversation_id": "c"})
    assert some.model_fields_set == {"action_id", "conversation_id"}
    assert actions.make(model, common, dict(fields)).model_fields_set == every


def test_the_record_measured_against_the_limit_is_the_one_written_and_only_once() -> None:
    """with_content measures an action by its record (CONTENT_LIMIT); the runtime's encoding of that same
    action then takes those bytes rather than write them again, once. A later encoding writes them anew,
    a copy is written as itself, and what is never encoded (`postcall try`) or is large is not kept long."""
    model = WebhookRequested
    common, fields = _fields(model)
    action = actions.make(model, common, dict(fields))
    size = actions.with_content(action, redeliver=False)
    measured = encode(action)
    assert len(measured) == size and measured == action.__pydantic_serializer__.to_json(action)
    assert id(action) not in actions._MEASURED and encode(action) == measured  # taken once, then written
    actions.with_content(action, redeliver=False)
    copied = action.model_copy(update={"destination": "elsewhere"})
    assert encode(copied) == copied.__pydantic_serializer__.to_json(copied) != measured
    for _ in range(actions.MEASURED_KEPT + 1):
        actions.with_content(actions.make(model, common, dict(fields)), redeliver=False)
    assert 0 < len(actions._MEASURED) <= actions.MEASURED_KEPT
    large = actions.make(WebhookRequested, *_fields(WebhookRequested, body={"a": "x" * actions.MEASURED_BYTES}))
    assert actions.with_content(large, redeliver=False) > actions.MEASURED_BYTES
    assert id(large) not in actions._MEASURED
