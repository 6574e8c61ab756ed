"""One mapping per source: vendor payload -> ConversationEnded (or Ignored, or a PayloadError)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from schemas.events import ConversationEnded
from services.ingress.platforms import elevenlabs, native, retell, vapi
from services.ingress.platforms.common import Context, Ignored, PayloadError, nesting_problems

Mapping = Callable[[Any, Context], ConversationEnded | Ignored]

MAPPINGS: dict[str, Mapping] = {
    "vapi": vapi.map_payload,
    "retell": retell.map_payload,
    "elevenlabs": elevenlabs.map_payload,
    "native": native.map_payload,
}

# The body each endpoint expects, for the OpenAPI document only (the mappings read more leniently).
DOCUMENTED: dict[str, type[BaseModel]] = {
    "vapi": vapi.VapiWebhook,
    "retell": retell.RetellDocumented,
    "elevenlabs": elevenlabs.ElevenLabsDocumented,
    "native": ConversationEnded,
}


def map_payload(platform: str, payload: Any, ctx: Context) -> ConversationEnded | Ignored:
    """The platform's mapping of `payload`, and the checks every mapped event passes: free-form values
    nested within the contract's MAX_NESTING (a PayloadError naming the field, as the mappings' own)."""
    mapped = MAPPINGS[platform](payload, ctx)
    if isinstance(mapped, ConversationEnded):
        deep = nesting_problems(mapped, "" if platform == "native" else "(mapped event).")
        if deep:
            raise PayloadError(deep)
    return mapped


def map_one(
    platform: str, payload: Any, account_id: str, account_name: str | None = None, default_agent_id: str | None = None
) -> ConversationEnded | Ignored:
    """One payload mapped outside a request (`postcall publish`, `postcall try`): received now, every
    Retell event a conversation, no agent aliases. Raises PayloadError as the ingress would answer 422."""
    ctx = Context(
        account_id=account_id,
        account_name=account_name,
        received_at=datetime.now(UTC),
        agents={},
        default_agent_id=default_agent_id,
        publish_on=("call_ended", "call_analyzed"),
    )
    return map_payload(platform, payload, ctx)


__all__ = ["DOCUMENTED", "MAPPINGS", "Context", "Ignored", "Mapping", "PayloadError", "map_one", "map_payload"]
