"""The http executor's parts: the URL a path may reach, the headers a flow may set, the result id read
from an answer, and the access token cache (fetched once, renewed before expiry, replaced once on 401)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import h11
import httpx
import pytest
from standardwebhooks import Webhook

from schemas.events import HttpRequested
from services.common.errors import PermanentError, RetryableError
from services.dispatcher.delivery import Answer, Exchange, HttpOptions, HttpSender, json_body
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.executors.http import HttpRequestExecutor, read_result_id, request_headers, target
from services.dispatcher.registry import Registry
from services.dispatcher.tokens import TokenSource
from tests.unit.dispatcher.conftest import SECRET, registry

OAUTH = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/api/v2
    headers: {x-tenant: acme}
    auth:
      type: oauth2_client_credentials
      token_url: https://login.example.com/oauth/token
      client_id: postcall
      client_secret: {secret_env: CLIENT_SECRET}
      scope: cases.write
"""
ENV = {"CLIENT_SECRET": "client-SECRET-1"}


def crm(url: str = "https://crm.example.com/api/v2") -> HttpDestination:
    return registry(OAUTH.replace("https://crm.example.com/api/v2", url), ENV).get("crm", HttpDestination)


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://crm.example.com/api/v2", "/cases/4471", "https://crm.example.com/api/v2/cases/4471"),
        ("https://crm.example.com/api/v2/", "/cases/4471", "https://crm.example.com/api/v2/cases/4471"),
        ("https://crm.example.com/api/v2", "", "https://crm.example.com/api/v2"),
        ("https://crm.example.com/api/v2", "?q=1", "https://crm.example.com/api/v2?q=1"),
        ("https://crm.example.com/api?v=3", "/cases?x=1", "https://crm.example.com/api/cases?v=3&x=1"),
        ("https://crm.example.com", "/cases/a%2Fb", "https://crm.example.com/cases/a%2Fb"),
        ("https://crm.example.com:8443/a", "/b", "https://crm.example.com:8443/a/b"),
    ],
)
def test_the_path_is_appended_to_the_destinations_url(base: str, path: str, expected: str) -> None:
    assert str(target(crm(base), path)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/../admin",
        "/cases/../../admin",
        "/cases/%2E%2E/%2e%2e/admin",
        "/cases/%2E%2E%2F%2E%2E%2Fadmin",
        "/cases/..%5C..%5Cadmin",
        "/%2E",
        "cases",
        "//evil.example/x",
        "@evil.example/x",
    ],
)
def test_a_path_that_would_leave_the_prefix_or_the_origin_is_refused(path: str) -> None:
    with pytest.raises(PermanentError, match="request refused"):
        target(crm(), path)


@pytest.mark.parametrize(
    "path",
    [
        "/cases/%2E%2E%3B/%2E%2E%3B/admin",  # what the router renders for a caller's "..;" in /cases/{{id}}/
        "/cases/..;/..;/admin",
        "/cases/%2E%2E%3Bjsessionid=1/%2E%2E%3B/admin",
        "/cases/%2E%2E%00/%2E%2E%00/admin",
        "/cases/%2E%2E%20/%2E%2E%20/admin",
    ],
)
def test_a_dot_segment_with_a_path_parameter_or_trailing_junk_is_refused(path: str) -> None:
    """Servlet containers drop a segment's ';' parameters before they resolve '..' (Tomcat, Jetty;
    behind nginx, which decodes %3B and passes ';' on, also when it came percent-encoded), and some
    drop a NUL or trailing space: '..;' is '..' to them. It was sent: /api/v2/cases/..;/..;/admin
    reaches /api/admin, outside the destination's path prefix."""
    with pytest.raises(PermanentError, match=r"request refused: the path has a '\.' or '\.\.' segment"):
        target(crm(), path)


def http_action(**kw: Any) -> HttpRequested:
    base: dict[str, Any] = {
        "action_id": "act-1", "conversation_id": "c1", "agent_id": "a", "flow_id": "f", "action_index": 0,
        "config_revision": "r", "requested_at": "2026-01-01T00:00:00Z", "source_event_id": "e",
        "destination": "crm", "method": "PATCH",
    }  # fmt: skip
    return HttpRequested.model_validate(base | kw)


