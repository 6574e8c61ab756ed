"""Jinja2, with autoescape on for every template, and the filters pages use.

Nothing from Kafka, a transcript or the store is marked safe: the only `Markup` built in Python is in
this module and in services/console/evidence.py, from escaped pieces. Times are rendered as
`<time datetime="...">` in UTC; console.js shows them in the viewer's zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"
CSRF_COOKIE = "pc_csrf"  # the double-submit token of a page without a session (services/console/access.py)
STATIC = Path(__file__).parent / "static"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name: never select_autoescape
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def time_tag(value: datetime | None) -> Markup:
    if value is None:
        return Markup('<span class="dim">—</span>')
    utc = value.astimezone(UTC)  # an event's times keep the offset the platform sent
    return Markup('<time datetime="{}">{}</time>').format(utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    return (
        f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"
        if total >= 3600
        else f"{total // 60}:{total % 60:02d}"
    )


def pretty(value: Any) -> str:
    """JSON for a <pre> block (escaped by autoescape like any text)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def confidence(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def urlpart(value: str) -> str:
    """One path segment: every reserved character encoded, '/' too."""
    return quote(value, safe="")


env.filters.update(time=time_tag, duration=duration, pretty=pretty, short=short, confidence=confidence, urlpart=urlpart)
env.globals.update(escape=escape)


def page(request: Request, template: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    """A full page, or only its `content` block when htmx asks for a fragment (HX-Request, no boost)."""
    base = dict(request.state.console) if hasattr(request.state, "console") else {}
    html = env.get_template(template).render({**base, **context, "request_path": request.url.path})
    return _answer(request, HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS))


def fragment(request: Request, template: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    base = dict(request.state.console) if hasattr(request.state, "console") else {}
    html = env.get_template(template).render({**base, **context})
    return _answer(request, HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS))


def _answer(request: Request, response: HTMLResponse) -> HTMLResponse:
    """Hands out the double-submit CSRF cookie a page rendered without a session (login form, open mode)."""
    new = getattr(request.state, "new_csrf", None)
    if new:
        secure = request.app.state.settings.console.secure_cookies
        response.set_cookie(CSRF_COOKIE, new, path="/console", httponly=True, samesite="strict", secure=secure)
    return response


# No inline script anywhere: the policy allows scripts from this origin only, so even a markup bug
# could not run a transcript's <script>.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
