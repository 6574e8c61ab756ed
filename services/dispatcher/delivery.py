"""Sending one request to one destination: isolation gate, signature, SSRF-guarded client, and the
mapping of what came back onto the error tree.

    2xx                                    delivered (also when the rest of the answer is then lost or late:
                                           the receiver took the request, so it is not sent again)
    3xx                                    PermanentError (redirects are never followed)
    408, 425, 429, 5xx, timeout, no conn.  RetryableError(retry_after = a 429's or 503's Retry-After, floor..cap)
    410 Gone                               the destination is disabled, PermanentError (an http action
                                           with a path of its own: only that action fails, see `attempt`)
    other 4xx                              PermanentError
    address refused by the SSRF guard      PermanentError
    our own request malformed (h11)        PermanentError, without the library's text (it quotes headers)

A receiver is not trusted: its Retry-After is read only on 429 and 503 (services.common.errors), at most
SNIPPET_BYTES of its body are read (raw, never decompressed), and one deadline bounds the whole attempt
(connect, send, headers and that body) however slowly it trickles bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from services.common.errors import (
    PermanentError,
    PostcallError,
    RetryableError,
    classify_http_status,
    parse_retry_after,
)
from services.common.ssrf import AddressRefused, guarded_client
from services.dispatcher.destinations import HttpDestination, UrlDestination
from services.dispatcher.metrics import delivery_duration
from services.dispatcher.registry import Registry
from services.dispatcher.tokens import TokenSource, token_sources

SUPERSEDES_HEADER = "postcall-supersedes"  # not covered by the signature: docs/downstream.md
DISABLED_REASON = "destination disabled (410 Gone)"
LOCAL_PROTOCOL_ERROR = "the request could not be sent: a header or the URL is not valid HTTP (local protocol error)"
SNIPPET_BYTES = 2048  # of a response body, kept for the error message; the rest is not read


@dataclass(frozen=True)
class Delivery:
    """How an action ended when it did not fail."""

    outcome: Literal["delivered", "published"]
    destination: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    note: str | None = None  # e.g. recipients an SMTP server refused while accepting others
    # the start of the receiver's answer (http actions); through dest.redact first: a receiver may echo our headers
    response_excerpt: str | None = None
    result_id: str | None = None  # the id the receiver's answer named (an http action's result_id_pointer)


class AttemptDetails:
    """What the ActionCompleted of a failed attempt reports besides the message."""

    destination: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None


class DeliveryRetryable(RetryableError, AttemptDetails):
    """Raised when a delivery attempt failed in a way a later attempt may not."""


class DeliveryRejected(PermanentError, AttemptDetails):
    """Raised when a delivery can never succeed (4xx, 3xx, 410, refused address, bad config)."""


def failure(
    error: PostcallError,
    destination: str | None,
    status: int | None = None,
    latency_ms: float | None = None,
    detail: str = "",
    redact: Callable[[str], str] = str,
) -> PostcallError:
    """`error` re-typed as a delivery error carrying the attempt's details; `redact` scrubs the
    destination's secrets from the message (it goes to results, dead letters and logs)."""
    message = redact(f"{error}: {detail}" if detail else str(error))
    out: DeliveryRetryable | DeliveryRejected
    if isinstance(error, RetryableError):
        out = DeliveryRetryable(message, retry_after=error.retry_after)
    else:
        out = DeliveryRejected(message)
    out.destination, out.status_code, out.latency_ms = destination, status, latency_ms
    return out


@dataclass(frozen=True)
class HttpOptions:
    retry_after_floor: float = 5.0
    retry_after_cap: float = 3600.0
    user_agent: str = "postcall-dispatcher"


Redact = Callable[..., str]  # (text, limit=None) -> text without the destination's secrets


