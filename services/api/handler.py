"""The routes under /api/v1. Reads need the viewer role; operator actions the operator role, and are audited.

GET  /conversations                   filters, cursor pagination, sorted by end time
GET  /conversations/{id}              the event, every extraction, trace, action and attempt
POST /conversations/reextract         republish stored conversations for extraction (operator)
GET  /dead-letters                    filters, cursor pagination, newest first
GET  /dead-letters/counts             grouped by service, category and reason
GET  /dead-letters/{id}               one dead letter with its headers and value
POST /dead-letters/replay             send chosen dead letters back to their topic (operator)
GET  /stats                           per agent and day
GET  /audit                           operator actions (operator)
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.convertors import Convertor, register_url_convertor

from schemas.end_reasons import EndReason
from schemas.events import MAX_ID_LENGTH
from schemas.routes import SERVICES
from services.api import operations
from services.api.auth import require
from services.api.settings import ApiSettings
from services.store import queries, tokens
from services.store.db import Store
from services.store.tokens import Principal
from services.store.views import (
    AuditView,
    ConversationDetail,
    ConversationSummary,
    DayStats,
    DeadLetterDetail,
    DeadLetterSummary,
    Page,
    ReasonCount,
)


class Problem(BaseModel):
    """Every error but a 422 (whose detail lists each invalid parameter) and an operation's 503."""

    detail: str = Field(description="What was wrong, in words.")


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


router = APIRouter(
    prefix="/api/v1",
    responses={
        401: _problem("No token, or an unknown or revoked one (the API is open only on loopback with no token)."),
        503: _problem("The store is unavailable; try again shortly."),
    },
)
Responses = dict[int | str, dict[str, Any]]
BAD_QUERY: Responses = {400: _problem("A malformed cursor, or a number or time the store cannot hold, named.")}
NOT_OPERATOR: Responses = {403: _problem("The token's role is viewer; this needs operator.")}
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="Rows per page.")]
Cursor = Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page.")]
Since = Annotated[AwareDatetime | None, Query(description="At or after (RFC 3339 with an offset).")]
Until = Annotated[AwareDatetime | None, Query(description="Before (RFC 3339 with an offset).")]
Service = Literal[SERVICES]  # type: ignore[valid-type]
EPOCH_MIN = datetime.min.replace(tzinfo=UTC)  # the earliest time the store holds (stats' default window stops there)


def _json(view: BaseModel) -> Response:
    """The view as JSON at once: it is already the declared response model, validated when built, so
    FastAPI's second validation of every row is skipped (a third of a page's server time)."""
    return Response(view.model_dump_json(), media_type="application/json")


def store_of(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


def settings_of(request: Request) -> ApiSettings:
    found: ApiSettings = request.app.state.settings
    return found


def stopping_of(request: Request) -> asyncio.Event:
    """Set when the server is asked to exit (services/api/__main__.py): an operation stops sending."""
    found: asyncio.Event = request.app.state.stopping
    return found


StoreDep = Annotated[Store, Depends(store_of)]
SettingsDep = Annotated[ApiSettings, Depends(settings_of)]
StopDep = Annotated[asyncio.Event, Depends(stopping_of)]


# ── conversations ──────────────────────────────────────────────────────────────────────────────────


class ConversationQuery(BaseModel):
    agent: str | None = Field(None, max_length=MAX_ID_LENGTH, description="Agent id.")
    agent_version: str | None = Field(None, max_length=MAX_ID_LENGTH)
    end_reason: list[EndReason] = Field(default_factory=list, description="Canonical end reasons (any of).")
    since: AwareDatetime | None = Field(None, description="Ended at or after.")
    until: AwareDatetime | None = Field(None, description="Ended before.")
    extraction_status: Literal["ok", "failed", "none"] | None = Field(None, description="none: not extracted yet.")
    failed: bool | None = Field(None, description="An action failed or was dead-lettered, or a record was.")
    needs_review: bool | None = Field(None, description="The newest extraction has a value flagged for review.")
    q: str | None = Field(None, min_length=1, max_length=200, description="Text in the summary or customer.")
    # each id bounded as the contract bounds it; a constraint is also what makes pydantic refuse a lone
    # surrogate from a JSON body ("\ud83d"), which no database can hold as a parameter (a 500 otherwise)
    ids: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] = Field(
        default_factory=list, max_length=1000, description="Conversation ids (any of)."
    )

    def filters(self) -> queries.ConversationFilter:
        return queries.ConversationFilter(
            agent=self.agent,
            agent_version=self.agent_version,
            end_reasons=tuple(r.value for r in self.end_reason),
            since=self.since,
            until=self.until,
            extraction_status=self.extraction_status,
            failed=self.failed,
            needs_review=self.needs_review,
            text=self.q,
            ids=tuple(self.ids),
        )


