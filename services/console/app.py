"""The web console, served by the query API's app under /console (docs/console.md, docs/adr/0002-console.md).

    app = create_app(settings)     # services.api.app: mounts the console when settings.console.enabled

Pages are server-rendered (Jinja2, autoescape everywhere) with htmx for the live parts; who may see and
do what is services/console/access.py's.
"""

from __future__ import annotations

import contextlib
import json

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import access, agents, inbox, letters, operations, pages, trial
from services.console.render import STATIC, page
from services.store.db import StoreUnavailable

TITLES = {
    400: "Bad request",
    401: "Log in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Not a form",
    422: "Bad request",
    429: "Busy",
    503: "Store unavailable",
}
STORE_UNAVAILABLE = "the store is unavailable; try again shortly"


def mount(app: FastAPI) -> None:
    for module in (access, pages, letters, operations, inbox, agents, trial):
        app.include_router(module.router)
    app.mount(f"{access.PATH}/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(access.LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_form)


async def _login_required(request: Request, _exc: Exception) -> Response:
    return access.login_redirect(request)


def console_page(request: Request) -> bool:
    path = request.url.path
    return path.startswith(access.PATH + "/") and not path.startswith(access.PATH + "/static")


async def _invalid_form(request: Request, exc: Exception) -> Response:
    """A form field FastAPI refuses (too long, not a number): the console's error page naming the field and
    what is wrong, never its value (FastAPI's JSON echoes it, and htmx would swap it in as markup); the
    JSON API keeps FastAPI's JSON body."""
    assert isinstance(exc, RequestValidationError)
    if not console_page(request):
        try:
            return await request_validation_exception_handler(request, exc)
        except UnicodeEncodeError:  # FastAPI writes the refused input back as UTF-8; a lone surrogate from a
            # JSON body ("\ud800": json.loads takes it, pydantic refuses it) cannot be: escaped as JSON allows
            detail = jsonable_encoder(exc.errors())
            body = json.dumps({"detail": detail}, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            return Response(body, status_code=422, media_type="application/json")
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'form'}: {e['msg']}" for e in exc.errors())
    return await _http_error(request, StarletteHTTPException(422, problems))


async def _http_error(request: Request, exc: Exception) -> Response:
    """An HTML page for the console's errors; the JSON API keeps FastAPI's JSON body."""
    assert isinstance(exc, StarletteHTTPException)
    if not console_page(request):
        return await http_exception_handler(request, exc)
    with contextlib.suppress(StoreUnavailable, DBAPIError):  # shown without who is asking, then
        await access.resolve_or_none(request)
    response = _error_page(request, exc.status_code, exc.detail)
    response.headers.update(exc.headers or {})  # a 429's Retry-After
    return response


def store_unavailable(request: Request) -> Response:
    """The console's answer when the store cannot be reached: its error page (a fragment for htmx, which swaps
    a 503), never the database's words (they name its host). The live list's poll is answered 204, which htmx
    does not swap: its row stays, and polls again."""
    if request.headers.get("hx-request") and request.url.path in access.BACKGROUND:
        return Response(status_code=204)
    return _error_page(request, 503, STORE_UNAVAILABLE)


def _error_page(request: Request, status: int, detail: str) -> Response:
    """The error page (a fragment for htmx); without who is asking when that was not known (the store failed
    first, or the request never reached the console's access check)."""
    context = {"status": status, "title": TITLES.get(status, "Error"), "detail": detail}
    if not hasattr(request.state, "console"):
        context = {"who": None, "csrf": None, "open_mode": False, **context}
    template = "error_fragment.html" if request.headers.get("hx-request") else "error.html"
    return page(request, template, context, status_code=status)
