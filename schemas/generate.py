"""Generate the wire documentation from the code: JSON Schema per event model, and one AsyncAPI document.

    python -m schemas.generate            write schemas/json/*.v1.schema.json and schemas/asyncapi.yaml
    python -m schemas.generate --check    write nothing; exit 1 and name every file that differs

The pydantic models (schemas/events.py), the streams and routes (schemas/topics.py, schemas/routes.py)
and the header names (schemas/headers.py) are the source of truth; the generated files are committed
so that platform teams and subscribers can read them without Python, and a contract test fails when
they drift. Output is
deterministic (sorted JSON keys, registry order in YAML) and independent of the environment: partition
counts and replication, which come from env, are deliberately left out.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from schemas import headers as h
from schemas import routes as r
from schemas import topics as t
from schemas.events import (
    ACTION_MODELS,
    ActionCompleted,
    ActionRequested,
    ConversationEnded,
    ConversationExtracted,
    DecisionTrace,
    DestinationState,
)

Json = dict[str, Any]

PACKAGE_DIR = Path(__file__).resolve().parent
JSON_DIR_NAME = "json"
ASYNCAPI_NAME = "asyncapi.yaml"
SCHEMA_SUFFIX = ".v1.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# How AsyncAPI names the payloads' schema format (a Multi Format Schema Object).
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
# Each file's $id: a name, not a place to fetch from (nothing is hosted); $refs inside a file are local.
SCHEMA_ID_PREFIX = "urn:postcall:schema:"
KAFKA_BINDING_VERSION = "0.5.0"

# Each main topic's stream: its payload model, key and ce_type (schemas/topics.py).
STREAMS: dict[str, t.Stream[Any]] = {stream.topic: stream for stream in t.STREAMS}


# ── JSON Schema ───────────────────────────────────────────────────────────────────────────────────


def json_schemas() -> dict[str, Json]:
    """File name -> JSON Schema: one per event, the ActionRequested union, and one per action type."""
    union = TypeAdapter(ActionRequested).json_schema()
    union["description"] = "Any action command; `type` says which. Each postcall.actions.* topic has one type."
    # a reader of the union needs `type` to choose (each type's own schema lets it default)
    union["type"] = "object"
    union["properties"] = {"type": {"enum": list(ACTION_MODELS)}}
    union["required"] = ["type"]
    raw: dict[str, Json] = {
        "ConversationEnded": ConversationEnded.model_json_schema(),
        "ConversationExtracted": ConversationExtracted.model_json_schema(),
        "DecisionTrace": DecisionTrace.model_json_schema(),
        "ActionRequested": union,
        **{model.__name__: model.model_json_schema() for model in ACTION_MODELS.values()},
        "ActionCompleted": ActionCompleted.model_json_schema(),
        "DestinationState": DestinationState.model_json_schema(),
    }
    return {
        f"{name}{SCHEMA_SUFFIX}": {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"{SCHEMA_ID_PREFIX}{name}{SCHEMA_SUFFIX}",
            **portable(schema),
            "title": name,
        }
        for name, schema in raw.items()
    }


def portable(node: Any) -> Any:
    """Plain JSON Schema 2020-12: pydantic's OpenAPI-only `discriminator` is dropped (the `const` of each
    branch's `type` already decides which one applies), so every validator reads the files alike."""
    if isinstance(node, dict):
        return {key: portable(value) for key, value in node.items() if key != "discriminator"}
    if isinstance(node, list):
        return [portable(value) for value in node]
    return node


def dump_json(schema: Json) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# ── Header schemas ────────────────────────────────────────────────────────────────────────────────

