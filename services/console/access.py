"""Who is using the console, and may they: sessions, the open mode on loopback, CSRF, login and logout.

Ways in, in order:
  1. the console's session cookie (`pc_session`, HttpOnly, SameSite=Strict, path /console): opened by
     logging in with an API token (`postcall api token create NAME --role viewer|operator`);
  2. the query API's own rule when there is no session: its open mode (a loopback address and no active
     token in the store) serves everyone as `local`, an operator. Anywhere else, the login page.
The session cookie is never accepted by the JSON API (its path is /console), so the API stays
bearer-only and free of cookie-borne CSRF.

CSRF: every POST carries a token, as the form field `csrf_token` or the `X-CSRF-Token` header (htmx
sends it from `hx-headers` on <body>): the session's own token, or, without a session (the login form,
open mode), a double-submit cookie `pc_csrf`. A POST whose Origin is another site is refused as well.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response

from services.api.auth import Auth
from services.console import sessions
from services.console.render import CSRF_COOKIE, page
from services.console.settings import ConsoleSettings
from services.store.db import Store
from services.store.tokens import Principal, Role

SESSION_COOKIE = "pc_session"
PATH = "/console"
# requests a page makes on its own (the conversations page's poll for new calls): no use by a person, so
# they never reset a session's idle clock, or a console left open would stay logged in until its 12 hours
BACKGROUND = frozenset({f"{PATH}/conversations/new"})
router = APIRouter(prefix=PATH)
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class LoginRequired(Exception):
    """Raised when a page needs a principal and the request has none (answered with the login page)."""


@dataclass(frozen=True)
class Access:
    principal: Principal
    csrf_token: str
    session: bool  # False: open mode (loopback, no token in the store)

    def can(self, role: Role) -> bool:
        return self.principal.can(role)


def _settings(request: Request) -> ConsoleSettings:
    found: ConsoleSettings = request.app.state.settings.console
    return found


async def resolve(request: Request) -> Access:
    """The request's principal and CSRF token, kept on request.state for the templates."""
    cached: Access | None = getattr(request.state, "access", None)
    if cached is not None:
        return cached
    store: Store = request.app.state.store
    auth: Auth = request.app.state.auth
    found: Access | None = None
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        async with store.read() as conn:
            live = await sessions.find_session(conn, session_id, _settings(request))
        if live is not None and live.touch and request.url.path not in BACKGROUND:
            async with store.write() as conn:
                await sessions.touch_session(conn, session_id)
        if live is not None:
            found = Access(live.principal, live.csrf_token, session=True)
    if found is None and await auth.open_mode(request):
        found = Access(auth_local(), _csrf_cookie(request), session=False)
    if found is None:
        raise LoginRequired()
    request.state.access = found
    request.state.console = {"who": found.principal, "csrf": found.csrf_token, "open_mode": not found.session}
    return found


def auth_local() -> Principal:
    from services.api.auth import LOCAL

    return LOCAL


def _csrf_cookie(request: Request) -> str:
    """The double-submit token of a request without a session; a fresh one if it has none yet (set on the
    response by services.console.render)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) < 32 or len(value) > 100:
        value = getattr(request.state, "new_csrf", None) or sessions.new_secret()
        request.state.new_csrf = value
    return value


def _secure(request: Request) -> bool:
    return _settings(request).secure_cookies


async def viewer(request: Request) -> Access:
    return await resolve(request)


async def operator(request: Request) -> Access:
    found = await resolve(request)
    if not found.can("operator"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this needs the operator role; {found.principal.name} is a viewer"
        )
    return found


Viewer = Annotated[Access, Depends(viewer)]
Operator = Annotated[Access, Depends(operator)]


async def check_csrf(request: Request) -> None:
    """Every state change: a same-site request carrying the expected token."""
    found = await resolve_or_none(request)
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")
    if found is None and request.cookies.get(SESSION_COOKIE) and request.url.path != f"{PATH}/login":
        # a page drawn in a session that has since ended (idle, its limit, its token revoked, logged out in
        # another tab) carries that session's token, which nothing matches now: it needs a login, not the
        # "wrong CSRF token" a forged request gets (and its Log out could not be done at all)
        raise LoginRequired()
    # every form of the console posts one: a body the console cannot read (JSON from a script that took it for
    # the API, or none) would be read as a form with no field at all, which a redrive takes as "every letter"
    if not request.headers.get("content-type", "").lower().startswith(FORMS):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the form as application/x-www-form-urlencoded or multipart/form-data (the JSON API is /api/v1)",
        )
    expected = getattr(getattr(request.state, "access", None), "csrf_token", None) or request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        sent = str((await request.form()).get("csrf_token") or "")
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token: reload the page and try again")


Csrf = Depends(check_csrf)


# ── login and logout ───────────────────────────────────────────────────────────────────────────────


def safe_next(value: str | None) -> str:
    """Only a path inside the console: never another host (`//evil`, `https://...`), never a backslash."""
    if not value or not value.startswith(PATH + "/") or value.startswith("//") or "\\" in value:
        return PATH + "/conversations"
    return value


def _login_context(request: Request, next: str | None, error: str | None) -> dict[str, object]:
    idle = _settings(request).session_idle_minutes
    return {"csrf": _csrf_cookie(request), "next": safe_next(next), "error": error, "who": None, "idle_minutes": idle}


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", _login_context(request, next, error=None))


@router.post("/login", include_in_schema=False, dependencies=[Csrf])
async def login(
    request: Request, token: Annotated[str, Form(max_length=300)], next: Annotated[str, Form()] = ""
) -> Response:
    store: Store = request.app.state.store
    async with store.write() as conn:
        opened = await sessions.open_session(conn, token.strip(), _settings(request))
    if opened is None:
        context = _login_context(request, next, error="unknown, revoked or expired token")
        return page(request, "login.html", context, status_code=401)
    session_id, _ = opened
    response = RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    max_age = math.ceil(_settings(request).session_max_hours * 3600)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    await check_csrf(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        store: Store = request.app.state.store
        async with store.write() as conn:
            await sessions.close_session(conn, session_id)
    response = RedirectResponse(f"{PATH}/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path=PATH)
    return response


async def resolve_or_none(request: Request) -> Access | None:
    try:
        return await resolve(request)
    except LoginRequired:
        return None


def login_redirect(request: Request) -> Response:
    if request.headers.get("hx-request"):  # back to the page that asked, not to its fragment's URL
        asked = urlsplit(request.headers.get("hx-current-url", ""))
        return Response(status_code=204, headers={"HX-Redirect": _login_url(asked.path, asked.query)})
    if request.method != "GET":  # a form posted from a page (Log out): back to that page, not to the POST's URL
        shown = urlsplit(request.headers.get("referer", ""))
        return RedirectResponse(_login_url(shown.path, shown.query), status_code=status.HTTP_303_SEE_OTHER)
    return RedirectResponse(_login_url(request.url.path, request.url.query), status_code=status.HTTP_303_SEE_OTHER)


def _login_url(path: str, query: str) -> str:
    """The login page, which comes back to `path` (and its query) once logged in."""
    return f"{PATH}/login?next={quote(path + ('?' + query if query else ''))}"
