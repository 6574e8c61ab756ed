"""Where a replay sends a dead letter (`postcall dlq replay`, the console's redrive and POST /dead-letters/replay
share services.cli.dlq.replay_records): the recorder's letters to the recorder alone, the others unchanged."""

from __future__ import annotations

import pytest

from schemas import headers as h
from schemas.routes import RECORDER
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, dead_letter_topic
from services.cli.dlq import DeadLetter, replay_records, replay_target

ORIGIN = {h.ORIGINAL_PARTITION: "4", h.ORIGINAL_OFFSET: "41", h.ORIGINAL_TIMESTAMP: "1773133200000"}
FAILURE = {h.ATTEMPTS: "1", h.EXCEPTION_MESSAGE: "PermanentError: the store refused this record", "ce_id": "e1"}


def letter(service: str, original: str) -> DeadLetter:
    headers = {**FAILURE, **ORIGIN, h.ORIGINAL_TOPIC: original, h.DLQ_SERVICE: service}
    return DeadLetter(dead_letter_topic(service), 2, 7, 0, b"c1", b"{}", headers)


@pytest.mark.parametrize("original", [CONVERSATION_ENDED, ACTION_RESULTS, "postcall.router.dlq.v1"])
def test_a_recorder_dead_letter_goes_to_the_recorders_replay_topic_saying_where_it_first_arrived(
    original: str,
) -> None:
    """Replayed to its original topic, a conversation the store refused was extracted again, and a letter taken
    from another service's dead-letter topic listed there as pending again: every topic the recorder reads is
    another service's too."""
    (copy,) = replay_records([letter("recorder", f" {original} ")], "ops@box")
    assert copy.topic == RECORDER.replay_topics[0] == "postcall.recorder.replay.v1"
    assert {name: copy.headers[name] for name in h.ORIGIN} == {**ORIGIN, h.ORIGINAL_TOPIC: original}
    assert copy.headers[h.REPLAYED_FROM] == f"{RECORDER.dead_letter_topic}:2:7" and copy.headers["ce_id"] == "e1"
    assert not {h.ATTEMPTS, h.EXCEPTION_MESSAGE, h.DLQ_SERVICE} & set(copy.headers)
    assert copy.then is not None and (copy.then.topic, copy.then.partition) == (RECORDER.dead_letter_topic, 2)


def test_another_services_dead_letter_still_goes_to_its_original_topic_without_hop_headers() -> None:
    (copy,) = replay_records([letter("router", CONVERSATION_EXTRACTED)], "ops@box")
    assert copy.topic == CONVERSATION_EXTRACTED
    assert not h.HOP_HEADERS & set(copy.headers) and copy.headers[h.REPLAY_COUNT] == "1"


@pytest.mark.parametrize("original", [RECORDER.replay_topics[0], RECORDER.dead_letter_topic, "postcall.router.x.v1"])
def test_a_recorder_dead_letter_from_a_topic_it_does_not_read_is_not_replayed(original: str) -> None:
    """Its own replay or dead-letter topic (a forged header; its own letters stay where they are), or a topic of
    ours it does not consume."""
    assert replay_target(letter("recorder", original)) is None