def test_the_flows_headers_go_with_the_destinations_and_cannot_replace_them() -> None:
    headers = request_headers(crm(), http_action(headers={"x-call": "c1"}), b"{}")
    assert headers["x-call"] == "c1" and headers["x-tenant"] == "acme"
    assert headers["idempotency-key"] == "act-1" and headers["content-type"] == "application/json"
    # Postcall-Supersedes: receivers upsert by ours (docs/downstream.md); a flow's in another case went too
    for name in ("X-Tenant", "authorization", "Idempotency-Key", "Postcall-Supersedes"):
        with pytest.raises(PermanentError, match="cannot be set by a flow"):
            request_headers(crm(), http_action(headers={name: "x"}, supersedes="act-0"), None)
    with pytest.raises(PermanentError, match="control or non-ASCII"):
        request_headers(crm(), http_action(headers={"x-name": "M\u00fcller"}), None)


@pytest.mark.parametrize("value", ["Called back about the invoice ", " Called back", "\tCalled back\t"])
def test_a_flow_header_with_whitespace_around_its_value_is_sent_without_it(value: str) -> None:
    """The router cuts a rendered value at 1,000 characters, which can end it in a space; h11 refuses
    such a value (LocalProtocolError), so the action was dead-lettered, unsent. HTTP reads a field value
    without the whitespace around it (RFC 9110 5.5): it is dropped, and the request goes out."""
    headers = request_headers(crm(), http_action(headers={"x-note": value}), None)
    assert headers["x-note"] == value.strip()
    request = h11.Request(method="PATCH", target="/", headers=[("host", "crm.example.com"), *headers.items()])
    assert h11.Connection(h11.CLIENT).send(request)  # serialised as httpx's transport would


def answer(body: bytes) -> Answer:
    return Answer(200, None, None, body.decode(errors="replace"), body)


@pytest.mark.parametrize(
    ("body", "pointer", "expected"),
    [
        (b'{"id": "4471"}', "/id", ("4471", None)),
        (b'{"data": [{"id": 4471}]}', "/data/0/id", ("4471", None)),
        (b'{"a/b": {"c~d": "x"}}', "/a~1b/c~0d", ("x", None)),
        (b'{"id": true}', "/id", (None, "result_id_pointer /id: not a string or number in the answer")),
        (b'{"id": {"n": 1}}', "/id", (None, "result_id_pointer /id: not a string or number in the answer")),
        (b'{"other": 1}', "/id", (None, "result_id_pointer /id: nothing there in the answer")),
        (b"<html>", "/id", (None, "result_id_pointer /id: the answer is not JSON")),
        (b"", "/id", (None, "result_id_pointer /id: the answer is not JSON")),
        (b'{"id": 1}', None, (None, None)),
    ],
)
def test_the_result_id_is_read_at_the_json_pointer(body: bytes, pointer: str | None, expected: Any) -> None:
    assert read_result_id(answer(body), pointer) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_server(expires_in: Any = 3600, status: int = 200) -> tuple[list[httpx.Request], httpx.AsyncClient]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": "invalid_client", "error_description": "client-SECRET-1"})
        return httpx.Response(200, json={"access_token": f"tok-{len(seen)}", "expires_in": expires_in})

    return seen, httpx.AsyncClient(transport=httpx.MockTransport(answer))


def source(reg: Registry, clock: Callable[[], float]) -> TokenSource:
    sender = HttpSender(reg, {}, HttpOptions())
    tokens = sender.tokens["crm"]
    tokens._clock = clock
    return tokens


async def test_a_token_is_fetched_once_for_concurrent_attempts_and_renewed_before_it_expires() -> None:
    clock = Clock()
    tokens = source(registry(OAUTH, ENV), clock)
    seen, client = token_server(expires_in=600)
    exchange = Exchange(client, HttpOptions(), 5.0, tokens)
    assert await asyncio.gather(*(tokens.token(exchange) for _ in range(5))) == ["tok-1"] * 5
    [request] = seen
    assert request.headers["authorization"].startswith("Basic ")
    assert dict(httpx.QueryParams(request.content.decode())) == {
        "grant_type": "client_credentials",
        "scope": "cases.write",
    }
    clock.now += 600 - 61  # renewed 10% (at most 60 s) before expiry
    assert await tokens.token(exchange) == "tok-1"
    clock.now += 2
    assert await tokens.token(exchange) == "tok-2"
    tokens.refused("tok-1")  # an old token's 401 does not throw away the new one
    assert await tokens.token(exchange) == "tok-2"
    tokens.refused("tok-2")
    assert await tokens.token(exchange) == "tok-3"
    assert tokens.secrets() == ["tok-1", "tok-2", "tok-3"]