class HttpSender:
    """Sends through the destination's own client, opened once at start; never one per request."""

    def __init__(self, registry: Registry, clients: Mapping[str, httpx.AsyncClient], options: HttpOptions) -> None:
        self._registry = registry
        self._clients = clients
        self._options = options
        self.tokens = token_sources(registry.only(UrlDestination))

    def redactor(self, dest: UrlDestination) -> Redact:
        """Scrubs the destination's secrets and the access tokens it was given from a text."""
        tokens = self.tokens.get(dest.name)
        if tokens is None:
            return dest.redact

        def redact(text: str, limit: int | None = None) -> str:
            for token in tokens.secrets():
                text = text.replace(token, "[redacted]")
            return dest.redact(text, limit)

        return redact

    async def send(
        self,
        dest: UrlDestination,
        *,
        action_type: str,
        msg_id: str,
        body: bytes,
        method: str = "POST",
        supersedes: str | None = None,
        judge: Callable[[Answer], PostcallError | None] | None = None,
    ) -> Delivery:
        """`judge`: for a receiver that answers 2xx with an error in its body (see `attempt`)."""

        async def one(exchange: Exchange) -> Answer:
            # signed here, in the slot: a record that waited for it (the line, a rate-limit token) carries
            # the time it is sent, not the time it began to wait (receivers refuse an old timestamp)
            headers = self._headers(dest, msg_id, body)
            if supersedes is not None:  # a deliberate re-delivery: the receiver upserts the action it replaces
                headers[SUPERSEDES_HEADER] = supersedes
            return await exchange.request(method, dest.endpoint, headers, body, side_effect=True)

        answer, latency_ms = await self.attempt(dest, action_type, one, judge=judge)
        return Delivery("delivered", dest.name, answer.status, latency_ms)

    async def attempt(
        self,
        dest: UrlDestination,
        action_type: str,
        run: Callable[[Exchange], Awaitable[Answer]],
        *,
        judge: Callable[[Answer], PostcallError | None] | None = None,
        redact: Redact | None = None,
        gone_disables: bool = True,
    ) -> tuple[Answer, float]:
        """One attempt: `run` makes its requests (one, or a token fetch, a lookup and a write) through
        the destination's client, within one isolation slot and ONE deadline for all of them. The
        answer `run` returns is judged (default: by its status; `judge` for APIs that answer 200 with
        an error); a failure is raised as a delivery error. Returns the answer and the latency in ms.
        `gone_disables` False: the request went to a resource the action named (an http action's path),
        so a 410 says that resource is gone, not the destination: the action fails, nothing is disabled."""
        redact = redact or self.redactor(dest)
        timeout = self._registry.timeout(dest)
        exchange = Exchange(self._clients[dest.name], self._options, timeout, self.tokens.get(dest.name))
        async with self._registry.gate(dest.name).slot() as slot:
            started, began = time.perf_counter(), time.time()
            try:
                async with asyncio.timeout(timeout):
                    answer = await run(exchange)
            except PostcallError as exc:  # raised by `run` itself (a refused token request, say)
                slot.record(not isinstance(exc, RetryableError))
                if isinstance(exc, AttemptDetails):
                    raise
                raise failure(exc, dest.name, redact=redact) from None
            except AddressRefused as exc:
                raise failure(PermanentError(f"SSRF guard: {exc}"), dest.name, redact=redact) from None
            except (httpx.TimeoutException, TimeoutError):
                if exchange.accepted is None:
                    slot.record(False)
                    raise failure(RetryableError(f"no answer within {timeout:g}s"), dest.name) from None
                answer = exchange.accepted
            except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
                # our own request is malformed: the same next time. Never the library's text, which
                # quotes the offending header value (a credential ending in a newline, say)
                raise failure(PermanentError(LOCAL_PROTOCOL_ERROR), dest.name) from None
            except httpx.HTTPError as exc:  # connection refused or reset, the receiver's protocol errors
                if exchange.accepted is None:
                    slot.record(False)
                    lost = RetryableError(f"{type(exc).__name__}: {exc}")
                    raise failure(lost, dest.name, redact=redact) from None
                answer = exchange.accepted
            finally:
                elapsed = time.perf_counter() - started
                delivery_duration(action_type, dest.name).observe(elapsed)
            error = self._classify(dest, answer, began, gone_disables) or (judge(answer) if judge else None)
            slot.record(not isinstance(error, RetryableError))
        latency_ms = round(elapsed * 1000, 3)
        if error is not None:
            detail = answer.detail(redact)
            raise failure(error, dest.name, answer.status, latency_ms, detail=detail, redact=redact)
        return answer, latency_ms

    def _headers(self, dest: UrlDestination, msg_id: str, body: bytes) -> dict[str, str]:
        # webhook-id on every request, signed or not (Slack): the receiver's key to drop a repeat
        headers = {"content-type": "application/json", "webhook-id": msg_id}
        if isinstance(dest, HttpDestination):
            headers.update(dest.header_values)
            headers.update(signature(dest, msg_id, body))
        return headers

    def _classify(
        self, dest: UrlDestination, answer: Answer, began: float, gone_disables: bool = True
    ) -> PostcallError | None:
        if answer.status == 410 and gone_disables:
            self._registry.disable(dest.name, DISABLED_REASON, began)
            return PermanentError(f"HTTP 410 Gone: destination {dest.name} disabled")
        return classify_http_status(answer.status, answer.retry_after)


def json_body(value: Any) -> bytes:
    """`value` as JSON. orjson writes integers of 64 bits at most and raises TypeError beyond (an unknown
    error, retried for hours); pydantic reads a record's integer of any size, and JSON allows it."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def signature(dest: HttpDestination, msg_id: str, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers when the destination signs, else none."""
    if dest.signer is None:
        return {}
    try:
        return dest.signer.headers(msg_id, body)
    except ValueError as exc:
        raise failure(PermanentError(str(exc)), dest.name) from None


