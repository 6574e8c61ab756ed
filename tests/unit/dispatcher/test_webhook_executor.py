"""The webhook executor: the HTTP method (the flow's choice when it made one, else the destination's), and
its signed request as the receiver in docs/downstream.md verifies it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from schemas.events import WebhookRequested
from services.dispatcher.delivery import HttpOptions, HttpSender, open_clients
from services.dispatcher.executors.webhook import WebhookExecutor
from services.dispatcher.registry import Registry
from tests.unit.dispatcher.conftest import CRM_ENV, SECRET, SECRET_2, registry, webhook

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
    execute, requests = recording(mock_sender, PUT_CRM, {**CRM_ENV, "CRM": SECRET})
    delivery = await execute(on_the_wire(webhook("act_m", **flow_method)))
    assert delivery.outcome == "delivered"
    assert [r.method for r in requests] == [sent]


def recording(
    mock_sender: Sender, destinations: str, env: dict[str, str]
) -> tuple[WebhookExecutor, list[httpx.Request]]:
    """A webhook executor to `destinations` whose receiver answers 200 and keeps every request."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    reg = registry(destinations, env)
    return WebhookExecutor(reg, mock_sender(answer, reg)), requests


def docs_verify() -> Callable[[str, Mapping[str, str], bytes], str]:
    """The receiver's verify() from docs/downstream.md, as a downstream team would copy it."""
    text = (Path(__file__).parents[3] / "docs/downstream.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify(" in block]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/downstream.md", "exec"), namespace)  # our own docs
    verify: Callable[[str, Mapping[str, str], bytes], str] = namespace["verify"]
    return verify


ROTATING_CRM = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    signing_secrets: [{secret_env: CRM}, {secret_env: CRM_NEXT}]
"""


async def test_the_docs_receiver_example_verifies_a_real_dispatcher_request(mock_sender: Sender) -> None:
    execute, requests = recording(mock_sender, ROTATING_CRM, {"CRM": SECRET, "CRM_NEXT": SECRET_2})
    sent = on_the_wire(webhook("act_verify", body={"note": "Café ☕", "n": [1, 2.5, None]}))
    assert (await execute(sent)).outcome == "delivered"
    (request,) = requests
    headers, body = dict(request.headers), request.content  # lower-case names, the raw bytes
    verify = docs_verify()
    # a receiver holding either the old or the new secret during a rotation
    assert verify(SECRET, headers, body) == verify(SECRET_2, headers, body) == sent.action_id
    assert verify(SECRET_2.rstrip("="), headers, body) == sent.action_id  # a secret without its padding
    with pytest.raises(ValueError, match="signature"):
        verify(SECRET, headers, body.replace(b"Caf", b"caf"))
    with pytest.raises(ValueError, match="signature"):
        verify(SECRET, headers, json.dumps(json.loads(body)).encode())  # re-serialised: other bytes
    with pytest.raises(ValueError, match="stale"):
        verify(SECRET, {**headers, "webhook-timestamp": str(int(time.time()) - 301)}, body)
    with pytest.raises(ValueError, match="signature"):
        verify(SECRET, {**headers, "webhook-signature": "v1,é"}, body)  # garbage is a refusal, not a TypeError
    # "The reference library does the same" (docs/downstream.md): standardwebhooks, either secret
    for secret in (SECRET, SECRET_2):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body.replace(b"Caf", b"caf"), headers)


async def test_a_body_with_an_integer_over_64_bits_is_sent_not_retried_as_an_unknown_error(mock_sender: Sender) -> None:
    """pydantic reads a record's integer of any size; orjson refuses to write one over 64 bits (TypeError),
    an unknown error classed retryable: every retry tier, then the dead letter, for a valid record. The
    router writes a platform's such integer as its digits; a record from anyone else may carry one."""
    execute, requests = recording(mock_sender, PUT_CRM, {**CRM_ENV, "CRM": SECRET})
    body = {"account": 10**30, "balance": -(2**64), "note": "é", "ok": [1.5, None]}
    delivery = await execute(on_the_wire(webhook("act_big", body=body)))
    assert delivery.outcome == "delivered"
    assert json.loads(requests[0].content) == body


async def test_a_header_named_in_another_case_replaces_ours_instead_of_going_twice() -> None:
    """Header names are case-insensitive, the dicts that build a request were not: a destination's
    `User-Agent` went beside the client's `user-agent`, and its `Accept-Encoding: gzip` beside our
    `accept-encoding: identity`, so a receiver saw 'gzip, identity', could compress its answer, and the
    raw bytes we read (never decompressed) were no excerpt and no result id."""
    text = PUT_CRM.replace("    method: PUT\n", "    headers: {User-Agent: acme-bot, Accept-Encoding: gzip}\n")
    reg = registry(text, {**CRM_ENV, "CRM": SECRET})
    seen: list[list[tuple[str, str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append([(name.lower(), value) for name, value in request.headers.multi_items()])
        return httpx.Response(200)

    # as services.dispatcher.delivery.open_clients makes it: the user agent is a client default too
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), headers={"user-agent": "postcall-dispatcher"})
    sender = HttpSender(reg, {"crm": client}, HttpOptions(user_agent="postcall-dispatcher"))
    await WebhookExecutor(reg, sender)(on_the_wire(webhook("act_h")))
    sent = seen[0]
    assert [v for n, v in sent if n == "user-agent"] == ["acme-bot"]
    assert [v for n, v in sent if n == "accept-encoding"] == ["identity"]


async def test_a_receivers_cookie_is_not_sent_with_the_next_delivery() -> None:
    """httpx's client keeps every Set-Cookie it is answered with and sends it with each later request to
    that host: a receiver's session cookie (a login page's, a load balancer's) went with every delivery
    after it. The clients open_clients makes keep none. A real receiver on loopback."""
    heads: list[bytes] = []

    async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                heads.append(head.lower())
                writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: session=s3cret; Path=/\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    reg = registry(PUT_CRM.replace("https://crm.example.com/hook", f"{url}\n    allow_private: true"), CRM_ENV)
    async with server, open_clients(reg, "postcall-dispatcher") as clients:
        execute = WebhookExecutor(reg, HttpSender(reg, clients, HttpOptions()))
        for action_id in ("act_c1", "act_c2"):
            assert (await execute(on_the_wire(webhook(action_id)))).outcome == "delivered"
    assert len(heads) == 2
    assert not [line for head in heads for line in head.split(b"\r\n") if line.startswith(b"cookie")]
