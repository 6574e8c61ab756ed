"""Labelled conversations for `postcall eval`, from two formats.

`postcall` (our own, YAML; e.g. examples/eval/calls.yaml): the agents' configuration folder, then one
case per conversation:

    agents: ../agents                       # relative to this file
    cases:
      - id: sales-07-correction
        agent: sales-line
        ended_at: "2026-03-13T10:15:00-06:00"   # with its offset: relative dates resolve against it
        end_reason: CUSTOMER_HANGUP           # optional (CUSTOMER_HANGUP)
        direction: outbound                   # optional (inbound)
        transcript: |
          agent: Hi, this is Copperline...
          customer: Thursday works. No wait, Friday.
        expected: {follow_up_date: "2026-03-20", interest_level: medium}
        triggers: {appointment-booked: true}  # by the id of the flow whose `ai:` condition asks it
        note: "the customer corrects the day"

A field the case does not list is expected empty (the transcript does not support a value), and a
trigger it does not list is expected `false`: every case labels everything its agent extracts.

`sgd` (the Schema-Guided Dialogue corpus, ../shared/datasets/sgd): each single-service dialogue is a
conversation of an agent named after its service; the service's user-settable slots (required or
optional in one of its intents) become typed fields; the last USER turn's state gives the labels, each
with its equivalent spellings, normalised through the dialogue's canonical values. Relative dates
resolve against Friday 2019-03-01, the reference the corpus's canonical dates assume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from schemas.agent_checks import enabled_conditions
from schemas.agent_config import AiCondition, FieldSpec
from schemas.agent_loader import load_catalog
from schemas.agents import ExtractionSpec, extraction_spec
from schemas.events import Account, Agent, ConversationEnded, EndReasonInfo, Message

SGD_REFERENCE = datetime(2019, 3, 1, 12, 0, tzinfo=UTC)  # a Friday, as the corpus's canonical dates assume
_LINE = re.compile(r"^(agent|customer|human_agent|system)\s*:\s*(.*)$", re.I)


class DatasetError(ValueError):
    """A dataset that cannot be read: the message names the file, the case and what is wrong."""


@dataclass(frozen=True)
class Case:
    id: str
    event: ConversationEnded
    spec: ExtractionSpec
    # field -> the acceptable values (equivalent spellings); an empty tuple: expected empty
    expected: dict[str, tuple[Any, ...]]
    triggers: dict[str, bool] = field(default_factory=dict)  # trigger id -> expected answer
    note: str = ""


def conversation(
    case_id: str,
    agent: str,
    messages: list[Message],
    ended_at: datetime,
    *,
    end_reason: str = "CUSTOMER_HANGUP",
    direction: str = "inbound",
) -> ConversationEnded:
    duration = 15.0 * max(len(messages), 1)
    return ConversationEnded.model_validate({
        "event_id": f"eval-{case_id}", "conversation_id": case_id, "occurred_at": ended_at,
        "account": Account(id="eval"), "agent": Agent(id=agent), "direction": direction,
        "started_at": ended_at - timedelta(seconds=duration), "ended_at": ended_at, "duration_seconds": duration,
        "end_reason": EndReasonInfo.model_validate({"canonical": end_reason}), "messages": messages,
    })  # fmt: skip


# ── our own format ────────────────────────────────────────────────────────────────────────────────


def load_calls(path: Path) -> list[Case]:
    try:
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise DatasetError(f"{path}: expected a mapping with `agents` and a list of `cases`")
    catalog = load_catalog(path.parent / str(doc.get("agents", "agents")))
    if catalog.problems:
        raise DatasetError(f"{path}: the agents folder has problems: {catalog.problems[0]}")
    cases, seen = [], set()
    for i, raw in enumerate(doc["cases"]):
        where = f"{path}: case {i + 1}" + (f" ({raw.get('id')})" if isinstance(raw, dict) else "")
        try:
            case = _call_case(raw, catalog)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: {exc}") from exc
        if case.id in seen:
            raise DatasetError(f"{where}: duplicate id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    return cases


def _call_case(raw: dict[str, Any], catalog: Any) -> Case:
    config = catalog.lookup(str(raw["agent"]))
    if config is None:
        raise ValueError(f"unknown agent {raw['agent']!r}")
    spec = extraction_spec(config)
    fields = {f.name for f in spec.fields}
    expected_raw, labels = raw.get("expected") or {}, raw.get("triggers") or {}
    for key, value in (("expected", expected_raw), ("triggers", labels)):
        if not isinstance(value, dict):
            raise ValueError(f"`{key}` must be a mapping (name: value), not a {type(value).__name__}")
    if unknown := set(expected_raw) - fields:
        raise ValueError(f"expected values for fields the agent does not have: {sorted(unknown)}")
    flows = {f.id: f for f in config.flows}
    triggers = {t.id: False for t in spec.triggers}
    for flow_id, answer in labels.items():
        if flow_id not in flows:
            raise ValueError(f"unknown flow {flow_id!r} in triggers")
        asked = [c.trigger_id for c in enabled_conditions(flows[flow_id]) if isinstance(c, AiCondition)]
        if len(asked) != 1:
            raise ValueError(f"flow {flow_id!r} asks {len(asked)} AI questions; label flows that ask one")
        triggers[asked[0]] = bool(answer)
    ended_at = datetime.fromisoformat(str(raw["ended_at"]))
    if ended_at.tzinfo is None:
        raise ValueError("ended_at needs its UTC offset")
    event = conversation(str(raw["id"]), config.agent, parse_transcript(str(raw["transcript"])), ended_at,
                         end_reason=str(raw.get("end_reason", "CUSTOMER_HANGUP")),
                         direction=str(raw.get("direction", "inbound")))  # fmt: skip
    expected = {f: () if expected_raw.get(f) is None else (expected_raw[f],) for f in sorted(fields)}
    return Case(str(raw["id"]), event, spec, expected, triggers, str(raw.get("note", "")))


def parse_transcript(text: str) -> list[Message]:
    """`role: text` lines; a line without a role continues the previous message."""
    messages: list[Message] = []
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        if m := _LINE.match(line.strip()):
            messages.append(Message.model_validate({"role": m.group(1).lower(), "text": m.group(2).strip()}))
        elif messages:
            messages[-1] = Message(role=messages[-1].role, text=f"{messages[-1].text} {line.strip()}")
        else:
            raise ValueError(f"transcript line without a role: {line.strip()[:60]!r}")
    return messages


# ── Schema-Guided Dialogue ────────────────────────────────────────────────────────────────────────


def load_sgd(folder: Path, limit: int | None = None) -> list[Case]:
    try:
        schema = {s["service_name"]: s for s in orjson.loads((folder / "schema.json").read_bytes())}
        dialogues = orjson.loads(_dialogue_file(folder).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DatasetError(f"{folder}: {exc}") from exc
    specs: dict[str, ExtractionSpec] = {}
    cases = []
    for d in dialogues:
        if len(d["services"]) != 1:
            continue
        service = d["services"][0]
        if service not in specs:
            specs[service] = sgd_spec(schema[service])
        cases.append(_sgd_case(d, specs[service]))
        if limit is not None and len(cases) >= limit:
            break
    return cases


def _dialogue_file(folder: Path) -> Path:
    for name in ("train_sample.json", "dialogues.json"):
        if (folder / name).exists():
            return folder / name
    raise DatasetError(f"{folder}: no train_sample.json or dialogues.json")


def sgd_type(slot: dict[str, Any]) -> str:
    name, values = slot["name"], slot["possible_values"]
    if slot["is_categorical"]:
        if set(values) <= {"True", "False"}:
            return "boolean"
        return "integer" if all(v.isdigit() for v in values) else "enum"
    if "date" in name:
        return "date"
    if "time" in name:
        return "time"
    if name.startswith("number_of") or name.endswith("_count"):
        return "integer"
    return "number" if name in ("amount", "rating", "price", "fare") else "string"


def sgd_spec(service: dict[str, Any]) -> ExtractionSpec:
    settable: set[str] = set()
    for intent in service["intents"]:
        settable |= set(intent["required_slots"]) | set(intent["optional_slots"])
    fields = []
    for slot in service["slots"]:
        if slot["name"] not in settable:
            continue
        kind = sgd_type(slot)
        values = list(slot["possible_values"]) if kind == "enum" else None
        fields.append(FieldSpec.model_validate({"name": slot["name"], "type": kind, "description": slot["description"],
                                                "values": values}))  # fmt: skip
    return ExtractionSpec(agent_id=service["service_name"], config_revision="sgd", fields=fields, summary=False)


def _sgd_case(d: dict[str, Any], spec: ExtractionSpec) -> Case:
    service = d["services"][0]
    canon: dict[tuple[str, str], str] = {}
    state: dict[str, list[str]] = {}
    messages = []
    for turn in d["turns"]:
        messages.append(Message(role="customer" if turn["speaker"] == "USER" else "agent", text=turn["utterance"]))
        for frame in turn["frames"]:
            for a in frame["actions"]:
                for v, c in zip(a.get("values", []), a.get("canonical_values", []), strict=False):
                    canon.setdefault((a["slot"], v), c)
            if turn["speaker"] == "USER" and frame["service"] == service:
                state = frame["state"]["slot_values"]
    types = {f.name: f.type for f in spec.fields}
    expected: dict[str, tuple[Any, ...]] = {name: () for name in types}
    for slot, surface in state.items():
        if slot in types:
            values = [canon.get((slot, s), s) for s in surface]
            expected[slot] = tuple(dict.fromkeys(_sgd_value(types[slot], v) for v in [*values, *surface]))
    event = conversation(d["dialogue_id"], service, messages, SGD_REFERENCE)
    return Case(d["dialogue_id"], event, spec, expected)


def _sgd_value(kind: str, v: str) -> Any:
    if kind == "boolean":
        return v == "True"
    if kind in ("integer", "number"):
        try:
            return int(v) if kind == "integer" else float(v)
        except ValueError:
            return v
    return v