@pytest.mark.parametrize(("status", "error"), [(401, PermanentError), (400, PermanentError), (503, RetryableError)])
async def test_a_refused_token_request_names_the_status_and_error_code_only(status: int, error: type) -> None:
    tokens = source(registry(OAUTH, ENV), Clock())
    _, client = token_server(status=status)
    with pytest.raises(error) as caught:
        await tokens.token(Exchange(client, HttpOptions(), 5.0, tokens))
    assert str(caught.value) == f"token request refused by the authorization server: HTTP {status} (invalid_client)"


async def test_an_answer_without_a_bearer_token_is_permanent() -> None:
    tokens = source(registry(OAUTH, ENV), Clock())
    for body in ({"token_type": "bearer"}, {"access_token": "x", "token_type": "mac"}, {"access_token": "a\nb"}):
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r, b=body: httpx.Response(200, json=b)))
        with pytest.raises(PermanentError, match="access_token"):
            await tokens.token(Exchange(client, HttpOptions(), 5.0, tokens))


BASIC = """
destinations:
  - name: desk
    kind: http
    url: https://acme.zendesk.example/api/v2
    auth: {type: basic, username: agent@example.com/token, password: {secret_env: PW}}
"""


def test_basic_credentials_are_sent_as_one_header_and_redacted_in_every_form() -> None:
    dest = registry(BASIC, {"PW": "pw-SECRET-2"}).get("desk", HttpDestination)
    header = dest.header_values["authorization"]
    assert header == "Basic YWdlbnRAZXhhbXBsZS5jb20vdG9rZW46cHctU0VDUkVULTI="  # agent@example.com/token:pw-SECRET-2
    text = dest.redact(f"echo {header}, {header.removeprefix('Basic ')} and pw-SECRET-2")
    assert text == "echo [redacted], [redacted] and [redacted]"


async def test_a_second_401_is_the_answer_the_token_is_replaced_only_once_per_request() -> None:
    """A receiver that refuses every token (wrong scope, a revoked client) costs two tokens and two
    requests per attempt, never a loop; the 401 is the attempt's answer (a permanent failure upstream)."""
    tokens = source(registry(OAUTH, ENV), Clock())
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": f"tok-{len(seen)}", "expires_in": 3600})
        return httpx.Response(401, json={"error": "invalid_token"})

    exchange = Exchange(httpx.AsyncClient(transport=httpx.MockTransport(answer)), HttpOptions(), 5.0, tokens)
    got = await exchange.request("PATCH", "https://crm.example.com/api/v2/cases/1", {}, b"{}")
    assert got.status == 401
    assert [(r.url.path, r.headers.get("authorization")) for r in seen if r.url.path != "/oauth/token"] == [
        ("/api/v2/cases/1", "Bearer tok-1"),
        ("/api/v2/cases/1", "Bearer tok-3"),
    ]
    assert sum(r.url.path == "/oauth/token" for r in seen) == 2


BEARER = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/api/v2
    auth: {type: bearer, token: {secret_env: TOKEN}}
"""


async def test_a_410_to_an_actions_path_fails_that_action_and_leaves_the_destination_enabled() -> None:
    """A 410 to /cases/<id> says that case is gone (RFC 9110: the target resource), not the API: the
    path comes from the action (a caller's dynamic variable, say), so one deleted record must not stop
    every other action to the CRM on every replica. A 410 to the destination's own URL still disables it."""
    reg = registry(BEARER, {"TOKEN": "tok-SECRET-3"})
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(410, json={"error": "case deleted"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), follow_redirects=False)
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    with pytest.raises(PermanentError, match="410"):
        await executor(http_action(path="/cases/4471"))
    assert reg.get("crm", HttpDestination).name == "crm"  # still enabled
    assert not reg.disabled
    with pytest.raises(PermanentError, match="410"):
        await executor(http_action(path="?notify=false"))  # the destination's own URL: it is retired
    assert "crm" in reg.disabled
    assert seen == ["/api/v2/cases/4471", "/api/v2"]


async def test_a_flows_query_parameters_join_the_destinations_own_and_the_paths() -> None:
    """httpx 0.28's `params=` replaces a URL's whole query: a flow's `query:` dropped the query of the
    destination's URL (an API version, an Azure Functions `code` key) and of the action's path, so the
    request went out without them (401 or another API version)."""
    reg = registry(BEARER.replace("/api/v2", "/api/v2?api-version=2024-05&code=KEY-1"), {"TOKEN": "tok-SECRET-3"})
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), follow_redirects=False)
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    await executor(http_action(path="/cases/4471?expand=notes", query={"notify": "a b&c=d"}))
    await executor(http_action(path="/cases/4471", query={"notify": "false"}))
    await executor(http_action(path="/cases/4471"))
    assert seen == [
        "https://crm.example.com/api/v2/cases/4471?api-version=2024-05&code=KEY-1&expand=notes&notify=a+b%26c%3Dd",
        "https://crm.example.com/api/v2/cases/4471?api-version=2024-05&code=KEY-1&notify=false",
        "https://crm.example.com/api/v2/cases/4471?api-version=2024-05&code=KEY-1",
    ]


