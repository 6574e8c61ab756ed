"""slack: `{"text": ...}` to a Slack incoming webhook. Not signed: the URL itself is Slack's secret,
so a `slack` destination usually names it with `url_secret`."""

from __future__ import annotations

import orjson

from schemas.events import SlackRequested
from services.dispatcher.delivery import Delivery, HttpSender
from services.dispatcher.destinations import SlackDestination
from services.dispatcher.registry import Registry


class SlackExecutor:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def __call__(self, action: SlackRequested) -> Delivery:
        dest = self._registry.get(action.destination, SlackDestination)
        body = orjson.dumps({"text": action.text})
        return await self._http.send(dest, action_type=action.type, msg_id=action.action_id, body=body)
