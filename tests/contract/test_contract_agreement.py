"""The models accept exactly what the published JSON Schemas accept, checked both ways on generated records.

1. Every record generated from a schema (hypothesis-jsonschema) is accepted by its model, and what the
   model writes back is valid against the schema.
2. A valid record with one value replaced by something tricky (a naive time, epoch milliseconds, "12.5",
   true, null, a raw vendor end reason, a list, ...) or one key removed is accepted by the model if and
   only if the schema accepts it: exhaustively (every place x every tricky value) on a record that fills
   every property the schema names, and at random places with random JSON on generated records.

The schema side is the independent `jsonschema` validator with format checking (rfc3339-validator), on
the committed files in schemas/json/.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import TypeAdapter, ValidationError

from schemas import generate
from schemas.events import (
    ACTION_MODELS,
    ActionCompleted,
    ActionRequested,
    ConversationEnded,
    ConversationExtracted,
    DecisionTrace,
    DestinationState,
)

JSON_DIR = Path(generate.__file__).resolve().parent / "json"

MODELS: dict[str, TypeAdapter[Any]] = {
    "ConversationEnded": TypeAdapter(ConversationEnded),
    "ConversationExtracted": TypeAdapter(ConversationExtracted),
    "DecisionTrace": TypeAdapter(DecisionTrace),
    "ActionRequested": TypeAdapter(ActionRequested),
    "ActionCompleted": TypeAdapter(ActionCompleted),
    "DestinationState": TypeAdapter(DestinationState),
    **{model.__name__: TypeAdapter(model) for model in ACTION_MODELS.values()},
}

# Values that models and schemas have disagreed on, or could: beside hypothesis' own JSON values.
TRICKY: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    -1,
    12.5,
    2**63,
    "",
    "12.5",
    "1",
    "true",
    "x" * 300,
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00",
    "2026-11-22T10:00:00.123+01:00",
    "2026-11-22T10:00:00.1234567Z",
    "2026-11-22 10:00:00Z",
    "2026-11-22t10:00:00z",
    "2026-11-22T10:00:00Z\n",
    "2026-02-30T10:00:00Z",
    "1969-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
    "2999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
    "2026-11-22",
    1795341600000,
    "customer-ended-call",
    "CUSTOMER_HANGUP",
    "webhook",
    "delivered",
    "inbound",
    [],
    {},
    ["a"],
    {"id": "x"},
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
REPLACEMENTS = st.sampled_from(TRICKY) | JSON_VALUES


def schema_of(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((JSON_DIR / f"{name}{generate.SCHEMA_SUFFIX}").read_bytes())
    return loaded


# The times hypothesis draws from: generating RFC 3339 strings that also match the year pattern by
# filtering is far too slow; the exhaustive test below tries the tricky ones in every place.
SAMPLE_TIMES = [
    "1970-01-01T00:00:00Z",
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00.5+05:30",
    "2026-02-28T23:59:59.123456-14:00",
    "2999-12-31T23:59:59+14:00",
]


def _sampled_times(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            return {"enum": SAMPLE_TIMES}
        return {k: _sampled_times(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_sampled_times(v) for v in node]
    return node


def generator_schema(name: str) -> dict[str, Any]:
    """What hypothesis-jsonschema generates from: the file without its $id (it resolves `#/$defs/...`
    against $id and knows no `urn:` base) and with times drawn from SAMPLE_TIMES."""
    return {k: _sampled_times(v) for k, v in schema_of(name).items() if k != "$id"}


def validator_of(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema_of(name), format_checker=FormatChecker())


def model_accepts(name: str, record: Any) -> tuple[bool, str]:
    try:
        MODELS[name].validate_json(json.dumps(record))
    except ValidationError as exc:
        return False, str(exc)
    return True, ""


def schema_accepts(validator: Draft202012Validator, record: Any) -> tuple[bool, str]:
    error = next(iter(validator.iter_errors(record)), None)
    return error is None, "" if error is None else f"{list(error.absolute_path)}: {error.message}"


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a record a value sits (not the root)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


def replaced(record: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(record, dict):
        return {**record, head: replaced(record[head], rest, value)}
    return [replaced(item, rest, value) if i == head else item for i, item in enumerate(record)]


def removed(record: Any, path: tuple[Any, ...]) -> Any:
    """The record without the key at `path` (a missing required field, or a defaulted one)."""
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in record.items() if k != head} if isinstance(record, dict) else record
    if isinstance(record, dict):
        return {**record, head: removed(record[head], rest)}
    return [removed(item, rest) if i == head else item for i, item in enumerate(record)]


# 25 per schema in `make test`; POSTCALL_CONTRACT_EXAMPLES=1000 for a deeper search.
SLOW = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],  # no shrinking: the message names the place
    max_examples=int(os.environ.get("POSTCALL_CONTRACT_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def maximal(schema: dict[str, Any], node: dict[str, Any] | None = None) -> Any:
    """A valid record that fills every property the schema names (the first branch of each choice)."""
    node = schema if node is None else node
    if "$ref" in node:
        return maximal(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]])
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"] or node[key]
            return maximal(schema, options[0])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return {name: maximal(schema, sub) for name, sub in node.get("properties", {}).items()}
    if kind == "array":
        return [maximal(schema, node["items"])] if "items" in node else []
    if kind == "string":
        if node.get("format") == "date-time":
            return "2026-11-22T10:00:00Z"
        return next(
            c for c in ("x", "X", "ab1", "x" * node.get("minLength", 1)) if re.search(node.get("pattern", ""), c)
        )
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return None


def test_every_published_schema_has_a_model() -> None:
    files = {p.name.removesuffix(generate.SCHEMA_SUFFIX) for p in JSON_DIR.glob(f"*{generate.SCHEMA_SUFFIX}")}
    assert files == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_record_the_schema_generates_is_accepted_by_the_model(name: str) -> None:
    validator = validator_of(name)

    @SLOW
    @given(from_schema(generator_schema(name)))
    def check(record: Any) -> None:
        assert schema_accepts(validator, record)[0]
        ok, why = model_accepts(name, record)
        assert ok, f"the schema accepts but the model refuses: {why}\n{json.dumps(record)[:2000]}"
        written = orjson.loads(MODELS[name].dump_json(MODELS[name].validate_json(json.dumps(record))))
        accepted, why = schema_accepts(validator, written)
        assert accepted, f"the model writes what the schema refuses: {why}"

    check()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_record_with_one_value_changed_is_accepted_by_both_or_neither(name: str) -> None:
    validator = validator_of(name)

    @SLOW
    @given(from_schema(generator_schema(name)), st.data())
    def check(record: Any, data: st.DataObject) -> None:
        places = list(paths(record))
        if not places:
            return
        path = data.draw(st.sampled_from(places), label="path")
        if data.draw(st.booleans(), label="remove") and isinstance(path[-1], str):
            changed = removed(record, path)
        else:
            changed = replaced(record, path, data.draw(REPLACEMENTS, label="value"))
        by_schema, schema_why = schema_accepts(validator, changed)
        by_model, model_why = model_accepts(name, changed)
        assert by_schema == by_model, (
            f"schema {'accepts' if by_schema else 'refuses'} ({schema_why}), "
            f"model {'accepts' if by_model else 'refuses'} ({model_why}) at {list(path)}:\n"
            f"{json.dumps(changed)[:2000]}"
        )

    check()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_place_of_a_full_record_with_every_tricky_value_is_judged_alike(name: str) -> None:
    validator, full = validator_of(name), maximal(schema_of(name))
    assert schema_accepts(validator, full)[0] and model_accepts(name, full)[0]
    disagreements = []
    for path in paths(full):
        changes = [replaced(full, path, value) for value in TRICKY]
        if isinstance(path[-1], str):
            changes.append(removed(full, path))
        for changed in changes:
            (by_schema, schema_why), (by_model, model_why) = (
                schema_accepts(validator, changed),
                model_accepts(name, changed),
            )
            if by_schema != by_model:
                disagreements.append(f"{list(path)}: schema {by_schema} ({schema_why}), model {by_model} ({model_why})")
    assert disagreements == [], "\n".join(disagreements[:20])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("started_at", "2026-11-22T10:00:00"),
        ("started_at", 1795341600000),
        ("duration_seconds", "12.5"),
        ("duration_seconds", True),
        ("end_reason", {"canonical": None}),
        ("end_reason", {"canonical": "customer-ended-call"}),
    ],
)
def test_the_values_the_issue_names_are_refused_by_both(field: str, value: Any) -> None:
    record = orjson.loads(
        (JSON_DIR.parents[1] / "examples/conversations/0001-support-resolved-hangup.json").read_bytes()
    )
    record[field] = value
    assert not schema_accepts(validator_of("ConversationEnded"), record)[0]
    assert not model_accepts("ConversationEnded", record)[0]
