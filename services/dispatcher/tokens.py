"""Access tokens a destination fetches for itself: OAuth 2.0 client credentials (RFC 6749 4.4) and a
Google service account's signed JWT (RFC 7523), cached until they expire and fetched again once when the
API answers 401.

A token is fetched inside the attempt that needs it, through the destination's own SSRF-guarded client
and under that attempt's one deadline, so a slow token endpoint costs one attempt, never a stalled
worker. One fetch at a time per destination: the actions waiting meanwhile take the token it brings.

Tokens never leave the process: the token endpoint's answer is read for `access_token`, `expires_in`
and, on a refusal, the `error` code only (its description may quote what we sent), and every token
handed out stays in `secrets()` so the destination's redaction scrubs it from any text a receiver
echoes back.

Written here rather than with an OAuth client library: the exchange is one form POST, and what matters
is where it runs (our guarded client, our deadline, our error tree), which the libraries own themselves.
The service account's JWT is signed by google-auth.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import orjson
from google.auth import jwt

from services.common.errors import PermanentError, RetryableError, classify_http_status
from services.dispatcher.destinations import (
    ClientCredentialsAuth,
    DestinationBase,
    GoogleSheetsDestination,
    HttpDestination,
    client_basic,
)

if TYPE_CHECKING:
    from services.dispatcher.delivery import Answer, Exchange

TOKEN_ANSWER_BYTES = 16 * 1024
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_LIFETIME = 3600.0  # seconds, when the answer has no expires_in (a 401 refreshes it sooner)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Grant:
    """What to POST to the token endpoint, and what the answer is for."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]


class Fetcher(Protocol):
    def grant(self) -> Grant: ...


class TokenSource:
    """One destination's access token: cached until shortly before it expires, fetched by one attempt
    at a time, replaced once when an API refuses it."""

    def __init__(self, fetcher: Fetcher, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._seen: deque[str] = deque(maxlen=8)  # recent tokens, for redaction
        self.fetches = 0

    async def token(self, exchange: Exchange) -> str:
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:  # waiting here is bounded by the waiting attempt's own deadline
            if not self._valid():
                await self._fetch(exchange)
            assert self._token is not None
            return self._token

    def refused(self, token: str) -> None:
        """An API answered 401 to `token`: the next call fetches a new one (unless another attempt
        already did)."""
        if self._token == token:
            self._token = None

    def secrets(self) -> list[str]:
        return list(self._seen)

    def _valid(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at

    async def _fetch(self, exchange: Exchange) -> None:
        grant = self._fetcher.grant()
        headers = {"accept": "application/json", **grant.headers}
        body = form(grant.form)
        answer = await exchange.request(
            "POST", grant.url, headers, body, read_limit=TOKEN_ANSWER_BYTES, authorize=False
        )
        token, lifetime = self._read(answer)
        self.fetches += 1
        self._seen.append(token)
        self._token = token
        # renew a little early: 10% of the lifetime, at most a minute
        self._expires_at = self._clock() + lifetime - min(60.0, lifetime / 10)

    @staticmethod
    def _read(answer: Answer) -> tuple[str, float]:
        """The token and its lifetime; the errors name the status and the `error` code, nothing else."""
        data = _json(answer.body)
        data = data if isinstance(data, dict) else {}
        error = classify_http_status(answer.status, answer.retry_after)
        if error is not None:
            code = data.get("error")
            named = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            message = f"token request refused by the authorization server: HTTP {answer.status}{named}"
            if isinstance(error, RetryableError):
                raise RetryableError(message, retry_after=error.retry_after)
            raise PermanentError(message)
        token, kind = data.get("access_token"), data.get("token_type", "bearer")
        if not isinstance(token, str) or not token or not isinstance(kind, str) or kind.lower() != "bearer":
            raise PermanentError("the authorization server's answer has no bearer access_token")
        if not token.isascii() or not token.isprintable():
            raise PermanentError("the authorization server's access_token is not printable ASCII")
        return token, _lifetime(data.get("expires_in"))


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _lifetime(value: Any) -> float:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to int()
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(min(value, 86_400 * 30))
    return DEFAULT_LIFETIME


def form(fields: Mapping[str, str]) -> bytes:
    return urlencode(fields).encode()


class ClientCredentials:
    """RFC 6749 4.4 with the client authenticated by HTTP Basic (default) or in the form."""

    def __init__(self, dest: HttpDestination) -> None:
        assert isinstance(dest.auth, ClientCredentialsAuth) and dest.client is not None
        self._auth = dest.auth
        self._client_id, self._secret = dest.client

    def grant(self) -> Grant:
        auth = self._auth
        fields = {"grant_type": "client_credentials"}
        fields |= {k: v for k, v in (("scope", auth.scope), ("audience", auth.audience)) if v}
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if auth.client_auth == "basic":
            headers["authorization"] = f"Basic {client_basic(self._client_id, self._secret)}"
        else:
            fields |= {"client_id": self._client_id, "client_secret": self._secret}
        return Grant(auth.token_url, fields, headers)


class ServiceAccount:
    """RFC 7523: a JWT signed with the service account's private key (google-auth) is exchanged for an
    access token at the account's token URI."""

    def __init__(self, dest: GoogleSheetsDestination, clock: Callable[[], float] = time.time) -> None:
        self._dest = dest
        self._clock = clock

    def grant(self) -> Grant:
        account = self._dest.account
        now = int(self._clock())
        claims = {
            "iss": account.email,
            "scope": " ".join(self._dest.scopes),
            "aud": account.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = jwt.encode(account.signer, claims, key_id=account.key_id).decode()  # type: ignore[no-untyped-call]
        fields = {"grant_type": JWT_BEARER, "assertion": assertion}
        return Grant(account.token_uri, fields, {"content-type": "application/x-www-form-urlencoded"})


def token_sources(destinations: Iterable[DestinationBase]) -> dict[str, TokenSource]:
    """A token source for each destination that fetches its tokens; keyed by destination name."""
    out: dict[str, TokenSource] = {}
    for dest in destinations:
        fetcher: Fetcher | None = None
        if isinstance(dest, HttpDestination) and isinstance(dest.auth, ClientCredentialsAuth):
            fetcher = ClientCredentials(dest)
        elif isinstance(dest, GoogleSheetsDestination):
            fetcher = ServiceAccount(dest)
        if fetcher is not None:
            out[dest.name] = TokenSource(fetcher)
    return out
