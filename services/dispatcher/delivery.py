"""Sending one request to one destination: isolation gate, signature, SSRF-guarded client, and the
mapping of what came back onto the error tree.

    2xx                                    delivered
    3xx                                    PermanentError (redirects are never followed)
    408, 425, 429, 5xx, timeout, no conn.  RetryableError(retry_after = a 429's or 503's Retry-After, floor..cap)
    410 Gone                               the destination is disabled, PermanentError
    other 4xx                              PermanentError
    address refused by the SSRF guard      PermanentError
    our own request malformed (h11)        PermanentError, without the library's text (it quotes headers)

A receiver is not trusted: its Retry-After is read only on 429 and 503 (services.common.errors), at most
SNIPPET_BYTES of its body are read (raw, never decompressed), and one deadline bounds the whole attempt
(connect, send, headers and that body) however slowly it trickles bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import httpx

from services.common.errors import (
    PermanentError,
    PostcallError,
    RetryableError,
    classify_http_status,
    parse_retry_after,
)
from services.common.ssrf import AddressRefused, GuardedTransport
from services.dispatcher.destinations import HttpDestination, UrlDestination
from services.dispatcher.metrics import delivery_duration
from services.dispatcher.registry import Registry

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


class HttpSender:
    """Sends through the destination's own client, opened once at start; never one per request."""

    def __init__(self, registry: Registry, clients: Mapping[str, httpx.AsyncClient], options: HttpOptions) -> None:
        self._registry = registry
        self._clients = clients
        self._options = options

    async def send(
        self, dest: UrlDestination, *, action_type: str, msg_id: str, body: bytes, method: str = "POST"
    ) -> Delivery:
        headers = self._headers(dest, msg_id, body)
        timeout = self._registry.timeout(dest)
        async with self._registry.gate(dest.name).slot() as slot:
            started = time.perf_counter()
            try:
                answer = await self._request(dest, method, headers, body, timeout)
            except AddressRefused as exc:
                raise failure(PermanentError(f"SSRF guard: {exc}"), dest.name, redact=dest.redact) from None
            except (httpx.TimeoutException, TimeoutError):
                slot.record(False)
                raise failure(RetryableError(f"no answer within {timeout:g}s"), dest.name) from None
            except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
                # our own request is malformed: the same next time. Never the library's text, which
                # quotes the offending header value (a credential ending in a newline, say)
                raise failure(PermanentError(LOCAL_PROTOCOL_ERROR), dest.name) from None
            except httpx.HTTPError as exc:  # connection refused or reset, the receiver's protocol errors
                slot.record(False)
                lost = RetryableError(f"{type(exc).__name__}: {exc}")
                raise failure(lost, dest.name, redact=dest.redact) from None
            finally:
                elapsed = time.perf_counter() - started
                delivery_duration(action_type, dest.name).observe(elapsed)
            error = self._classify(dest, answer)
            slot.record(not isinstance(error, RetryableError))
        latency_ms = round(elapsed * 1000, 3)
        if error is not None:
            detail = answer.detail(dest.redact)
            raise failure(error, dest.name, answer.status, latency_ms, detail=detail, redact=dest.redact)
        return Delivery("delivered", dest.name, answer.status, latency_ms)

    def _headers(self, dest: UrlDestination, msg_id: str, body: bytes) -> dict[str, str]:
        # webhook-id on every request, signed or not (Slack): the receiver's key to drop a repeat
        headers = {
            "content-type": "application/json",
            "user-agent": self._options.user_agent,
            "webhook-id": msg_id,
            "accept-encoding": "identity",  # only a snippet of the answer is read, and never decompressed
        }
        if isinstance(dest, HttpDestination):
            headers.update(dest.header_values)
            if dest.signer is not None:
                try:
                    headers.update(dest.signer.headers(msg_id, body))
                except ValueError as exc:
                    raise failure(PermanentError(str(exc)), dest.name) from None
        return headers

    async def _request(
        self, dest: UrlDestination, method: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> Answer:
        client = self._clients[dest.name]
        # httpx timeouts bound each read; the outer bound stops a receiver that trickles bytes forever
        async with asyncio.timeout(timeout):
            request = client.build_request(method, dest.endpoint, content=body, headers=headers, timeout=timeout)
            response = await client.send(request, stream=True)
            try:
                snippet = await _read_some(response)
            finally:
                await response.aclose()
        status, got, opts = response.status_code, response.headers, self._options
        wait = parse_retry_after(status, got, opts.retry_after_cap)
        return Answer(status, None if wait is None else max(wait, opts.retry_after_floor), got.get("location"), snippet)

    def _classify(self, dest: UrlDestination, answer: Answer) -> PostcallError | None:
        if answer.status == 410:
            self._registry.disable(dest.name, DISABLED_REASON)
            return PermanentError(f"HTTP 410 Gone: destination {dest.name} disabled")
        return classify_http_status(answer.status, answer.retry_after)


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: float | None  # seconds, already read (429 and 503 only) and bounded
    location: str | None
    snippet: str

    def detail(self, redact: Callable[[str, int], str]) -> str:
        """What the error message quotes: where a redirect pointed, and the start of the body, both
        redacted before they are cut (a cut must not leave the start of a secret the receiver echoed)."""
        moved = f"Location: {redact(self.location, 200)}" if self.location and 300 <= self.status < 400 else ""
        return "; ".join(part for part in (moved, redact(self.snippet, 200)) if part)


async def _read_some(response: httpx.Response) -> str:
    """The start of the body as sent: raw bytes, so a small compressed body cannot expand in memory."""
    chunks: list[bytes] = []
    size = 0
    raw = response.stream  # not aiter_bytes(): that decompresses a whole chunk (a gzip bomb) before we see it
    assert isinstance(raw, httpx.AsyncByteStream)
    async for chunk in raw:
        chunks.append(chunk)
        size += len(chunk)
        if size >= SNIPPET_BYTES:
            break
    text = b"".join(chunks)[:SNIPPET_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())


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
                httpx.AsyncClient(
                    transport=GuardedTransport(allow_private=dest.allow_private, limits=limits),
                    follow_redirects=False,
                    trust_env=False,
                    headers={"user-agent": user_agent},
                )
            )
        yield clients
