"""webhook: the rendered JSON body to an `http` destination, signed (Standard Webhooks)."""

from __future__ import annotations

from schemas.events import WebhookRequested
from services.dispatcher.delivery import Delivery, HttpSender, json_body
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.registry import Registry


class WebhookExecutor:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def __call__(self, action: WebhookRequested) -> Delivery:
        dest = self._registry.get(action.destination, HttpDestination)
        # the router sets a method only when the flow chose one; otherwise the destination's own
        method = action.method or dest.method
        body = json_body(action.body)
        return await self._http.send(
            dest,
            action_type=action.type,
            msg_id=action.action_id,
            body=body,
            method=method,
            supersedes=action.supersedes,
        )