HEADER_DOCS: dict[str, str] = {
    h.CE_ID: "Unique per event: the payload's event_id (an action command's: its action_id; each result of an "
    "action has an id of its own). Redeliveries of one event share it.",
    h.CE_TYPE: "Event type, one per main topic (see the message), e.g. dev.postcall.conversation.ended.v1.",
    h.CE_SOURCE: "URI-reference naming the producer, e.g. /postcall/extractor or /vapi/org-42.",
    h.CE_SPECVERSION: "CloudEvents spec version.",
    h.CE_TIME: "When the event happened, RFC 3339 UTC.",
    h.CE_SUBJECT: "Optional: the record's key. The conversation_id; on action results the result's key "
    "(the action_id, `<action_id>/attempt-<n>` for failed and dead_lettered); on destination states the "
    "state's key (`disabled/<destination>`, ...).",
    h.CONTENT_TYPE: "The value is JSON (CloudEvents binary mode datacontenttype).",
    h.ORIGINAL_TOPIC: "The main topic the record first arrived on.",
    h.ORIGINAL_PARTITION: "Its partition there.",
    h.ORIGINAL_OFFSET: "Its offset there.",
    h.ORIGINAL_TIMESTAMP: "Its record timestamp there, epoch milliseconds.",
    h.ATTEMPTS: "Attempts made so far (a retry tier's copy is attempt x-attempts + 1).",
    h.FIRST_FAILURE_AT: "When handling first failed.",
    h.LAST_FAILURE_AT: "When it last failed.",
    h.EXCEPTION_CLASS: "The exception class of the last failure.",
    h.EXCEPTION_MESSAGE: "The last failure, class and message, truncated.",
    h.RETRY_DUE_AT: "When the record becomes due (epoch seconds); the service never handles it earlier.",
    h.DLQ_CONSUMER_GROUP: "The consumer group that gave up.",
    h.DLQ_SERVICE: "The service that gave up.",
    h.DLQ_SERVICE_VERSION: "That service's version.",
    h.DLQ_HOST: "The host or pod that gave up.",
    h.DLQ_FAILURE_CATEGORY: "poison (undecodable or off-schema), permanent, or retryable-exhausted.",
    h.REPLAY_COUNT: "How many times the record was replayed from a dead-letter topic.",
    h.REPLAYED_FROM: "The dead-letter topic it was replayed from.",
    h.REPLAYED_AT: "When it was replayed.",
    h.REPLAYED_BY: "Who replayed it: the API token's name (the console, POST /dead-letters/replay; `local` on an "
    "unauthenticated loopback API), or user@host for postcall dlq replay.",
}

CE_REQUIRED = (h.CE_ID, h.CE_TYPE, h.CE_SOURCE, h.CE_SPECVERSION, h.CE_TIME, h.CONTENT_TYPE)
CE_CONSTANTS = {h.CE_SPECVERSION: h.CE_SPECVERSION_VALUE, h.CONTENT_TYPE: h.JSON_CONTENT_TYPE}
RETRY_REQUIRED = (h.ATTEMPTS, h.RETRY_DUE_AT, h.ORIGINAL_TOPIC)
DLQ_REQUIRED = (h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.DLQ_FAILURE_CATEGORY)


def _header(name: str) -> Json:
    schema: Json = {"type": "string", "description": HEADER_DOCS.get(name, f"See schemas/headers.py ({name}).")}
    if name in CE_CONSTANTS:
        schema["const"] = CE_CONSTANTS[name]
    if name == h.CE_TIME:
        schema["format"] = "date-time"
    if name == h.DLQ_FAILURE_CATEGORY:
        schema["enum"] = [h.CATEGORY_POISON, h.CATEGORY_PERMANENT, h.CATEGORY_RETRIES_EXHAUSTED]
    return schema


def _header_object(description: str, names: Sequence[str], required: Sequence[str]) -> Json:
    schema: Json = {
        "type": "object",
        "description": description,
        "properties": {name: _header(name) for name in names},
    }
    if required:
        schema["required"] = list(required)
    return schema


def header_schemas() -> Json:
    """components.schemas: the header groups, built from the names in schemas/headers.py."""
    ce_names = (*CE_REQUIRED, h.CE_SUBJECT)
    replay = (h.REPLAY_COUNT, h.REPLAYED_FROM, h.REPLAYED_AT, h.REPLAYED_BY)
    return {
        "CloudEventsHeaders": _header_object(
            "CloudEvents Kafka binding, binary mode: on every record.", ce_names, CE_REQUIRED
        ),
        "ReplayHeaders": _header_object(
            "Set when a replay (`postcall dlq replay`, the console's redrive, POST /dead-letters/replay) put the "
            "record back from a dead-letter topic.",
            replay,
            (),
        ),
        "PrivateReplayHeaders": _header_object(
            "Set on a dead letter replayed to its service's own replay topic (a route with private replay: the "
            "recorder): the replay headers, and where the record first arrived, which the service reads it as.",
            (*replay, *h.ORIGIN),
            (h.ORIGINAL_TOPIC,),
        ),
        "RetryHeaders": _header_object(
            "Set on records in a retry tier (delay topic).", h.RETRY_HEADERS, RETRY_REQUIRED
        ),
        "DeadLetterHeaders": _header_object(
            "Set on dead letters; key and value are the original bytes.", h.DLQ_HEADERS, DLQ_REQUIRED
        ),
    }


