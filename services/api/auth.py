"""Who is calling, and may they: bearer tokens from the store, roles viewer < operator.

Open mode: an API listening on a loopback address with no active token in the store serves everyone
as `local` (operator), so that `make run` and `curl` work on a laptop. Once a token exists, or on any
other address, every request needs `Authorization: Bearer <token>`; on another address with no token
at all, the API refuses to start (`check_bind`). The open mode serves only requests addressed to a
loopback name (Host: localhost, 127.0.0.1, [::1]): a page of another site whose name was re-pointed at
127.0.0.1 (DNS rebinding) sends its own name, and gets the login like any stranger.

The console (services/console) mounts into the same app and adds its own way in (a session cookie) with
`Auth.add(...)`; routes depend on `require("viewer")` / `require("operator")` whichever way came in.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.store import tokens
from services.store.db import Store
from services.store.tokens import Principal, Role

LOCAL = Principal("local", "operator")
OPEN_MODE_RECHECK_SECONDS = 2.0  # how soon a token created while serving in open mode closes it
Authenticator = Callable[[Request], Awaitable[Principal | None]]
# declares the scheme in the OpenAPI document (a client generated from it sends the header); the
# header itself is read and checked by Auth, which also knows the open mode and the console's session
BEARER = HTTPBearer(auto_error=False, description="A token from `postcall api token create NAME --role ROLE`.")


#: a request that carries one came through a proxy, which the open mode (loopback, no token) never serves:
#: Via is every HTTP proxy's duty (RFC 9110, 7.6.3); Envoy and load balancers send X-Forwarded-Proto/-Port
PROXY_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
    "via",
)


class BindRefused(Exception):
    """Raised when the API would listen on a non-loopback address without authentication configured."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


async def check_bind(store: Store, host: str) -> None:
    if is_loopback(host):
        return
    async with store.read() as conn:
        if await tokens.active_tokens(conn):
            return
    raise BindRefused(
        f"refusing to listen on {host} without authentication: create a token first "
        "(`postcall api token create NAME --role operator`), or listen on 127.0.0.1"
    )


class Auth:
    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.loopback = is_loopback(host)
        self.extra: list[Authenticator] = []
        self._open: tuple[float, bool] = (0.0, False)

    def add(self, authenticator: Authenticator) -> None:
        """Another way in (the console's session cookie), tried after the bearer token."""
        self.extra.append(authenticator)

    async def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header is not None:
            return await self._bearer(header)
        for authenticator in self.extra:
            found = await authenticator(request)
            if found is not None:
                return found
        if await self.open_mode(request):
            return LOCAL
        raise _unauthorized("authentication required: send Authorization: Bearer <token>")

    async def _bearer(self, header: str) -> Principal:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be `Bearer <token>`")
        async with self.store.write() as conn:
            found = await tokens.verify(conn, token.strip())
        if found is None:
            raise _unauthorized("unknown, revoked or expired token")
        return found

    async def open_mode(self, request: Request) -> bool:
        if not self.loopback or not is_loopback(request.url.hostname or ""):
            return False
        if any(name in request.headers for name in PROXY_HEADERS):
            return False  # forwarded by a proxy: its client is not on this machine
        if request.client is not None and not is_loopback(request.client.host):
            return False  # a peer uvicorn rewrote from a trusted proxy's X-Forwarded-For
        checked_at, is_open = self._open
        if time.monotonic() - checked_at > OPEN_MODE_RECHECK_SECONDS:
            async with self.store.read() as conn:
                is_open = await tokens.active_tokens(conn) == 0
            self._open = (time.monotonic(), is_open)
        return is_open


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal, if its role is at least `role` (401 / 403 otherwise)."""

    async def dependency(
        request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> Principal:
        auth: Auth = request.app.state.auth
        who = await auth.principal(request)
        if not who.can(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role; {who.name} is a {who.role}")
        return who

    return dependency
