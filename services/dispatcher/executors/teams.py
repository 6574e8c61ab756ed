"""teams: an Adaptive Card to a Microsoft Teams incoming webhook (a Workflows "when a Teams webhook
request is received" URL, or a legacy connector URL), with the same content as a Slack Block Kit
message (services.dispatcher.executors.cards). Not signed: the URL is the secret (`url_secret`).
Workflows answer 202 Accepted, connectors 200; either is delivered."""

from __future__ import annotations

import orjson

from schemas.events import TeamsRequested
from services.dispatcher.delivery import Delivery, HttpSender
from services.dispatcher.destinations import TeamsDestination
from services.dispatcher.executors.cards import adaptive_card, console_link
from services.dispatcher.registry import Registry


class TeamsExecutor:
    def __init__(self, registry: Registry, http: HttpSender, console_url: str | None = None) -> None:
        self._registry = registry
        self._http = http
        self._console_url = console_url

    async def __call__(self, action: TeamsRequested) -> Delivery:
        dest = self._registry.get(action.destination, TeamsDestination)
        link = console_link(self._console_url, action.conversation_id)
        body = orjson.dumps(adaptive_card(action.text, action.card, link))
        return await self._http.send(dest, action_type=action.type, msg_id=action.action_id, body=body)
