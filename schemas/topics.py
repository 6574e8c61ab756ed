"""Every topic, declared once: name, partitions, replication, retention, cleanup, producers, consumers.

Topic creation (`postcall topics create`), the Strimzi KafkaTopic manifests and the AsyncAPI document
are all generated from this registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

HOUR_MS = 3_600_000
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DAY_MS = 24 * HOUR_MS

CONVERSATION_ENDED = "postcall.conversation-ended.v1"
CONVERSATION_EXTRACTED = "postcall.conversation-extracted.v1"
DECISIONS = "postcall.decisions.v1"
ACTION_RESULTS = "postcall.action-results.v1"

ACTION_TYPES = ("webhook", "email", "slack", "schedule_call", "task", "team_alert")


def action_topic(action_type: str) -> str:
    """`schedule_call` -> `postcall.actions.schedule-call.v1`."""
    if action_type not in ACTION_TYPES:
        raise ValueError(f"unknown action type {action_type!r}")
    return f"postcall.actions.{action_type.replace('_', '-')}.v1"


ACTION_TOPICS = tuple(action_topic(t) for t in ACTION_TYPES)

SERVICES = ("extractor", "router", "dispatcher")

# Retry tiers per service: tier count is fixed by the registry, each tier's delay by the service settings.
RETRY_TIERS = {"extractor": 4, "router": 3, "dispatcher": 6}


def retry_topic(service: str, tier: int) -> str:
    """Tier numbers start at 1: `postcall.dispatcher.retry-1.v1`."""
    return f"postcall.{service}.retry-{tier}.v1"


def dead_letter_topic(service: str) -> str:
    return f"postcall.{service}.dlq.v1"


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


def registry() -> list[Topic]:
    p = default_partitions()
    topics = [
        Topic(
            CONVERSATION_ENDED,
            "One event per finished conversation, published by the voice platform.",
            p,
            7 * DAY_MS,
            producers=("platform", "ingress", "postcall publish", "postcall reextract"),
            consumers=("extractor",),
        ),
        Topic(
            CONVERSATION_EXTRACTED,
            "The conversation with its extracted fields, triggers and summary.",
            p,
            7 * DAY_MS,
            producers=("extractor",),
            consumers=("router",),
        ),
        Topic(
            DECISIONS,
            "One decision trace per conversation: every flow and condition, and why.",
            p,
            14 * DAY_MS,
            producers=("router",),
            consumers=("postcall explain",),
        ),
        *(
            Topic(
                action_topic(t),
                f"`{t}` action commands, keyed by conversation id.",
                p,
                7 * DAY_MS,
                producers=("router",),
                consumers=("dispatcher", "downstream subscribers"),
            )
            for t in ACTION_TYPES
        ),
        # Written on the same partition number as the action: the dispatcher's idempotency ledger.
        Topic(
            ACTION_RESULTS,
            "ActionCompleted per action_id; compacted, the dispatcher's ledger.",
            p,
            30 * DAY_MS,
            cleanup_policy="compact,delete",
            producers=("dispatcher",),
            consumers=("dispatcher", "postcall explain"),
        ),
    ]
    for service in SERVICES:
        for tier in range(1, RETRY_TIERS[service] + 1):
            topics.append(
                Topic(
                    retry_topic(service, tier),
                    f"{service} retry tier {tier} (delay topic).",
                    p,
                    7 * DAY_MS,
                    producers=(service,),
                    consumers=(service,),
                )
            )
        topics.append(
            Topic(
                dead_letter_topic(service),
                f"{service} dead letters, with their reason in headers.",
                p,
                30 * DAY_MS,
                producers=(service,),
                consumers=("postcall dlq",),
            )
        )
    return topics


def by_name() -> dict[str, Topic]:
    return {t.name: t for t in registry()}