@pytest.mark.parametrize("path", ["/cases/4471?code=mine", "/cases/4471"])
async def test_a_flow_cannot_set_a_query_parameter_the_destinations_url_sets(path: str) -> None:
    reg = registry(BEARER.replace("/api/v2", "/api/v2?code=KEY-1"), {"TOKEN": "tok-SECRET-3"})
    sent: list[httpx.Request] = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(204)))
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    query = {} if "?" in path else {"code": "mine"}
    with pytest.raises(PermanentError, match="query parameter 'code' cannot be set by a flow"):
        await executor(http_action(path=path, query=query))
    assert not sent


async def test_an_http_body_with_an_integer_over_64_bits_is_sent() -> None:
    reg = registry(BEARER, {"TOKEN": "tok-SECRET-3"})
    bodies: list[bytes] = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: bodies.append(r.content) or httpx.Response(204)))
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    action = HttpRequested.model_validate_json(http_action(body={"id": 10**30}).model_dump_json())
    assert (await executor(action)).outcome == "delivered"
    assert bodies == [b'{"id":1000000000000000000000000000000}']


async def test_a_flows_accept_header_replaces_ours_in_any_case() -> None:
    reg = registry(BEARER, {"TOKEN": "tok-SECRET-3"})
    seen: list[list[tuple[str, str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append([(name.lower(), value) for name, value in request.headers.multi_items()])
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    await executor(http_action(path="/cases/1", headers={"Accept": "text/csv"}))
    assert [v for n, v in seen[0] if n == "accept"] == ["text/csv"]


async def test_a_key_in_a_secret_urls_query_is_redacted_where_a_receiver_echoes_the_request() -> None:
    """An Azure Functions URL carries its key in the query (`url_secret: https://fn.example/api/hook?code=`).
    Redaction knew the whole URL and its path-and-query, but an http action's request puts its own path
    before that query (/api/hook/cases/1?code=...): a receiver echoing the URL it was sent (an error
    page, a debug echo) put the key in the result's excerpt and the dead letter's error."""
    key = "fn-KEY-CANARY-0123456789"
    text = """
destinations:
  - name: crm
    kind: http
    url_secret: {secret_env: FN_URL}
"""
    reg = registry(text, {"FN_URL": f"https://fn.example.com/api/hook?code={key}"})
    status = [200]
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(status[0], json={"echo": str(r.url)}))
    )
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    delivered = await executor(http_action(path="/cases/1", query={"notify": "false"}))
    assert delivered.response_excerpt is not None and "/api/hook/cases/1" in delivered.response_excerpt
    assert key not in delivered.response_excerpt
    status[0] = 404
    with pytest.raises(PermanentError) as refused:
        await executor(http_action(path="/cases/1"))
    assert "404" in str(refused.value) and key not in str(refused.value)


@pytest.mark.parametrize(
    ("path", "query"),
    [("/cases/1", {"transcript": "word " * 14_000}), ("/cases/1\x00", {}), ("/cases/\x7f?q=1", {})],
)
async def test_a_url_httpx_cannot_build_is_refused_unsent_not_retried(path: str, query: dict[str, str]) -> None:
    """httpx.InvalidURL (a URL over 65,536 characters: a transcript in a query parameter; a control
    character in a forged record) was raised outside the attempt: an unknown error, classed retryable,
    so every retry tier sent nothing, then the dead letter."""
    reg = registry(BEARER, {"TOKEN": "tok-SECRET-3"})
    sent: list[httpx.Request] = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(204)))
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    with pytest.raises(PermanentError, match="request refused: the URL is not valid"):
        await executor(http_action(path=path, query=query))
    assert not sent


