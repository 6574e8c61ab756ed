"""What a destination's answer means: status table, Retry-After, 410 disabling, headers sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from standardwebhooks import Webhook

from services.common.errors import PermanentError, RetryableError
from services.dispatcher.delivery import HttpOptions, HttpSender
from services.dispatcher.destinations import HttpDestination, SlackDestination
from services.dispatcher.registry import Registry
from tests.unit.dispatcher.conftest import CRM, CRM_ENV, SECRET, registry

Sender = Callable[[Callable[[httpx.Request], httpx.Response], Registry], HttpSender]


STATUS_TABLE = [
    (200, None),
    (201, None),
    (204, None),
    (301, PermanentError),
    (302, PermanentError),
    (307, PermanentError),
    (400, PermanentError),
    (401, PermanentError),
    (404, PermanentError),
    (408, RetryableError),
    (409, PermanentError),
    (413, PermanentError),
    (422, PermanentError),
    (425, RetryableError),
    (429, RetryableError),
    (500, RetryableError),
    (502, RetryableError),
    (503, RetryableError),
    (504, RetryableError),
]


@pytest.mark.parametrize(("status", "error"), STATUS_TABLE)
async def test_status_classification(mock_sender: Sender, status: int, error: type[Exception] | None) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(status, headers={"location": "https://elsewhere/"}), reg)
    dest = reg.get("crm", HttpDestination)
    if error is None:
        delivery = await sender.send(dest, action_type="webhook", msg_id="act_1", body=b"{}")
        assert (delivery.outcome, delivery.status_code) == ("delivered", status)
    else:
        with pytest.raises(error) as caught:
            await sender.send(dest, action_type="webhook", msg_id="act_1", body=b"{}")
        assert caught.value.status_code == status  # type: ignore[attr-defined]


async def test_429_carries_clamped_retry_after(mock_sender: Sender) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(429, headers={"retry-after": "1"}), reg)
    with pytest.raises(RetryableError) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert caught.value.retry_after == 5.0  # the floor
    sender = mock_sender(lambda r: httpx.Response(503, headers={"retry-after": "99999"}), reg)
    with pytest.raises(RetryableError) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert caught.value.retry_after == 600.0  # the cap


HOSTILE_RETRY_AFTER = ["²", "9" * 400, "-1", "1e9", "Fri, 31 Dec 9999 23:59:59 -1400", "\x00", "\u0663"]


@pytest.mark.parametrize("value", HOSTILE_RETRY_AFTER, ids=repr)
async def test_a_hostile_retry_after_on_a_2xx_is_ignored_and_the_delivery_counts(
    mock_sender: Sender, value: str
) -> None:
    """`Retry-After: ²` after a 200 crashed the parser: the delivered webhook was sent again on every tier."""
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(200, headers=[(b"retry-after", value.encode())]), reg)
    delivery = await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert (delivery.outcome, delivery.status_code) == ("delivered", 200)


@pytest.mark.parametrize("value", HOSTILE_RETRY_AFTER, ids=repr)
async def test_a_hostile_retry_after_on_a_429_means_the_tier_delay(mock_sender: Sender, value: str) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(429, headers=[(b"retry-after", value.encode())]), reg)
    with pytest.raises(RetryableError) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert caught.value.retry_after in (None, 600.0)  # unreadable, or a far date cut to the cap


async def test_retry_after_is_read_only_on_429_and_503(mock_sender: Sender) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(500, headers={"retry-after": "120"}), reg)
    with pytest.raises(RetryableError) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert caught.value.retry_after is None


async def test_410_disables_the_destination_and_later_actions_fail_permanently(mock_sender: Sender) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(410), reg)
    with pytest.raises(PermanentError, match="410"):
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    with pytest.raises(PermanentError, match=r"destination disabled \(410 Gone\)"):
        reg.get("crm", HttpDestination)


async def test_a_410_to_a_request_sent_before_an_operator_enabled_the_destination_does_not_disable_it(
    mock_sender: Sender,
) -> None:
    reg = registry(CRM, CRM_ENV)
    reg.apply_disabled("crm", None, enabled_at=time.time() + 60)  # the enable lands while the request is out
    sender = mock_sender(lambda r: httpx.Response(410), reg)
    with pytest.raises(PermanentError, match="410"):
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert reg.get("crm", HttpDestination).name == "crm"  # still enabled


async def test_error_message_quotes_the_start_of_the_response_body(mock_sender: Sender) -> None:
    reg = registry(CRM, CRM_ENV)
    sender = mock_sender(lambda r: httpx.Response(422, json={"error": "email is required"}), reg)
    with pytest.raises(PermanentError, match="email is required"):
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")


async def test_webhook_requests_are_signed_and_carry_configured_headers(mock_sender: Sender) -> None:
    seen: list[httpx.Request] = []
    reg = registry(
        CRM.replace(
            "url: https://crm.example.com/hook", "url: https://crm.example.com/hook\n    headers: {X-Team: ops}"
        ),
        CRM_ENV,
    )

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    body = b'{"status":"closed"}'
    await mock_sender(answer, reg).send(
        reg.get("crm", HttpDestination), action_type="webhook", msg_id="act_9", body=body
    )
    request = seen[0]
    assert request.headers["x-team"] == "ops"
    assert request.headers["content-type"] == "application/json"
    Webhook(SECRET).verify(request.content, dict(request.headers))
    assert request.headers["webhook-id"] == "act_9"


async def test_slack_requests_are_not_signed_and_go_to_the_secret_url(mock_sender: Sender) -> None:
    seen: list[httpx.Request] = []
    reg = registry(CRM, CRM_ENV)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    await mock_sender(answer, reg).send(
        reg.get("ops-slack", SlackDestination), action_type="slack", msg_id="a", body=b"{}"
    )
    assert str(seen[0].url) == CRM_ENV["SLACK_URL"]
    assert "webhook-signature" not in seen[0].headers
    assert seen[0].headers["webhook-id"] == "a"  # the idempotency key goes everywhere


async def test_connection_errors_are_retryable_and_count_against_the_circuit(mock_sender: Sender) -> None:
    reg = registry(CRM, CRM_ENV)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    sender = mock_sender(refuse, reg)
    dest = reg.get("crm", HttpDestination)
    for _ in range(3):  # consecutive_failures: 3 in the CRM fixture
        with pytest.raises(RetryableError, match="ConnectError"):
            await sender.send(dest, action_type="webhook", msg_id="a", body=b"{}")
    with pytest.raises(RetryableError, match="circuit open for destination crm") as caught:
        await sender.send(dest, action_type="webhook", msg_id="a", body=b"{}")
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 30


CANARY_DESTINATION = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    headers: {authorization: "Bearer tok-CANARY-77", x-api-key: key-CANARY-78}
"""


