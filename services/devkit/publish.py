"""Publish ConversationEnded events the way a platform team should: key = conversation_id, CloudEvents headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from schemas.events import ConversationEnded
from schemas.topics import CE_TYPES, CONVERSATION_ENDED
from services.common import codec
from services.common.kafka import producer
from services.common.settings import KafkaSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "conversations"


def load_examples(folder: Path = EXAMPLES) -> list[ConversationEnded]:
    return [ConversationEnded.model_validate_json(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


async def publish(kafka: KafkaSettings, events: Sequence[ConversationEnded], topic: str = CONVERSATION_ENDED) -> None:
    p = producer(kafka)
    await p.start()
    try:
        futures = []
        for event in events:
            headers = codec.cloudevent_headers(event, CE_TYPES[topic], "platform", event.conversation_id)
            futures.append(
                await p.send(
                    topic, codec.encode(event), key=event.conversation_id.encode(), headers=codec.header_list(headers)
                )
            )
        await asyncio.gather(*futures)
    finally:
        await p.stop()