@pytest.mark.parametrize("field", ["url", "url_secret"])
async def test_a_password_in_the_destinations_url_is_redacted_where_a_receiver_echoes_the_request(field: str) -> None:
    """httpx sends a URL's user:password as `Authorization: Basic <base64>`. Neither the password nor that
    header value was among the destination's secrets (a plain `url` had none at all): a receiver echoing
    the request's headers in its error put the credential in the result's error and the dead letter."""
    password = "pw-CANARY-0123456789"
    url = f"https://bob:{password}@crm.example.com/hooks/postcall"
    value = "{secret_env: CRM_URL}" if field == "url_secret" else "${CRM_URL}"
    reg = registry(f"destinations:\n  - name: crm\n    kind: http\n    {field}: {value}\n", {"CRM_URL": url})
    echo = httpx.MockTransport(lambda r: httpx.Response(400, json={"got": r.headers.get("authorization")}))
    sender = HttpSender(reg, {"crm": httpx.AsyncClient(transport=echo)}, HttpOptions())
    with pytest.raises(PermanentError) as refused:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="act-1", body=b"{}")
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    assert str(refused.value) == 'HTTP 400: {"got":"Basic [redacted]"}'
    assert password not in str(refused.value) and basic not in str(refused.value)


async def test_a_key_sent_as_the_urls_user_name_alone_is_redacted_too() -> None:
    """https://KEY@host/ (an API key as the user name, `-u key:`): httpx sends Basic base64("KEY:"), and only
    a password was taken for a secret, so an echoing receiver put the key in the error and the dead letter."""
    key = "sk_live_CANARY0123456789"
    reg = registry(
        "destinations:\n  - name: crm\n    kind: http\n    url_secret: {secret_env: CRM_URL}\n",
        {"CRM_URL": f"https://{key}@crm.example.com/hooks"},
    )
    echo = httpx.MockTransport(lambda r: httpx.Response(400, json={"got": r.headers.get("authorization")}))
    sender = HttpSender(reg, {"crm": httpx.AsyncClient(transport=echo)}, HttpOptions())
    with pytest.raises(PermanentError) as refused:
        await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="act-1", body=b"{}")
    assert str(refused.value) == 'HTTP 400: {"got":"Basic [redacted]"}'
    assert base64.b64encode(f"{key}:".encode()).decode() not in str(refused.value)


async def test_an_http_action_sends_the_user_and_password_of_its_destinations_url_as_a_webhook_does() -> None:
    """A webhook to https://user:password@host/... goes with `Authorization: Basic` (httpx reads the URL's
    user:password); an http action's URL was built from the destination's scheme and host:port alone, so
    the same destination's credential was dropped and every action got the API's 401, permanent."""
    url = "https://bob:pw-0123456789@crm.example.com/api/v2"
    reg = registry(
        "destinations:\n  - name: crm\n    kind: http\n    url_secret: {secret_env: CRM_URL}\n", {"CRM_URL": url}
    )
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 1})

    client = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    sender = HttpSender(reg, {"crm": client}, HttpOptions())
    await HttpRequestExecutor(reg, sender)(http_action(path="/cases/1"))
    await sender.send(reg.get("crm", HttpDestination), action_type="webhook", msg_id="act-1", body=b"{}")
    basic = "Basic " + base64.b64encode(b"bob:pw-0123456789").decode()
    assert [r.headers.get("authorization") for r in seen] == [basic, basic]
    assert seen[0].url.path == "/api/v2/cases/1"


async def test_an_http_action_that_waited_for_its_slot_is_signed_when_it_is_sent() -> None:
    """As a webhook is (912d0f6): the Standard Webhooks timestamp, and the signature over it, are made in the
    destination's slot, not before its gate. An http action that waited for a slot, a rate-limit token or the
    line carried the time it began to wait, which a long max_wait_seconds could age past receivers' tolerance."""
    signed = SIGNED.replace("    url:", "    max_concurrency: 1\n    url:")
    reg = registry(signed, {"CRM": SECRET}, max_wait=5)
    seen: dict[str, float] = {}
    sent: dict[str, httpx.Headers] = {}

    async def answer(request: httpx.Request) -> httpx.Response:
        sent[request.headers["webhook-id"]] = request.headers
        if request.headers["webhook-id"] == "first":
            await asyncio.sleep(1.5)
        seen[request.headers["webhook-id"]] = time.time()
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), follow_redirects=False)
    executor = HttpRequestExecutor(reg, HttpSender(reg, {"crm": client}, HttpOptions()))
    started = time.time()
    body = {"status": "closed"}
    await asyncio.gather(*(executor(http_action(action_id=i, body=body)) for i in ("first", "second")))
    assert seen["second"] - started >= 1.5  # it waited for the first one's slot
    stamp = int(sent["second"]["webhook-timestamp"])
    assert stamp >= int(seen["first"]), (stamp, started, seen)
    Webhook(SECRET).verify(json_body(body), dict(sent["second"]))  # and the signature is over that timestamp


SIGNED = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/api/v2
    signing_secrets: [{secret_env: CRM}]
"""
