"""The reading pages: conversations (filters, text search, pages, new calls without a reload) and one call
as a timeline. Every query is the store's own (services/store/queries.py), as the JSON API runs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.end_reasons import EndReason
from schemas.events import MAX_ID_LENGTH
from services.console import timeline
from services.console.access import PATH, Viewer
from services.console.destinations import DestinationStates
from services.console.render import fragment, page
from services.console.settings import ConsoleSettings
from services.store import queries
from services.store.db import Store
from services.store.models import ActionRequest, table
from services.store.queries import ConversationFilter, QueryError
from services.store.rows import clean
from services.store.views import ConversationSummary, Page

router = APIRouter(prefix=PATH, include_in_schema=False)
END_REASONS = sorted(r.value for r in EndReason)
Status = Literal["ok", "failed", "none"]
#: how far before its cursor the poller looks again: a recorder's transaction reads the store's clock for
#: `stored_at` and commits a moment later, so rows may become visible out of order (services/store/writer.py)
NEW_CALLS_OVERLAP = timedelta(seconds=15)


@dataclass
class ConversationForm:
    """The conversations page's query string: a value it cannot read is named in `errors` (the page is a 400),
    never a 500; a time zone it does not know is a note (`notes`), the dates read as UTC (the browser sends its
    own zone, which the server's zone database may lack)."""

    values: dict[str, str] = field(default_factory=dict)
    end_reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    filters: ConversationFilter = field(default_factory=ConversationFilter)

    @classmethod
    def read(cls, params: Mapping[str, Any], end_reasons: list[str]) -> ConversationForm:
        keys = ("agent", "version", "q", "since", "until", "status", "failed", "review", "tz")
        form = cls({k: str(params.get(k) or "").strip()[:MAX_ID_LENGTH] for k in keys}, [r for r in end_reasons if r])
        bad = [r for r in form.end_reasons if r not in END_REASONS]
        form.errors += [f"unknown end reason {r!r}" for r in bad]
        zone = form._zone()
        status = form.values["status"]
        if status and status not in get_args(Status):
            form.errors.append(f"unknown extraction status {status!r}")
        form.filters = ConversationFilter(
            agent=form.values["agent"] or None,
            agent_version=form.values["version"] or None,
            end_reasons=[r for r in form.end_reasons if r not in bad],
            since=form._day("since", zone),
            until=form._day("until", zone, next_day=True),
            extraction_status=status if status in get_args(Status) else None,  # type: ignore[arg-type]
            failed=True if form.values["failed"] else None,
            needs_review=True if form.values["review"] else None,
            text=form.values["q"] or None,
        )
        return form

    def _zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.values["tz"] or "UTC")
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the zone database ("America")
            self.notes.append(f"unknown time zone {self.values['tz']!r}; dates are read as UTC")
            return ZoneInfo("UTC")

    def _day(self, key: str, zone: ZoneInfo, next_day: bool = False) -> datetime | None:
        """A date from the form, as the start of that day in the viewer's zone (`until`: the day after)."""
        text = self.values[key]
        if not text:
            return None
        try:
            day = date.fromisoformat(text)
        except ValueError:
            self.errors.append(f"{key}: {text!r} is not a date (YYYY-MM-DD)")
            return None
        try:
            start = datetime.combine(day + timedelta(days=1 if next_day else 0), time(), zone)
            return start.astimezone(UTC)
        except OverflowError:  # 9999-12-31's next day; 0001-01-01 east of UTC
            self.errors.append(f"{key}: {text!r} is out of range")
            return None

    def query(self, **extra: str) -> str:
        pairs = [(k, v) for k, v in self.values.items() if v] + [("end_reason", r) for r in self.end_reasons]
        return urlencode(pairs + [(k, v) for k, v in extra.items() if v])


