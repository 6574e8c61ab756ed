"""One mapping per source: vendor payload -> ConversationEnded (or Ignored, or a PayloadError)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from schemas.events import ConversationEnded
from services.ingress.platforms import elevenlabs, native, retell, vapi
from services.ingress.platforms.common import Context, Ignored, PayloadError

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

__all__ = ["DOCUMENTED", "MAPPINGS", "Context", "Ignored", "Mapping", "PayloadError"]