@router.get("/conversations", response_model=Page[ConversationSummary], responses=BAD_QUERY, tags=["conversations"])
async def list_conversations(
    who: Viewer,
    store: StoreDep,
    query: Annotated[ConversationQuery, Query()],
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Annotated[Literal["desc", "asc"], Query(description="By end time.")] = "desc",
) -> Any:
    """Conversations matching every filter given, newest first (or oldest first with order=asc)."""
    async with store.read() as conn:
        return _json(await queries.list_conversations(conn, query.filters(), limit=limit, cursor=cursor, order=order))


async def json_body(request: Request) -> None:
    """A write's body must say it is JSON. Another site's page can POST here without a CORS preflight
    only with no Content-Type or a text or form one, and in open mode no token stops it; FastAPI from 0.132
    refuses a body without one too, this does not depend on it. curl -d's form type gets a clear answer."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        raise HTTPException(415, "send the body as JSON, with Content-Type: application/json")


class Operation(BaseModel):
    # an operation sends records: a misspelt field ("dryrun", a filter's "keys") is refused, not ignored,
    # as ignoring it would send for real, or choose every record the other filters leave
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="Only say what would be sent.")
    limit: int = Field(100, ge=1, description="At most this many records (capped by the server's operation_limit).")
    rate: float | None = Field(None, gt=0, le=10_000, description="Records per second (default: the server's).")


class ReextractFilter(ConversationQuery):
    model_config = ConfigDict(extra="forbid")  # see Operation


class Reextract(Operation):
    filter: ReextractFilter = Field(description="Which conversations: the list's filters (ids, agent, ...).")
    redeliver: bool = Field(
        False,
        description="Send again every action whose content changed, under a new id that supersedes the old one; "
        "without it actions already delivered are never repeated.",
    )

    @model_validator(mode="after")
    def _something_chosen(self) -> Reextract:
        if not self.filter.model_dump(exclude_defaults=True):
            raise ValueError("choose conversations: filter needs at least one of ids, agent, since, until, ...")
        return self


OPERATION_RESPONSES: Responses = {
    **BAD_QUERY,
    **NOT_OPERATOR,
    413: _problem("The body is over 4 MiB; refused without being read whole."),
    415: _problem("The body was not sent as JSON (Content-Type: application/json)."),
    503: {
        "model": operations.OperationResult | Problem,
        "description": "Kafka failed or the API is shutting down (the result: `sent` says how far it got), or the "
        "store is unavailable.",
    },
}


@router.post(
    "/conversations/reextract",
    response_model=operations.OperationResult,
    responses=OPERATION_RESPONSES,
    dependencies=[Depends(json_body)],
    tags=["operations"],
)
async def reextract(body: Reextract, who: Operator, store: StoreDep, settings: SettingsDep, stop: StopDep) -> Any:
    """Republish the stored ConversationEnded of the chosen conversations to the conversation-ended topic,
    so they are extracted again with today's configuration, however old they are. Audited.
    503 (with the same body) when Kafka failed, or the API was asked to stop, before every record was sent."""
    return _answer(
        await operations.reextract_conversations(
            store,
            settings.kafka,
            who,
            body.filter.filters(),
            limit=min(body.limit, settings.api.operation_limit),
            rate=body.rate or settings.api.operation_rate,
            dry_run=body.dry_run,
            redeliver=body.redeliver,
            stop=stop,
        )
    )


def _answer(result: operations.OperationResult) -> Any:
    if result.error is None:
        return result
    return JSONResponse(result.model_dump(mode="json"), status_code=503)


class IdConvertor(Convertor[str]):
    """A conversation id in a URL: any text but an empty one, slashes included (the contract takes any id;
    a client sends a slash encoded, %2F). Not `:path`, which takes an empty one too, so that
    /conversations/ would no longer be redirected to the list."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())


@router.get(
    "/conversations/{conversation_id:id}",
    response_model=ConversationDetail,
    responses={404: _problem("No such conversation in the store.")},
    tags=["conversations"],
)
async def get_conversation(
    who: Viewer, store: StoreDep, conversation_id: Annotated[str, Path(max_length=MAX_ID_LENGTH)]
) -> Any:
    """The event, every extraction (values with evidence, confidence and review flag), every decision
    trace, each action with every attempt, and the conversation's dead letters."""
    async with store.read() as conn:
        found = await queries.get_conversation(conn, conversation_id)
    if found is None:
        raise HTTPException(404, f"no conversation {conversation_id!r} in the store")
    return _json(found)


# ── dead letters ───────────────────────────────────────────────────────────────────────────────────