def _store(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


def _settings(request: Request) -> ConsoleSettings:
    found: ConsoleSettings = request.app.state.settings.console
    return found


@router.get("/")
async def home() -> Response:
    return Response(status_code=303, headers={"Location": f"{PATH}/conversations"})


@router.get("/conversations")
async def conversations(request: Request, who: Viewer, cursor: str | None = None) -> Response:
    """A filter or cursor it cannot read is a 400 page naming it (as the dead-letter and task pages answer), with
    the form to correct it and no list: the calls without that filter are not what was asked for."""
    form = ConversationForm.read(request.query_params, request.query_params.getlist("end_reason"))
    settings = _settings(request)
    found, stored = Page[ConversationSummary](items=[], next_cursor=None), None
    if not form.errors:
        try:
            async with _store(request).read() as conn:
                found = await queries.list_conversations(conn, form.filters, limit=settings.page_size, cursor=cursor)
                stored = None if cursor else await queries.newest_stored(conn)
        except QueryError as exc:  # a cursor it cannot read
            form.errors.append(str(exc))
    context = {
        "form": form,
        "page": found,
        "cursor": cursor,
        "end_reasons": END_REASONS,
        "poll": None if cursor or form.errors else _poll_url(form, stored),
        "refresh_seconds": settings.refresh_seconds,
    }
    status = 400 if form.errors else 200
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "results":
        return fragment(request, "conversation_results.html", context, status_code=status)
    return page(request, "conversations.html", context, status_code=status)


def _poll_url(form: ConversationForm, after: str | None) -> str:
    return f"{PATH}/conversations/new?{form.query(after=after or '')}"


@router.get("/conversations/new")
async def new_conversations(request: Request, who: Viewer, after: str | None = None) -> Response:
    """Calls stored after the page's cursor, by arrival in the store rather than end time (a vendor's webhook
    or a lagging recorder brings a call long after it ended), oldest first so they stack on top in order, and
    the poller itself again with the new cursor. Rows stored within NEW_CALLS_OVERLAP before the cursor come
    again (writers commit out of order); the page keeps the copy it shows (console.js, by the row's id)."""
    form = ConversationForm.read(request.query_params, request.query_params.getlist("end_reason"))
    settings = _settings(request)
    async with _store(request).read() as conn:
        try:
            items, cursor = await queries.stored_since(
                conn, form.filters, after=after or None, overlap=NEW_CALLS_OVERLAP, limit=settings.page_size
            )
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
    context = {
        "rows": list(reversed(items)),
        "poll": _poll_url(form, cursor),
        "refresh_seconds": settings.refresh_seconds,
        "new": True,
    }
    return fragment(request, "conversation_new.html", context)


@router.get("/conversations/{conversation_id:path}")
async def conversation(request: Request, who: Viewer, conversation_id: str) -> Response:
    if len(conversation_id) > MAX_ID_LENGTH:
        raise HTTPException(400, f"a conversation id is at most {MAX_ID_LENGTH} characters")
    async with _store(request).read() as conn:
        detail = await queries.get_conversation(conn, conversation_id)
        payloads = await action_payloads(conn, conversation_id)
    if detail is None:
        raise HTTPException(404, f"no conversation {conversation_id!r} in the store")
    states: DestinationStates | None = getattr(request.app.state, "destination_states", None)
    context = {
        "t": timeline.build(detail),
        "payloads": payloads,
        "can_operate": who.can("operator"),
        "destinations": states.for_call(detail.actions) if states else [],
        "destination_state_error": states.error if states else "destination state is not followed",
    }
    return page(request, "conversation.html", context)


async def action_payloads(conn: AsyncConnection, conversation_id: str) -> dict[str, Any]:
    """action_id -> the action record as the router produced it (what the dispatcher was asked to send)."""
    r = table(ActionRequest).c
    wanted = clean(conversation_id)  # NUL-free, as stored: PostgreSQL refuses NUL in a parameter
    rows = await conn.execute(select(r.action_id, r.payload).where(r.conversation_id == wanted))
    return {action_id: orjson.loads(payload) for action_id, payload in rows}
