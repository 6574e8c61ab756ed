"""What the router emits is what its models and the published JSON Schemas accept.

The router builds its trace from ConditionResults it remembers between records and completes each action
in place (services.router.conditions.Remembered, actions.with_content): each record written here, for
every action type, decided from fresh and from remembered results, is validated again from its bytes by
its model and by its schemas/json/ file, and reads back equal to what was emitted.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import struct
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pydantic_core
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic_core import PydanticSerializationError

from schemas import generate
from schemas import headers as h
from schemas.events import (
    ConditionResult,
    ConversationExtracted,
    DecisionTrace,
    FlowDecision,
    PlannedAction,
    WebhookRequested,
)
from schemas.routes import ROUTER
from services.common.api import Context
from services.common.codec import encode
from services.router import engine
from services.router.actions import ACTION_NAMESPACE, built, uuid5
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from tests.unit.router.support import event, write

JSON_DIR = Path(generate.__file__).resolve().parent / "json"
QUESTION = "Did the customer ask to be called back?"

EVERY_ACTION = """\
agent: support-line
timezone: America/Chicago
extraction:
  fields:
    - {name: interest_level, type: enum, values: [high, medium, low, none]}
    - {name: follow_up_date, type: date}
recipient_routes:
  - id: team
    rules: [{when: "billing", to: [billing@example.com]}]
    fallback: [lead@example.com]
flows:
  - id: everything
    when: {any: [{end_reason: CUSTOMER_HANGUP}, {ai: "Did the customer ask to be called back?"}]}
    actions:
      - {type: webhook, destination: crm, body: {level: "{{interest_level}}", at: "{{conversation_date}}"}}
      - {type: webhook, destination: crm}
      - {type: http, destination: cases, method: PATCH, path: "/cases/{{conversation_uuid}}",
         query: {by: "{{agent_id}}"}, headers: {x-agent: "{{agent_name}}"}, body: {s: "{{conversation_summary}}"},
         result_id_pointer: /id}
      - {type: append_row, destination: sheets, spreadsheet_id: abcdefghij0123, sheet: Calls,
         columns: ["{{conversation_uuid}}", "{{interest_level}}", "{{duration_seconds}}"]}
      - {type: email, to: [support@example.com, "{{customer_email}}"], subject: "Call {{customer_name}}",
         body: "{{conversation_transcript}}", html: "<p>{{conversation_summary}}</p>"}
      - {type: email, recipients: team, subject: "Team", body: "{{conversation_summary}}"}
      - {type: slack, destination: ops-slack, text: "<!here> {{conversation_summary}}", title: "{{agent_name}}",
         fields: {Level: "{{interest_level}}"}, context: "{{conversation_time}}", button: Open}
      - {type: teams, destination: ops-teams, text: "{{conversation_summary}}", title: "Call"}
      - {type: schedule_call, use_field: follow_up_date, fallback_delay_minutes: 60,
         business_hours: {timezone: America/Chicago}}
      - {type: task, priority: High, title: "Call back {{customer_name}}"}
      - {type: team_alert, message: "{{customer_name}} hung up", teammates: [dana]}
  - id: quiet
    when: {all: [{field: interest_level, op: "==", value: high}, {not: {end_reason: [VOICEMAIL]}}]}
    actions: [{type: task, title: "Hot lead"}]
"""
DISABLED_AND_DRAFT = """\
  - id: off
    enabled: false
    when: {end_reason: VOICEMAIL}
    actions: [{type: task, title: "Voicemail"}]
  - id: trying
    draft: true
    when: {end_reason: AGENT_HANGUP}
    actions: [{type: task, title: "Agent hung up"}]
