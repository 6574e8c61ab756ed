"""An action's content digest: 16 hex characters of sha256 over what the action asks for.

The content is the action's JSON (pydantic's JSON mode) without what identifies or dates it (NOT_CONTENT),
written with sorted keys: equal content, equal digest, whoever computes it. Two services do:

* the router, for a deliberate re-delivery only (`postcall reextract --redeliver`): the superseding
  action's id is uuid5(ACTION_NAMESPACE, "<action_id>/content/<digest>/<source_event_id>"), and it
  carries the digest;
* the dispatcher, for every action it delivers that carries none: its ledger keeps the digest last
  delivered for an action, and a re-delivery whose digest equals it is not sent again.

Never change the definition: the ledger (postcall.action-results.v1) holds digests written by earlier
versions, and re-delivery ids depend on it (tests/unit/test_content.py pins it).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from schemas.events import ActionBase

#: what identifies or dates an action rather than saying what it asks for
NOT_CONTENT = frozenset(
    {"action_id", "requested_at", "source_event_id", "config_revision", "content_digest", "supersedes"}
)
#: action fields added after the digest and the flow revision were first defined (a task's assignee, in the
#: flow's action and in its record): part of either only when set, so that an action which does not use them
#: keeps the digest, and its flow the revision (its actions their ids), that earlier versions gave them
ADDED_LATER = ("assignee",)
_EXCLUDED = set(NOT_CONTENT)  # pydantic-core's serializer takes a set; it only reads it
# copied for each digest: hashlib.sha256() looks the algorithm up in OpenSSL on every call
_SHA256 = hashlib.sha256()


def content_digest(action: ActionBase) -> str:
    """16 hex characters of sha256 over the action's content JSON, keys sorted."""
    content = action.__pydantic_serializer__.to_python(action, mode="json", exclude=_EXCLUDED)  # model_dump
    without_unset_later(content)
    try:
        encoded = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # what orjson does not write (an integer beyond 64 bits, which JSON may hold; a lone surrogate, which
        # only Python code can make) had no digest before (the router failed on it); it gets one here
        written = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        encoded = written.encode("utf-8", "surrogatepass")
    sha = _SHA256.copy()
    sha.update(encoded)
    return sha.hexdigest()[:16]


def without_unset_later(values: dict[str, Any]) -> None:
    """Drop from an action's dumped fields those ADDED_LATER that are not set (None)."""
    for name in ADDED_LATER:
        if name in values and values[name] is None:
            del values[name]
