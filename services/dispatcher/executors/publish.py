"""Shared by schedule_call, task and team_alert: with no destination the action record on its topic is
the command (a dialer or a task service subscribes to it), so the outcome is `published`; with an
`http` destination the action is POSTed as JSON, signed like a webhook."""

from __future__ import annotations

import orjson

from schemas.events import ActionBase
from services.dispatcher.delivery import Delivery, HttpSender
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.registry import Registry


class PublishOrPost:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def publish_or_post(self, action: ActionBase, action_type: str) -> Delivery:
        if action.destination is None:
            return Delivery("published")
        dest = self._registry.get(action.destination, HttpDestination)
        body = orjson.dumps(action.model_dump(mode="json"))
        return await self._http.send(dest, action_type=action_type, msg_id=action.action_id, body=body)
