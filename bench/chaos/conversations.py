"""Synthetic conversations for the chaos run, and the webhooks bench/chaos/agents/chaos-line.yaml expects."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from schemas.end_reasons import EndReason
from schemas.events import Account, Agent, ConversationEnded, Customer, EndReasonInfo, Message

REASONS = (EndReason.CUSTOMER_HANGUP, EndReason.AGENT_HANGUP, EndReason.BLIND_TRANSFER, EndReason.VOICEMAIL)
LINES = (
    ("customer", "Hi, I'm calling about my order, it has not arrived yet."),
    ("agent", "I'm sorry to hear that. Can you give me the order number?"),
    ("customer", "Sure, it is 48213. Could you call me back tomorrow at 3 pm on +1 555 0142?"),
    ("agent", "Of course. I have noted a callback for tomorrow afternoon."),
    ("customer", "Thanks, that's all."),
)


def generate(n: int, seed: int) -> list[ConversationEnded]:
    rng = random.Random(seed)
    base = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        start = base + timedelta(seconds=7 * i)
        reason = rng.choice(REASONS)
        out.append(
            ConversationEnded(
                event_id=f"chaos-evt-{i}",
                conversation_id=f"chaos-{seed}-{i:06d}",
                occurred_at=start + timedelta(minutes=3),
                account=Account(id="acme", name="Acme"),
                agent=Agent(id="chaos-line", name="Chaos"),
                direction="inbound",
                started_at=start,
                ended_at=start + timedelta(minutes=3),
                end_reason=EndReasonInfo(canonical=reason, raw=reason.value, source_platform="copilot"),
                customer=Customer(phone_number=f"+1555{rng.randint(1000000, 9999999)}"),
                messages=[Message(role=r, text=t) for r, t in LINES],
            )
        )
    return out


Action = tuple[str, str, int]  # (conversation, flow, action index)


def expected_actions(conversations: list[ConversationEnded]) -> set[Action]:
    """One `every-call` webhook each, plus one `hangups` webhook per customer hang-up."""
    out = {(c.conversation_id, "every-call", 0) for c in conversations}
    out |= {
        (c.conversation_id, "hangups", 0) for c in conversations if c.end_reason.canonical == EndReason.CUSTOMER_HANGUP
    }
    return out
