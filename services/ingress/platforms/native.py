"""A `ConversationEnded` posted as is, by any other platform or bridge (Standard Webhooks or a bearer
token). Its `event_id` is kept: the producer chose it from its own natural key (docs/publishing.md).

The endpoint decides the account: an event naming another account is refused, so a caller holding one
tenant's secret cannot publish into another tenant; an event without one gets the endpoint's. The
endpoint's `agents` apply as for the vendors: a listed agent id becomes the postcall agent's (the event's
own name and version kept, the alias's name when it has none).
"""

from __future__ import annotations

from typing import Any

from schemas.events import ConversationEnded
from services.ingress.platforms.common import Context, Ignored, PayloadError, account, agent, parse


def map_payload(payload: Any, ctx: Context) -> ConversationEnded | Ignored:
    if isinstance(payload, dict) and "account" not in payload:
        payload = {**payload, "account": account(ctx).model_dump(exclude_none=True)}
    event = parse(ConversationEnded, payload)
    if event.account.id != ctx.account_id:
        raise PayloadError([("account.id", f"this endpoint publishes for account {ctx.account_id!r} only")])
    if event.account.name is None and ctx.account_name is not None:
        event = event.model_copy(update={"account": account(ctx)})
    if event.agent.id in ctx.agents:
        named = agent(ctx, event.agent.id, event.agent.name, event.agent.version, field="agent.id")
        event = event.model_copy(update={"agent": named})
    return event