class Exchange:
    """The requests of one attempt, on the destination's client, under the attempt's deadline."""

    def __init__(
        self, client: httpx.AsyncClient, options: HttpOptions, timeout: float, tokens: TokenSource | None = None
    ) -> None:
        self._client = client
        self._options = options
        self._timeout = timeout
        self._tokens = tokens
        # a 2xx to the attempt's side effect, kept from its head: the attempt delivered, whatever becomes
        # of the rest of the answer (the connection drops, the body is past the deadline)
        self.accepted: Answer | None = None

    async def request(
        self,
        method: str,
        url: str | httpx.URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        read_limit: int = SNIPPET_BYTES,
        authorize: bool = True,
        side_effect: bool = False,
    ) -> Answer:
        """The answer, with at most `read_limit` bytes of its body. When the destination fetches access
        tokens (OAuth2 client credentials, a service account) and `authorize` holds, the request carries
        the cached token, and on a 401 a new one, once more. `side_effect`: this request is what the
        attempt is for, and its answer's body is not needed to judge it (`accepted`)."""
        # only the start of an answer is read, and never decompressed
        sent = one_each({"user-agent": self._options.user_agent}, headers, {"accept-encoding": "identity"})

        def build(token: str | None) -> httpx.Request:
            extra = {"authorization": f"Bearer {token}"} if token else {}
            return self._client.build_request(
                method, url, content=body, headers=sent | extra, params=params, timeout=self._timeout
            )

        if self._tokens is None or not authorize:
            return await self._send(build(None), read_limit, side_effect)
        token = await self._tokens.token(self)
        answer = await self._send(build(token), read_limit, side_effect)
        if answer.status != 401:
            return answer
        self._tokens.refused(token)
        return await self._send(build(await self._tokens.token(self)), read_limit, side_effect)

    async def _send(self, request: httpx.Request, read_limit: int, side_effect: bool = False) -> Answer:
        """httpx timeouts bound each read; the attempt's deadline (around `run`) stops a receiver that
        trickles bytes forever."""
        response = await self._client.send(request, stream=True)
        if side_effect and response.is_success:
            self.accepted = Answer(response.status_code, None, None, "", b"", response.headers.get("content-type", ""))
        try:
            raw = await _read_some(response, read_limit)
        finally:
            await response.aclose()
        status, got, opts = response.status_code, response.headers, self._options
        wait = parse_retry_after(status, got, opts.retry_after_cap)
        wait = None if wait is None else max(wait, opts.retry_after_floor)
        return Answer(status, wait, got.get("location"), snippet(raw), raw, got.get("content-type", ""))


def one_each(*parts: Mapping[str, str]) -> dict[str, str]:
    """The headers of `parts`, a later one replacing an earlier one of the same name in any case (httpx
    would send both: `User-Agent` beside `user-agent`, `Accept-Encoding: gzip` beside our `identity`)."""
    out: dict[str, tuple[str, str]] = {}
    for part in parts:
        for name, value in part.items():
            out[name.lower()] = (name, value)
    return dict(out.values())


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: float | None  # seconds, already read (429 and 503 only) and bounded
    location: str | None
    snippet: str  # the start of the body, whitespace collapsed, for messages
    body: bytes = b""  # the start of the body as sent (up to the request's read limit)
    content_type: str = ""

    def detail(self, redact: Callable[[str, int], str]) -> str:
        """What the error message quotes: where a redirect pointed, and the start of the body, both
        redacted before they are cut (a cut must not leave the start of a secret the receiver echoed)."""
        moved = f"Location: {redact(self.location, 200)}" if self.location and 300 <= self.status < 400 else ""
        return "; ".join(part for part in (moved, redact(self.snippet, 200)) if part)


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    """The start of the body as sent: raw bytes, so a small compressed body cannot expand in memory."""
    chunks: list[bytes] = []
    size = 0
    raw = response.stream  # not aiter_bytes(): that decompresses a whole chunk (a gzip bomb) before we see it
    assert isinstance(raw, httpx.AsyncByteStream)
    async for chunk in raw:
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def snippet(raw: bytes) -> str:
    """The start of a body for messages, whitespace collapsed. A body cut at SNIPPET_BYTES loses the
    token the cut split (a run of token characters at the end) and ends in an ellipsis: that token may
    be the start of a secret the receiver echoed (our Authorization header), which redaction, matching
    whole secrets and starts only at its own cut, would not find once the collapsed text fits its limit."""
    text = raw[:SNIPPET_BYTES].decode("utf-8", errors="replace")
    if len(raw) >= SNIPPET_BYTES:  # read up to the limit: the body may go on
        text = _TOKEN_TAIL.sub("", text) + " …"
    return " ".join(text.split())


_TOKEN_TAIL = re.compile(r"[\w.~+/=:%-]*\Z")  # what a token, key or URL is made of, at the end


@asynccontextmanager
async def open_clients(registry: Registry, user_agent: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One client per URL destination, its pool sized to the destination's concurrency limit.

    Per destination rather than one shared pool: httpcore scans its whole pool for every request, so
    one large pool costs every request time in proportion to all destinations' connections (measured:
    a shared 650-connection pool ran several times slower than ten 64-connection ones), and one
    destination's stalled connections would sit in everybody's pool. The SSRF policy is per destination
    too, so a connection opened under allow_private is never reused for a destination without it.
    """
    async with AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        for dest in registry.only(UrlDestination):
            size = dest.max_concurrency + 1
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            clients[dest.name] = await stack.enter_async_context(
                guarded_client(allow_private=dest.allow_private, limits=limits, headers={"user-agent": user_agent})
            )
        yield clients
