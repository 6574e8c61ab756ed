"""Every main topic, declared once as a stream: its name, the one event model on it, its CloudEvents
`ce_type`, its key, retention and cleanup. Retry, dead-letter and replay topics are named here and declared
by each service's route (schemas/routes.py), which also assembles the topic registry.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schemas.events import (
    ACTION_MODELS,
    ActionBase,
    ActionCompleted,
    ConversationEnded,
    ConversationExtracted,
    DecisionTrace,
    DestinationState,
)

M = TypeVar("M")

HOUR_MS = 3_600_000
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# What a consumer reads by default (RuntimeSettings.max_record_bytes); a larger record is dead-lettered as poison.
READ_RECORD_BYTES = 4 * 1024 * 1024
# The largest ConversationEnded (encoded) the ingress and `postcall publish` accept: the extracted record is
# the conversation plus its extraction, and the router must still read it. A larger event was acknowledged
# (2xx) and then dead-lettered downstream. The extraction's room is generous: an LLM's answer is capped by
# its max_tokens, a platform's taken texts by 10,000 characters a field.
EXTRACTION_ROOM_BYTES = 512 * 1024
MAX_EVENT_BYTES = READ_RECORD_BYTES - EXTRACTION_ROOM_BYTES
DAY_MS = 24 * HOUR_MS

CONVERSATION_ENDED = "postcall.conversation-ended.v1"
CONVERSATION_EXTRACTED = "postcall.conversation-extracted.v1"
DECISIONS = "postcall.decisions.v1"
ACTION_RESULTS = "postcall.action-results.v1"
DESTINATION_STATE = "postcall.destination-state.v1"

ACTION_TYPES = tuple(ACTION_MODELS)  # one per action model: a new action type is a new model


def action_topic(action_type: str) -> str:
    """`schedule_call` -> `postcall.actions.schedule-call.v1`."""
    if action_type not in ACTION_TYPES:
        raise ValueError(f"unknown action type {action_type!r}")
    return f"postcall.actions.{action_type.replace('_', '-')}.v1"


ACTION_TOPICS = tuple(action_topic(t) for t in ACTION_TYPES)
CE_TYPE_PREFIX = "dev.postcall"


def retry_topic(service: str, tier: int) -> str:
    """Tier numbers start at 1: `postcall.dispatcher.retry-1.v1`."""
    return f"postcall.{service}.retry-{tier}.v1"


def dead_letter_topic(service: str) -> str:
    return f"postcall.{service}.dlq.v1"


def replay_topic(service: str) -> str:
    """Where a service that replays privately (Route.private_replay) gets its dead letters back:
    `postcall.recorder.replay.v1`."""
    return f"postcall.{service}.replay.v1"


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    configs: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            # transcripts can be large (claim check above this); every hop carries the conversation
            "max.message.bytes": str(MAX_MESSAGE_BYTES),
            **self.configs,
        }


def default_partitions() -> int:
    """Main-path partition count; POSTCALL_TOPIC_PARTITIONS lowers it for laptops and tests."""
    return int(os.environ.get("POSTCALL_TOPIC_PARTITIONS", "12"))


def default_replication() -> int:
    return int(os.environ.get("POSTCALL_TOPIC_REPLICATION", "3"))


@dataclass(frozen=True)
class Stream(Generic[M]):
    """A main topic and the one event model on it. `key` computes a record's key from its event (the
    runtime sets it; handlers never do); `key_doc` says what it is in the AsyncAPI document."""

    topic: str
    model: type[M]
    ce_type: str
    key: Callable[[M], str | None]
    key_doc: str
    description: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    #: producers and consumers outside the services' routes (the topic registry adds the routes')
    external_producers: tuple[str, ...] = ()
    external_consumers: tuple[str, ...] = ()
    #: where the conversation id sits in the payload (AsyncAPI correlation id); None: not about one
    conversation_pointer: str | None = "/conversation_id"
    #: None: the main path's partition count (POSTCALL_TOPIC_PARTITIONS)
    partitions: int | None = None

    def renamed(self, rename: Callable[[str], str]) -> Stream[M]:
        """The same stream on another topic name (tests and benchmarks run on their own topics)."""
        return dataclasses.replace(self, topic=rename(self.topic))

    @classmethod
    def plain(cls, topic: str, model: type[M], key: Callable[[M], str | None] | None = None) -> Stream[M]:
        """A stream outside the registry (a test's or a benchmark's), keyed by `key` or not at all."""
        name = getattr(model, "__name__", "Raw")
        return cls(topic, model, f"{CE_TYPE_PREFIX}.{name}.v1", key or _no_key, "(none)", f"{name} records.")


def _no_key(event: Any) -> None:
    return None


def _by_conversation(event: Any) -> str:
    return str(event.conversation_id)


def result_key(action_id: str, outcome: str, attempts: int) -> str:
    """The compaction key of an action result: one per action for outcomes meaning done, one per
    attempt for the others, so a later failure can never replace a `delivered`."""
    return action_id if outcome in DONE_OUTCOMES else f"{action_id}/attempt-{attempts}"


DONE_OUTCOMES = frozenset({"delivered", "published", "skipped_duplicate"})

CONVERSATIONS_ENDED: Stream[ConversationEnded] = Stream(
    CONVERSATION_ENDED,
    ConversationEnded,
    f"{CE_TYPE_PREFIX}.conversation.ended.v1",
    _by_conversation,
    "conversation_id",
    "One event per finished conversation, published by the voice platform.",
    external_producers=("platform", "ingress", "postcall publish", "postcall reextract"),
)
CONVERSATIONS_EXTRACTED: Stream[ConversationExtracted] = Stream(
    CONVERSATION_EXTRACTED,
    ConversationExtracted,
    f"{CE_TYPE_PREFIX}.conversation.extracted.v1",
    lambda e: e.conversation.conversation_id,
    "conversation_id",
    "The conversation with its extracted fields, triggers and summary.",
    conversation_pointer="/conversation/conversation_id",
)
DECISION_TRACES: Stream[DecisionTrace] = Stream(
    DECISIONS,
    DecisionTrace,
    f"{CE_TYPE_PREFIX}.conversation.routed.v1",
    _by_conversation,
    "conversation_id",
    "One decision trace each time a conversation is routed (a re-extraction adds one; the latest decided_at "
    "is the current): every flow and condition, and why.",
    retention_ms=14 * DAY_MS,
    external_consumers=("postcall explain",),
)
ACTION_STREAMS: dict[str, Stream[ActionBase]] = {
    kind: Stream(
        action_topic(kind),
        model,
        f"{CE_TYPE_PREFIX}.action.{kind}.requested.v1",
        _by_conversation,
        "conversation_id",
        f"`{kind}` action commands, keyed by conversation id.",
        external_consumers=("downstream subscribers",),
    )
    for kind, model in ACTION_MODELS.items()
}
ACTION_RESULT_STREAM: Stream[ActionCompleted] = Stream(
    ACTION_RESULTS,
    ActionCompleted,
    f"{CE_TYPE_PREFIX}.action.completed.v1",
    lambda e: result_key(e.action_id, e.outcome, e.attempts),
    "action_id (`<action_id>/attempt-<n>` for failed and dead_lettered)",
    "ActionCompleted per action_id; compacted, the dispatcher's ledger.",
    retention_ms=30 * DAY_MS,
    cleanup_policy="compact,delete",
    external_consumers=("postcall explain",),
)

DESTINATION_STATES: Stream[DestinationState] = Stream(
    DESTINATION_STATE,
    DestinationState,
    f"{CE_TYPE_PREFIX}.destination.state.v1",
    lambda e: e.key,
    "`<kind>/<destination>` (`replica/<id>` for heartbeats)",
    "Destination state every dispatcher instance shares: disabled by 410 Gone (or enabled again), "
    "circuit open or closed, heartbeats; compacted, every dispatcher reads it whole.",
    retention_ms=30 * DAY_MS,
    cleanup_policy="compact",
    external_producers=("dispatcher", "postcall destinations"),
    external_consumers=("postcall destinations", "console"),
    conversation_pointer=None,
    partitions=1,  # a few records per destination: one partition keeps every replica's view in one order
)

#: every main topic's stream, in registry order
STREAMS: tuple[Stream[Any], ...] = (
    CONVERSATIONS_ENDED,
    CONVERSATIONS_EXTRACTED,
    DECISION_TRACES,
    *ACTION_STREAMS.values(),
    ACTION_RESULT_STREAM,
    DESTINATION_STATES,
)

#: CloudEvents `ce_type` of the records on each main topic; retry and dead-letter copies keep the original's
CE_TYPES: dict[str, str] = {s.topic: s.ce_type for s in STREAMS}
