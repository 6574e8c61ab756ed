"""schedule_call (a callback), task (a follow-up) and team_alert (an in-app alert): with no destination
the action record on its topic is the command (a dialer, a task service or a notification service
subscribes to it), so the outcome is `published`; with an `http` destination the action is POSTed as
JSON, signed like a webhook."""

from __future__ import annotations

import orjson

from schemas.events import ScheduleCallRequested, TaskRequested, TeamAlertRequested
from services.dispatcher.delivery import Delivery, HttpSender
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.registry import Registry

Published = ScheduleCallRequested | TaskRequested | TeamAlertRequested


class PublishOrPostExecutor:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def __call__(self, action: Published) -> Delivery:
        if action.destination is None:
            return Delivery("published")
        dest = self._registry.get(action.destination, HttpDestination)
        body = orjson.dumps(action.model_dump(mode="json"))
        return await self._http.send(
            dest, action_type=action.type, msg_id=action.action_id, body=body, supersedes=action.supersedes
        )