@pytest.mark.parametrize("status", [400, 500, 302])
async def test_a_receiver_echoing_our_headers_never_puts_them_in_the_error(mock_sender: Sender, status: int) -> None:
    reg = registry(CANARY_DESTINATION)

    def echo(request: httpx.Request) -> httpx.Response:
        quoted = {k: request.headers[k] for k in ("authorization", "x-api-key")}
        return httpx.Response(status, headers={"location": f"https://x/?k={quoted['x-api-key']}"}, json=quoted)

    sender = mock_sender(echo, reg)
    with pytest.raises((PermanentError, RetryableError)) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert "CANARY" not in str(caught.value) and "[redacted]" in str(caught.value)


def test_a_secret_cut_at_the_end_of_a_quoted_body_is_redacted_too() -> None:
    reg = registry(CANARY_DESTINATION)
    dest = reg.get("crm", HttpDestination)
    body = "x" * 190 + "Bearer tok-CANARY-77 and more"
    assert dest.redact(body, 200) == "x" * 190 + "[redacted]"


async def test_a_local_protocol_error_is_permanent_and_never_quotes_the_header(mock_sender: Sender) -> None:
    reg = registry(CANARY_DESTINATION)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value b'{request.headers['authorization']}\\n'")

    sender = mock_sender(refuse, reg)
    with pytest.raises(PermanentError) as caught:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="a", body=b"{}")
    assert str(caught.value) == (
        "the request could not be sent: a header or the URL is not valid HTTP (local protocol error)"
    )


async def test_a_request_that_waited_for_its_slot_is_signed_when_it_is_sent() -> None:
    """The Standard Webhooks timestamp (and the signature over it) was made before the destination's gate:
    a record that waited for a slot, a rate-limit token or the line carried the time it started waiting.
    max_wait_seconds has no upper bound, so a long wait could age a signature past the receivers'
    tolerance (5 minutes in the standardwebhooks package). It is signed inside the slot now."""
    one_at_a_time = CRM.replace("    circuit_breaker:", "    max_concurrency: 1\n    circuit_breaker:")
    reg = registry(one_at_a_time, CRM_ENV, max_wait=5)
    seen: dict[str, float] = {}

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["webhook-id"] == "first":
            await asyncio.sleep(1.5)
        seen[request.headers["webhook-id"]] = time.time()
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    sender = HttpSender(reg, {"crm": client}, HttpOptions(retry_after_floor=5, retry_after_cap=600))
    dest = reg.get("crm", HttpDestination)
    sent: dict[str, httpx.Headers] = {}

    async def send(msg_id: str) -> None:
        await sender.send(dest, action_type="webhook", msg_id=msg_id, body=b"{}")

    original = client.send

    async def capture(request: httpx.Request, **kw: object) -> httpx.Response:
        sent[request.headers["webhook-id"]] = request.headers
        return await original(request, **kw)  # type: ignore[arg-type]

    client.send = capture  # type: ignore[method-assign]
    started = time.time()
    await asyncio.gather(send("first"), send("second"))
    assert seen["second"] - started >= 1.5  # it waited for the first one's slot
    stamp = int(sent["second"]["webhook-timestamp"])
    assert stamp >= int(seen["first"]), (stamp, started, seen)
    Webhook(SECRET).verify(b"{}", dict(sent["second"]))  # and the signature is over that timestamp
