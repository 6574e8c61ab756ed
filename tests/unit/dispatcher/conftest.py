"""Shared builders for the dispatcher's unit tests: actions, destinations, a sender over MockTransport."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from schemas.events import WebhookRequested
from services.dispatcher import destinations
from services.dispatcher.delivery import HttpOptions, HttpSender
from services.dispatcher.registry import Registry

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, the Standard Webhooks docs' example
SECRET_2 = "whsec_Lg6OyBH/4llMLhZdUkX1EPJtJTzZLIUK2KAo3uw+VOA="


def webhook(action_id: str = "act_1", destination: str = "crm", **kw: Any) -> WebhookRequested:
    return WebhookRequested(
        action_id=action_id,
        conversation_id="conv-1",
        agent_id="agent-1",
        flow_id="flow-1",
        action_index=0,
        config_revision="rev-1",
        requested_at=datetime(2026, 1, 1, tzinfo=UTC),
        source_event_id="evt-1",
        destination=destination,
        body=kw.pop("body", {"status": "closed"}),
        **kw,
    )


def registry(yaml: str, environ: dict[str, str] | None = None, max_wait: float = 0.5) -> Registry:
    return Registry(destinations.parse(yaml, environ or {}), default_timeout=5.0, max_wait_seconds=max_wait)


CRM = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    signing_secrets: [{secret_env: CRM}]
    circuit_breaker: {consecutive_failures: 3}
  - name: ops-slack
    kind: slack
    url_secret: {secret_env: SLACK_URL}
"""
CRM_ENV = {"CRM": SECRET, "SLACK_URL": "https://hooks.slack.example.com/services/T/B/x"}


@pytest.fixture
def mock_sender() -> Callable[[Callable[[httpx.Request], httpx.Response], Registry], HttpSender]:
    def make(answer: Callable[[httpx.Request], httpx.Response], reg: Registry) -> HttpSender:
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer), follow_redirects=False)
        clients = {name: client for name in ("crm", "ops-slack")}
        return HttpSender(reg, clients, HttpOptions(retry_after_floor=5, retry_after_cap=600))

    return make
