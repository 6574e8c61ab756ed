"""The webhook executor's HTTP method: the flow's choice when it made one, else the destination's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from schemas.events import WebhookRequested
from services.dispatcher.delivery import HttpSender
from services.dispatcher.executors.webhook import WebhookExecutor
from services.dispatcher.registry import Registry
from tests.unit.dispatcher.conftest import CRM_ENV, SECRET, registry, webhook

Sender = Callable[[Callable[[httpx.Request], httpx.Response], Registry], HttpSender]

PUT_CRM = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    method: PUT
    signing_secrets: [{secret_env: CRM}]
"""


def on_the_wire(action: WebhookRequested) -> WebhookRequested:
    """As the dispatcher receives it: serialised by the router, validated from JSON."""
    return WebhookRequested.model_validate_json(action.model_dump_json())


@pytest.mark.parametrize(
    ("flow_method", "sent"),
    [
        ({}, "PUT"),  # the flow named no method: the destination's configured one
        ({"method": "PATCH"}, "PATCH"),
        ({"method": "POST"}, "POST"),  # an explicit POST still overrides a PUT destination
    ],
)
async def test_webhook_uses_the_flows_method_else_the_destinations(
    mock_sender: Sender, flow_method: dict[str, Any], sent: str
) -> None:
    methods: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(200)

    reg = registry(PUT_CRM, {**CRM_ENV, "CRM": SECRET})
    execute = WebhookExecutor(reg, mock_sender(answer, reg))
    delivery = await execute(on_the_wire(webhook("act_m", **flow_method)))
    assert delivery.outcome == "delivered"
    assert methods == [sent]