class DeadLetterQuery(BaseModel):
    service: list[Service] = Field(default_factory=list, description="Services whose dead letters (any of).")
    reason: str | None = Field(None, min_length=1, max_length=200, description="Text in the reason or category.")
    since: AwareDatetime | None = Field(None, description="Dead-lettered at or after.")
    until: AwareDatetime | None = Field(None, description="Dead-lettered before.")
    key: str | None = Field(None, max_length=MAX_ID_LENGTH, description="Record key or conversation id.")
    state: Literal["pending", "replayed", "all"] = Field("pending", description="pending: not replayed yet.")
    ids: list[int] = Field(default_factory=list, max_length=1000, description="Dead letter ids (any of).")

    def filters(self) -> queries.DeadLetterFilter:
        return queries.DeadLetterFilter(
            services=tuple(self.service),
            reason=self.reason,
            since=self.since,
            until=self.until,
            key=self.key,
            state=self.state,
            ids=tuple(self.ids),
        )


@router.get("/dead-letters", response_model=Page[DeadLetterSummary], responses=BAD_QUERY, tags=["dead letters"])
async def list_dead_letters(
    who: Viewer, store: StoreDep, query: Annotated[DeadLetterQuery, Query()], limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Dead letters of every service, newest first."""
    async with store.read() as conn:
        return _json(await queries.list_dead_letters(conn, query.filters(), limit=limit, cursor=cursor))


@router.get("/dead-letters/counts", response_model=list[ReasonCount], responses=BAD_QUERY, tags=["dead letters"])
async def dead_letter_counts(
    who: Viewer, store: StoreDep, query: Annotated[DeadLetterQuery, Query()]
) -> list[ReasonCount]:
    """How many dead letters per service, category and reason (the 100 largest groups)."""
    async with store.read() as conn:
        return await queries.dead_letter_counts(conn, query.filters())


@router.get(
    "/dead-letters/{letter_id}",
    response_model=DeadLetterDetail,
    responses={404: _problem("No such dead letter.")},
    tags=["dead letters"],
)
async def get_dead_letter(who: Viewer, store: StoreDep, letter_id: int) -> DeadLetterDetail:
    async with store.read() as conn:
        found = await queries.get_dead_letter(conn, letter_id)
    if found is None:
        raise HTTPException(404, f"no dead letter {letter_id}")
    return found


class ReplayFilter(DeadLetterQuery):
    model_config = ConfigDict(extra="forbid")  # see Operation


class Replay(Operation):
    filter: ReplayFilter = Field(description="Which dead letters: the list's filters (ids, service, reason, ...).")


@router.post(
    "/dead-letters/replay",
    response_model=operations.OperationResult,
    responses=OPERATION_RESPONSES,
    dependencies=[Depends(json_body)],
    tags=["operations"],
)
async def replay(body: Replay, who: Operator, store: StoreDep, settings: SettingsDep, stop: StopDep) -> Any:
    """Send the chosen dead letters back to their original topic with their key, value and headers
    (hop headers removed, x-replay-* added), rate-limited; they are then listed as replayed. Audited.
    Each letter is claimed before it is sent: one that another replay is sending is left alone and
    counted in `skipped`, so two replays at once send it once. 503 (with the same body) when Kafka
    failed, or the API was asked to stop, before every record was sent; the unsent letters are pending again
    at once."""
    return _answer(
        await operations.replay_dead_letters(
            store,
            settings.kafka,
            who,
            body.filter.filters(),
            limit=min(body.limit, settings.api.operation_limit),
            rate=body.rate or settings.api.operation_rate,
            dry_run=body.dry_run,
            lease=settings.api.replay_lease,
            stop=stop,
        )
    )


# ── statistics and audit ───────────────────────────────────────────────────────────────────────────


@router.get(
    "/stats",
    response_model=list[DayStats],
    responses={400: _problem("since is not before until, or a time the store cannot hold.")},
    tags=["stats"],
)
async def stats(
    who: Viewer,
    store: StoreDep,
    since: Since = None,
    until: Until = None,
    agent: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
) -> list[DayStats]:
    """Per agent and UTC day the conversations ended (default: the last 30 days)."""
    end = queries.storable("until", until) if until is not None else datetime.now(UTC)
    start = queries.storable("since", since) if since is not None else end - min(timedelta(days=30), end - EPOCH_MIN)
    if start >= end:
        raise HTTPException(400, "since must be before until")
    async with store.read() as conn:
        return await queries.stats(conn, start, end, agent)


@router.get("/audit", response_model=Page[AuditView], responses=BAD_QUERY | NOT_OPERATOR, tags=["audit"])
async def audit(who: Operator, store: StoreDep, limit: Limit = 50, cursor: Cursor = None) -> Page[AuditView]:
    """Operator actions, newest first: who, when, what was chosen, what happened."""
    before = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit() or int(cursor) >= queries.INT64:
            raise HTTPException(400, "malformed cursor: pass next_cursor from the previous page unchanged")
        before = int(cursor)
    async with store.read() as conn:
        return await tokens.list_audit(conn, limit, before)