# ── AsyncAPI ──────────────────────────────────────────────────────────────────────────────────────


def _ref(pointer: str) -> Json:
    return {"$ref": pointer}


def _inputs_by_service() -> dict[str, list[str]]:
    """Main topics each service handles (with retries): consumed by it and produced by someone else. Raw
    inputs (the recorder reads other services' dead-letter and retry topics) are not messages of their own."""
    return {route.service: [name for name in route.input_topics if name in STREAMS] for route in r.ROUTES}


# The header group a message adds to the CloudEvents ones: main topics may carry replay headers.
VARIANT_HEADERS = {
    "": "ReplayHeaders",
    "Retry": "RetryHeaders",
    "DeadLetter": "DeadLetterHeaders",
    "Replay": "PrivateReplayHeaders",
}


def _message(topic: str, variant: str = "") -> Json:
    """A components message: a main topic's record, or its copy on a retry, dead-letter or replay topic."""
    stream = STREAMS[topic]
    name = stream.model.__name__
    headers = [
        _ref("#/components/schemas/CloudEventsHeaders"),
        _ref(f"#/components/schemas/{VARIANT_HEADERS[variant]}"),
        {"type": "object", "properties": {h.CE_TYPE: {"const": stream.ce_type}}},
    ]
    pointer = stream.conversation_pointer
    summary = (stream.model.__doc__ or name).strip().splitlines()[0]
    if variant == "DeadLetter":
        summary += " Dead-lettered: a poison record keeps whatever bytes and headers arrived."
    if variant == "Replay":
        summary += " Replayed from its service's dead-letter topic, to it alone: read as if where it first arrived."
    return {
        "name": f"{name}{variant}",
        "title": f"{name} ({variant})" if variant else name,
        "summary": summary,
        "contentType": h.JSON_CONTENT_TYPE,
        "headers": {"allOf": headers},
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": _ref(f"./{JSON_DIR_NAME}/{name}{SCHEMA_SUFFIX}")},
        **(
            {
                "correlationId": {
                    "description": "The conversation_id, shared by every record of one conversation.",
                    "location": f"$message.payload#{pointer}",
                }
            }
            if pointer is not None
            else {}
        ),
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"The {stream.key_doc}."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _message_id(main_topic: str, variant: str) -> str:
    return f"{STREAMS[main_topic].model.__name__}{variant}"


def _carried(topic: t.Topic, inputs: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(main topic, variant) of every message a topic carries: retry, dead-letter and replay topics carry
    copies of their service's inputs."""
    if topic.name in STREAMS:
        return [(topic.name, "")]
    for service, names in inputs.items():
        variant = _variant_of(topic.name, service)
        if variant:
            return [(name, variant) for name in names]
    raise ValueError(f"topic {topic.name!r} has no stream: declare it in schemas/topics.py")


def _variant_of(topic: str, service: str) -> str:
    route = r.route_of(service)
    if topic == route.dead_letter_topic:
        return "DeadLetter"
    if topic in route.replay_topics:
        return "Replay"
    return "Retry" if topic in route.retry_topics else ""


def _channel(topic: t.Topic, message_ids: Sequence[str]) -> Json:
    stream = STREAMS.get(topic.name)
    key = stream.key_doc if stream is not None else "conversation_id"
    return {
        "address": topic.name,
        "title": topic.name,
        "description": f"{topic.description} Key: {key}.",
        "messages": {mid: _ref(f"#/components/messages/{mid}") for mid in message_ids},
        "bindings": {
            "kafka": {
                "topic": topic.name,
                "topicConfiguration": {
                    "cleanup.policy": topic.cleanup_policy.split(","),
                    "retention.ms": topic.retention_ms,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operations(topic: t.Topic, message_ids: Sequence[str]) -> Json:
    """One send operation per producer and one receive per consumer, tagged with who it is."""
    channel = f"#/channels/{topic.name}"
    ops: Json = {}
    for action, actors in (("send", topic.producers), ("receive", topic.consumers)):
        for actor in actors:
            ops[f"{actor.replace(' ', '-')}.{action}.{topic.name}"] = {
                "action": action,
                "channel": _ref(channel),
                "title": f"{actor} {'produces to' if action == 'send' else 'consumes'} {topic.name}",
                "tags": [{"name": actor}],
                "messages": [_ref(f"{channel}/messages/{mid}") for mid in message_ids],
            }
    return ops


INFO_DESCRIPTION = """\
Every Kafka topic of postcall: what is on it, its key, its headers and who produces and consumes it.
Generated by `python -m schemas.generate` from schemas/topics.py, schemas/routes.py, schemas/events.py
and schemas/headers.py.

* Values are JSON (orjson); payload schemas are in ./json/ (JSON Schema 2020-12, each with its $id;
  every payload names its schemaFormat). Times carry a time zone, numbers are JSON numbers. Readers ignore
  unknown fields, so producers may add fields within v1; a breaking change is a new topic (.v2).
* Keys: conversation_id everywhere on the main path (one conversation's records stay in order on one
  partition); action_id on postcall.action-results.v1, which is compacted.
* Headers follow the CloudEvents Kafka binding (ce_id, ce_type, ce_source, ce_specversion, ce_time,
  content-type) on every record. A retry tier's copy and a dead letter keep the original key and value
  byte for byte and carry one family of hop headers (x-original-*, x-attempts, x-first-failure-at,
  x-last-failure-at, x-exception-*); a retry copy adds x-retry-due-at, a dead letter x-dlq-*; replays
  add x-replay-*. The recorder's dead letters are replayed to its own replay topic, keeping x-original-topic,
  -partition, -offset and -timestamp: it reads each as if from there, and no other consumer sees it.
* Partition counts and replication are deployment settings (POSTCALL_TOPIC_PARTITIONS,
  POSTCALL_TOPIC_REPLICATION), not part of the contract.
"""


def asyncapi_document() -> Json:
    """The AsyncAPI 3.0.0 document: one channel per registry topic, operations per producer and consumer."""
    inputs = _inputs_by_service()
    channels: Json = {}
    operations: Json = {}
    messages: Json = {}
    for topic in r.registry():
        carried = _carried(topic, inputs)
        ids = [_message_id(main, variant) for main, variant in carried]
        channels[topic.name] = _channel(topic, ids)
        operations.update(_operations(topic, ids))
        for (main, variant), mid in zip(carried, ids, strict=True):
            messages.setdefault(mid, _message(main, variant))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "postcall",
            "version": "1.0.0",
            "description": LiteralScalarString(INFO_DESCRIPTION),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": h.JSON_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "Any Kafka cluster; SASL/TLS in production.",
                "variables": {"bootstrap": {"default": "localhost:9092"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": header_schemas(), "messages": messages},
    }


def dump_yaml(document: Json) -> bytes:
    yaml = YAML()
    yaml.width = 4096  # never re-wrap long descriptions: keeps diffs of the generated file small
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    buffer.write("# Generated by `python -m schemas.generate`; do not edit by hand.\n")
    yaml.dump(document, buffer)
    return buffer.getvalue().encode()


# ── Files and CLI ─────────────────────────────────────────────────────────────────────────────────


def render(schemas_dir: Path = PACKAGE_DIR) -> dict[Path, bytes]:
    """Every generated file, path -> exact bytes."""
    files = {schemas_dir / JSON_DIR_NAME / name: dump_json(s) for name, s in json_schemas().items()}
    files[schemas_dir / ASYNCAPI_NAME] = dump_yaml(asyncapi_document())
    return files


def drifted(files: dict[Path, bytes], schemas_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Files that differ from what the code generates, are missing, or are generated leftovers."""
    stale = [p for p in (schemas_dir / JSON_DIR_NAME).glob(f"*{SCHEMA_SUFFIX}") if p not in files]
    changed = [p for p, content in files.items() if not p.exists() or p.read_bytes() != content]
    return sorted(changed + stale)


def write(files: dict[Path, bytes], schemas_dir: Path = PACKAGE_DIR) -> None:
    for path in (schemas_dir / JSON_DIR_NAME).glob(f"*{SCHEMA_SUFFIX}"):
        if path not in files:
            path.unlink()
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    parser.add_argument("--dir", type=Path, default=PACKAGE_DIR, help="the schemas directory (default: package)")
    args = parser.parse_args(argv)
    files = render(args.dir)
    if args.check:
        bad = drifted(files, args.dir)
        for path in bad:
            print(f"drifted: {path} (run `python -m schemas.generate`)")
        return 1 if bad else 0
    write(files, args.dir)
    print(f"wrote {len(files)} files under {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
