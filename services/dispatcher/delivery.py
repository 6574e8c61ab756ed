"""Sending one request to one destination: isolation gate, signature, SSRF-guarded client, and the
mapping of what came back onto the error tree.

    2xx                                    delivered
    3xx                                    PermanentError (redirects are never followed)
    408, 425, 429, 5xx, timeout, no conn.  RetryableError(retry_after = Retry-After clamped to floor..cap)
    410 Gone                               the destination is disabled, PermanentError
    other 4xx                              PermanentError
    address refused by the SSRF guard      PermanentError
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx

from services.common.errors import PermanentError, PostcallError, RetryableError, classify_http_status
from services.common.ssrf import AddressRefused, GuardedTransport
from services.dispatcher.destinations import HttpDestination, UrlDestination
from services.dispatcher.metrics import delivery_duration
from services.dispatcher.registry import Registry

DISABLED_REASON = "destination disabled (410 Gone)"
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
) -> PostcallError:
    """`error` re-typed as a delivery error carrying the attempt's details."""
    message = f"{error}: {detail}" if detail else str(error)
    out: DeliveryRetryable | DeliveryRejected
    if isinstance(error, RetryableError):
        out = DeliveryRetryable(message, retry_after=error.retry_after)
    else:
        out = DeliveryRejected(message)
    out.destination, out.status_code, out.latency_ms = destination, status, latency_ms
    return out


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def clamp(seconds: float | None, floor: float, cap: float) -> float | None:
    return None if seconds is None else min(max(seconds, floor), cap)


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
                raise failure(PermanentError(f"SSRF guard: {exc}"), dest.name) from None
            except (httpx.TimeoutException, TimeoutError):
                slot.record(False)
                raise failure(RetryableError(f"no answer within {timeout:g}s"), dest.name) from None
            except httpx.HTTPError as exc:  # connection refused or reset, protocol errors, bad encodings
                slot.record(False)
                raise failure(RetryableError(f"{type(exc).__name__}: {exc}"), dest.name) from None
            finally:
                elapsed = time.perf_counter() - started
                delivery_duration(action_type, dest.name).observe(elapsed)
            error = self._classify(dest, answer.status, answer.retry_after)
            slot.record(not isinstance(error, RetryableError))
        latency_ms = round(elapsed * 1000, 3)
        if error is not None:
            raise failure(error, dest.name, answer.status, latency_ms, detail=answer.detail())
        return Delivery("delivered", dest.name, answer.status, latency_ms)

    def _headers(self, dest: UrlDestination, msg_id: str, body: bytes) -> dict[str, str]:
        # webhook-id on every request, signed or not (Slack): the receiver's key to drop a repeat
        headers = {"content-type": "application/json", "user-agent": self._options.user_agent, "webhook-id": msg_id}
        if isinstance(dest, HttpDestination):
            headers.update(dest.headers)
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
        got = response.headers
        return Answer(response.status_code, got.get("retry-after"), got.get("location"), snippet)

    def _classify(self, dest: UrlDestination, status: int, retry_after: str | None) -> PostcallError | None:
        if status == 410:
            self._registry.disable(dest.name, DISABLED_REASON)
            return PermanentError(f"HTTP 410 Gone: destination {dest.name} disabled")
        opts = self._options
        return classify_http_status(
            status, clamp(parse_retry_after(retry_after), opts.retry_after_floor, opts.retry_after_cap)
        )


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    location: str | None
    snippet: str

    def detail(self) -> str:
        """What the error message quotes: where a redirect pointed, and the start of the body."""
        moved = f"Location: {self.location[:200]}" if self.location and 300 <= self.status < 400 else ""
        return "; ".join(part for part in (moved, self.snippet) if part)


async def _read_some(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= SNIPPET_BYTES:
            break
    text = b"".join(chunks)[:SNIPPET_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())[:200]


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
