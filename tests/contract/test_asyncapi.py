"""The committed AsyncAPI document describes every registry topic, and every reference in it resolves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

from schemas import headers as h
from schemas import routes as r
from schemas import topics as t
from schemas.events import ACTION_MODELS

ASYNCAPI = Path(t.__file__).resolve().parent / "asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe", pure=True).load(ASYNCAPI.read_text())
    return loaded


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer, or load the file a relative reference names (beside the YAML)."""
    location, _, pointer = ref.partition("#")
    node: Any = orjson.loads((ASYNCAPI.parent / location).read_bytes()) if location else doc
    for part in filter(None, pointer.split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _message(doc: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    channel = doc["channels"][topic]
    return [_resolve(doc, ref["$ref"]) for ref in channel["messages"].values()]


def test_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]


def test_every_registry_topic_is_a_channel_and_nothing_else(doc: dict[str, Any]) -> None:
    names = [topic.name for topic in r.registry()]
    assert sorted(doc["channels"]) == sorted(names)
    assert all(doc["channels"][name]["address"] == name for name in names)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = sorted(set(_refs(doc)))
    assert len(refs) > 30
    unresolved = []
    for ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, FileNotFoundError) as exc:
            unresolved.append(f"{ref}: {exc!r}")
    assert unresolved == []


def test_every_message_payload_is_its_model_schema(doc: dict[str, Any]) -> None:
    for message in doc["components"]["messages"].values():
        assert message["payload"]["schemaFormat"] == "application/schema+json;version=draft-2020-12"
        payload = _resolve(doc, message["payload"]["schema"]["$ref"])
        name = message["name"].removesuffix("DeadLetter").removesuffix("Retry").removesuffix("Replay")
        assert payload["title"] == name
        assert payload["type"] == "object" and payload["properties"]


def test_main_topics_carry_their_cloudevents_type(doc: dict[str, Any]) -> None:
    assert set(t.CE_TYPES) == {
        t.CONVERSATION_ENDED,
        t.CONVERSATION_EXTRACTED,
        t.DECISIONS,
        *t.ACTION_TOPICS,
        t.ACTION_RESULTS,
        t.DESTINATION_STATE,
    }
    for topic, ce_type in t.CE_TYPES.items():
        (message,) = _message(doc, topic)
        parts = message["headers"]["allOf"]
        assert {"$ref": "#/components/schemas/CloudEventsHeaders"} in parts
        assert {"type": "object", "properties": {h.CE_TYPE: {"const": ce_type}}} in parts


def test_header_groups_list_every_name_in_headers_module(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    ce = schemas["CloudEventsHeaders"]
    assert set(ce["required"]) == {h.CE_ID, h.CE_TYPE, h.CE_SOURCE, h.CE_SPECVERSION, h.CE_TIME, h.CONTENT_TYPE}
    assert ce["properties"][h.CE_SPECVERSION]["const"] == "1.0"
    assert set(schemas["RetryHeaders"]["properties"]) == set(h.RETRY_HEADERS)
    assert set(schemas["DeadLetterHeaders"]["properties"]) == set(h.DLQ_HEADERS)


def test_replay_headers_list_every_header_a_replay_adds(doc: dict[str, Any]) -> None:
    """A record replayed from a dead-letter topic (postcall dlq replay, the console's redrive, POST
    /dead-letters/replay: one function) carries what services.cli.dlq.replay_headers adds; the document
    left out x-replayed-by, the operator who replayed it, which a consumer of an action topic sees."""
    from services.cli.dlq import DeadLetter, replay_headers

    letter = DeadLetter("postcall.dispatcher.dlq.v1", 0, 0, 0, None, None, {})
    added = set(replay_headers(letter, "ops@host"))
    replay = doc["components"]["schemas"]["ReplayHeaders"]
    assert set(replay["properties"]) == added
    assert "console" in replay["description"]


def test_private_replay_headers_list_every_header_a_replay_to_the_recorder_adds(doc: dict[str, Any]) -> None:
    """A recorder dead letter goes back to the recorder's own replay topic, keeping where it first arrived
    (services.cli.dlq.replay_headers, private): the document names those headers too."""
    from services.cli.dlq import DeadLetter, replay_headers

    origin = {name: "1" for name in h.ORIGIN}
    letter = DeadLetter("postcall.recorder.dlq.v1", 0, 0, 0, None, None, {**origin, h.EXCEPTION_MESSAGE: "x"})
    added = set(replay_headers(letter, "ops@host", private=True))
    assert set(doc["components"]["schemas"]["PrivateReplayHeaders"]["properties"]) == added


def test_ce_subject_is_described_as_the_record_key_it_is(doc: dict[str, Any]) -> None:
    """The runtime sets ce_subject to the record's key (services.common.process.outputs): on the results
    topic `<action_id>/attempt-<n>` for failed and dead_lettered, on destination states the state's key.
    It was described as "the conversation_id (or action_id on action results)": a consumer joining a
    failed result to its action by ce_subject found no action. tests/unit/dispatcher/test_handler.py
    checks the header on real results."""
    text = doc["components"]["schemas"]["CloudEventsHeaders"]["properties"][h.CE_SUBJECT]["description"]
    assert "key" in text and "<action_id>/attempt-<n>" in text and "destination" in text


@pytest.mark.parametrize("service", r.SERVICES)
def test_retry_dead_letter_and_replay_topics_add_their_headers(doc: dict[str, Any], service: str) -> None:
    route = r.route_of(service)
    for topic, group in [
        *((tier, "RetryHeaders") for tier in route.retry_topics),
        (t.dead_letter_topic(service), "DeadLetterHeaders"),
        *((replay, "PrivateReplayHeaders") for replay in route.replay_topics),
    ]:
        messages = _message(doc, topic)
        assert messages, topic
        for message in messages:
            assert {"$ref": f"#/components/schemas/{group}"} in message["headers"]["allOf"], topic


def test_dead_letters_of_the_dispatcher_cover_every_action_type(doc: dict[str, Any]) -> None:
    names = {m["name"] for m in _message(doc, t.dead_letter_topic("dispatcher"))}
    assert names == {f"{model.__name__}DeadLetter" for model in ACTION_MODELS.values()}


def test_keys_are_conversation_id_except_action_results_and_destination_state(doc: dict[str, Any]) -> None:
    own_keys = {"ActionCompleted": "action_id", "DestinationState": "<kind>/<destination>"}
    for topic in r.registry():
        for message in _message(doc, topic.name):
            key = message["bindings"]["kafka"]["key"]["description"]
            # an ActionCompleted keeps its key in the recorder's dead-letter topic too
            expected = next((k for name, k in own_keys.items() if message["name"].startswith(name)), "conversation_id")
            assert expected in key, (topic.name, key)


def test_operations_name_every_producer_and_consumer(doc: dict[str, Any]) -> None:
    ops = doc["operations"].values()
    for topic in r.registry():
        channel_ref = {"$ref": f"#/channels/{topic.name}"}
        senders = {op["tags"][0]["name"] for op in ops if op["channel"] == channel_ref and op["action"] == "send"}
        receivers = {op["tags"][0]["name"] for op in ops if op["channel"] == channel_ref and op["action"] == "receive"}
        assert senders == set(topic.producers), topic.name
        assert receivers == set(topic.consumers), topic.name
    for op in ops:
        channel_ref = op["channel"]["$ref"]
        assert all(m["$ref"].startswith(f"{channel_ref}/messages/") for m in op["messages"])


def test_document_does_not_depend_on_partition_env() -> None:
    text = ASYNCAPI.read_text()
    assert "partitions" not in text and "replicas" not in text