"""


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((JSON_DIR / f"{name}{generate.SCHEMA_SUFFIX}").read_bytes()),
                                format_checker=FormatChecker())  # fmt: skip


def _records() -> list[ConversationExtracted]:
    levels = ("high", "low", None)
    reasons = ("CUSTOMER_HANGUP", "VOICEMAIL", "AGENT_HANGUP")
    records = [
        event(
            fields={"interest_level": levels[i % 3], "follow_up_date": "2026-03-20"},
            triggers={QUESTION: i % 2 == 0},
            recipients={"team": ["billing@example.com"]} if i % 2 else {},
            end_reason={"canonical": reasons[i % 3], "raw": "x"},
            conversation_id=f"conv-{i}",
        )
        for i in range(12)
    ]
    records.append(event(status="failed", reason="LLM timeout", conversation_id="conv-failed"))
    return records


@pytest.mark.parametrize("redeliver", [False, True], ids=["first", "redelivery"])
def test_every_emitted_record_validates_against_its_model_and_json_schema(tmp_path: Path, redeliver: bool) -> None:
    write(tmp_path, "agent.yaml", EVERY_ACTION)
    handler = RouterHandler(CatalogHolder(tmp_path, "(n/a)"))
    ctx = Context("router", ROUTER.consumes[0].topic, headers={h.REDELIVER: "1"} if redeliver else {})
    validators: dict[str, Draft202012Validator] = {}
    seen: set[str] = set()
    for _ in range(2):  # the second round's traces come from remembered condition results
        for record in _records():
            outputs = list(asyncio.run(handler.handle(record, ctx)))
            assert isinstance(outputs[0], DecisionTrace)
            for out in outputs:
                name = type(out).__name__
                seen.add(name)
                raw = encode(out)
                assert raw == out.__pydantic_serializer__.to_json(out), name  # the trace's own encoder too
                assert type(out).model_validate_json(raw) == out, name
                assert type(out).model_validate_json(raw).model_dump() == out.model_dump(), name
                validator = validators.get(name) or validators.setdefault(name, _validator(name))
                errors = [e.message for e in validator.iter_errors(orjson.loads(raw))]
                assert errors == [], (name, errors)
    assert seen == {
        "DecisionTrace",
        "WebhookRequested",
        "HttpRequested",
        "RowAppendRequested",
        "EmailRequested",
        "SlackRequested",
        "TeamsRequested",
        "ScheduleCallRequested",
        "TaskRequested",
        "TeamAlertRequested",
    }


@pytest.mark.parametrize("kept", [2, 4096], ids=["cleared-often", "default"])
def test_a_trace_is_encoded_to_the_bytes_pydantic_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """engine.encode_trace keeps the JSON of flows that did not fire by object; every trace (fired,
    not fired, held, disabled and draft flows; first delivery, re-delivery, held released) must still
    be pydantic's own bytes, also when its store is cleared between records."""
    monkeypatch.setattr(engine, "_SHARED_FLOWS", kept)
    write(tmp_path, "agent.yaml", EVERY_ACTION + DISABLED_AND_DRAFT)
    handler = RouterHandler(CatalogHolder(tmp_path, "(n/a)"))
    traces, kinds = 0, set()
    for headers in ({}, {h.REDELIVER: "1"}, {h.RUN_HELD: "1"}):
        ctx = Context("router", ROUTER.consumes[0].topic, headers=headers)
        for _ in range(3):
            for record in _records():
                trace = asyncio.run(handler.handle(record, ctx))[0]
                assert isinstance(trace, DecisionTrace)
                kinds |= {(f.enabled, f.fired, f.held) for f in trace.flows}
                assert engine.encode_trace(trace) == trace.__pydantic_serializer__.to_json(trace)
                assert encode(trace) == trace.__pydantic_serializer__.to_json(trace)
                traces += 1
    assert traces == 3 * 3 * len(_records())
    assert {(True, True, False), (True, False, False), (True, False, True), (False, False, False)} <= kinds


def _both(reason: str, expected: Any) -> tuple[bytes, bytes]:
    """orjson's and pydantic's JSON of a model holding these in a text field and an `Any` field."""
    result = ConditionResult.model_construct(path="p", kind="k", passed=True, expected=expected, reason=reason)
    return orjson.dumps(result.__dict__), result.__pydantic_serializer__.to_json(result)


def test_orjson_writes_text_and_numbers_as_pydantic_does() -> None:
    """The router's traces and actions are written by orjson, not pydantic (engine.encode_trace,
    actions.encode_action): the same bytes for every code point (escapes of control characters, '"', '\\',
    non-ASCII kept as UTF-8), for floats (shortest round trip, both; NaN and infinities null in a model)
    and integers up to 64 bits; a lone surrogate is refused by both, so the record falls back to
    pydantic's own refusal, and an integer over 64 bits by orjson alone, so it is pydantic's JSON."""
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(code_points), 4096):
        text = "".join(chr(c) for c in code_points[start : start + 4096])
        ours, theirs = _both(text, [text, 'a"b\\c\u2028d\x7fe\x1f'])
        assert ours == theirs
    rng = random.Random(13)
    numbers: list[Any] = [0.0, -0.0, 0.1, 1e16, 1.5e16, 1e-7, 1e21, 1e22, 5e-324, 1.7976931348623157e308, 2.0**53]
    numbers += [math.nan, math.inf, -math.inf, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1]
    numbers += [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(20_000)]
    numbers += [rng.uniform(-1e6, 1e6) for _ in range(20_000)]
    ours, theirs = _both("r", numbers)
    assert ours == theirs
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(2**64)
    for surrogate in ("\ud800", "x\udfff"):
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(surrogate)
        with pytest.raises(PydanticSerializationError):
            pydantic_core.to_json(surrogate)


class _Kind(enum.StrEnum):
    ACTION = "action"


