"""What the chaos receiver counts: actions, not ids.

Every request's Standard Webhooks signature is checked (the `standardwebhooks` scheme, services/dispatcher/
signing.py); a request that fails it counts as `bad_signatures` and is answered 401, never as a delivery.
Each delivery (a request answered 200, including one that answers after the dispatcher gave up) is mapped
from its body to the action it is, (conversation, flow, action index), so that

    lost              expected actions never delivered under any webhook-id
    cross_id_repeats  actions delivered under more than one webhook-id (a second id would hide a lost one
                      in a count of distinct ids)
    same_id_repeats   extra deliveries of a webhook-id already delivered (at least once: the receiver
                      drops them by id)
    unmapped          deliveries whose body names no action; unexpected: actions nobody asked for

The run passes only when lost, cross_id_repeats, bad_signatures, unmapped and unexpected are all 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.chaos.conversations import Action


def action_of(body: bytes) -> Action | None:
    """(conversation, flow, action index) named by a delivery's JSON body, or None."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    conversation, flow, index = data.get("conversation"), data.get("flow"), data.get("action")
    if isinstance(conversation, str) and isinstance(flow, str) and isinstance(index, int):
        return conversation, flow, index
    return None


@dataclass
class Tally:
    expected: set[Action]
    ids: dict[Action, set[str]] = field(default_factory=lambda: defaultdict(set))  # action -> webhook-ids delivered
    deliveries: Counter[str] = field(default_factory=Counter)  # webhook-id -> times delivered
    bad_signatures: int = 0
    unmapped: int = 0

    def delivered(self, webhook_id: str, body: bytes) -> None:
        """A request answered 200 (its signature checked already)."""
        self.deliveries[webhook_id] += 1
        action = action_of(body)
        if action is None:
            self.unmapped += 1
            return
        self.ids[action].add(webhook_id)

    @property
    def actions_delivered(self) -> int:
        return len(self.ids.keys() & self.expected)

    def summary(self) -> dict[str, int]:
        delivered = set(self.ids)
        return {
            "expected_actions": len(self.expected),
            "delivered_actions": len(delivered & self.expected),
            "lost": len(self.expected - delivered),
            "cross_id_repeats": sum(1 for ids in self.ids.values() if len(ids) > 1),
            "same_id_repeats": sum(n - 1 for n in self.deliveries.values()),
            "bad_signatures": self.bad_signatures,
            "unmapped": self.unmapped,
            "unexpected": len(delivered - self.expected),
        }

    def passed(self) -> bool:
        s = self.summary()
        return not (s["lost"] or s["cross_id_repeats"] or s["bad_signatures"] or s["unmapped"] or s["unexpected"])