def _trace(flow: FlowDecision) -> DecisionTrace:
    return DecisionTrace(event_id="e", conversation_id="c", agent_id="a", config_revision="r",
                         extraction_status="ok", decided_at=datetime(2026, 1, 1, tzinfo=UTC), flows=[flow])  # fmt: skip


def test_a_fired_flow_holding_other_values_is_written_as_pydantic_writes_it() -> None:
    """A fired flow whose conditions or planned actions hold values orjson might write otherwise (numbers,
    lists, a time, a text subclass), or whose fields are held in another order, is pydantic's JSON; one
    holding a lone surrogate is refused as pydantic refuses it."""
    when = ConditionResult(path="when", kind="field", passed=True, expected={"==": 1.5e16}, actual=0.1, reason="r")
    at = ConditionResult(path="when.all[0]", kind="x", passed=True, expected=datetime(2026, 1, 1, tzinfo=UTC),
                         reason="r")  # fmt: skip
    odd = ConditionResult.model_construct(path="actions[0]", kind=_Kind.ACTION, passed=True, reason="planned")
    planned = PlannedAction(action_id="a", type="task", topic="t", destination=None)
    fields = {"flow_id": "f", "enabled": True, "fired": True, "held": False, "flow_revision": None, "reason": "r",
              "conditions": [], "actions": []}  # fmt: skip
    flows = [
        FlowDecision(flow_id="f", enabled=True, fired=True, reason="r", conditions=[when, at, odd],
                     actions=[planned]),
        FlowDecision(flow_id="f", enabled=True, fired=True, flow_revision="abc", reason="ünï \x00 \"x\"",
                     conditions=[odd], actions=[PlannedAction.model_construct(action_id="a", type="t", topic="t")]),
        built(FlowDecision, dict(reversed(fields.items()))),
    ]  # fmt: skip
    for flow in flows:
        assert engine.encode_trace(_trace(flow)) == _trace(flow).__pydantic_serializer__.to_json(_trace(flow))
    broken = FlowDecision(flow_id="f", enabled=True, fired=True, reason="half \ud83d of it")
    with pytest.raises(PydanticSerializationError):
        engine.encode_trace(_trace(broken))


@pytest.mark.parametrize(
    "body",
    [
        {"at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"kind": _Kind.ACTION},
        {"big": 2**64},
        {1: "a non-text key"},
        {"pair": ("a", 1)},
        {"set": {1}},
        {"bytes": b"x"},
        {"model": PlannedAction(action_id="a", type="t", topic="t")},
        {"nested": [{"x": [1.5, None, True, "ü"]}]},
    ],
    ids=["time", "text-enum", "int-over-64-bits", "int-key", "tuple", "set", "bytes", "model", "nested"],
)
def test_an_action_holding_values_orjson_writes_otherwise_is_written_as_pydantic_writes_it(body: Any) -> None:
    """actions.encode_action gives pydantic's bytes whatever the body holds (a webhook's body is `Any`)."""
    action = WebhookRequested.model_construct(
        action_id="a", conversation_id="c", agent_id="g", flow_id="f", action_index=0, config_revision="r",
        requested_at=datetime(2026, 1, 1, 12, 30, tzinfo=timezone(timedelta(hours=-5))), source_event_id="e",
        destination="crm", body=body,
    )  # fmt: skip
    try:
        expected = action.__pydantic_serializer__.to_json(action)
    except PydanticSerializationError as refused:
        with pytest.raises(PydanticSerializationError, match=str(refused)[:30]):
            encode(action)
    else:
        assert encode(action) == expected


@pytest.mark.parametrize(
    "name", ["conv-1/support-line/callback/abc/0", "", "ünïcödé/☎/0", "x" * 1000, "a/b/c/content/0123456789abcdef"]
)
def test_action_ids_are_rfc_uuid5(name: str) -> None:
    assert uuid5(name) == str(uuid.uuid5(ACTION_NAMESPACE, name))


@pytest.mark.parametrize(
    "now", [datetime(2026, 3, 10, 12, 0), datetime(1969, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))]
)
def test_a_time_a_trace_could_not_carry_is_refused_as_the_trace_model_would(tmp_path: Path, now: datetime) -> None:
    """The trace is built without validation; its time is checked by the Timestamp rule instead."""
    with pytest.raises(ValueError):
        DecisionTrace.model_validate({**_TRACE, "decided_at": now})
    write(tmp_path, "agent.yaml", EVERY_ACTION)
    compiled = RouterHandler(CatalogHolder(tmp_path, "(n/a)")).catalog.lookup("support-line", "3")
    assert compiled is not None
    with pytest.raises(ValueError):
        compiled.route(_records()[0], now)


_TRACE = {
    "event_id": "e",
    "conversation_id": "c",
    "agent_id": "a",
    "config_revision": "r",
    "extraction_status": "ok",
    "flows": [],
}
