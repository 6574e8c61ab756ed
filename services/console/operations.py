"""Operator actions from the console: redrive dead letters (one, or all matching a filter, with a dry-run
count and a rate), re-extract a call, redeliver a call's failed actions. Each is the query API's own
audited operation (services/api/operations.py): the same records reach Kafka, the same audit row is
written, with the console user as the actor. Every POST needs the operator role and the CSRF token."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import Response

from schemas.events import MAX_ID_LENGTH
from services.api import operations
from services.api.settings import ApiSettings
from services.console.access import PATH, Csrf, Operator
from services.console.letters import LetterForm
from services.console.render import fragment
from services.store.db import Store
from services.store.queries import ConversationFilter, DeadLetterFilter

router = APIRouter(prefix=f"{PATH}/operations", include_in_schema=False, dependencies=[Csrf])
MAX_RATE = 10_000.0
LETTERS_CHANGED = "dead-letters-changed"  # an htmx event: a redrive changed what the dead letters page shows


def _deps(request: Request) -> tuple[Store, ApiSettings]:
    return request.app.state.store, request.app.state.settings


def _stopping(request: Request) -> asyncio.Event:
    """Set when the server is asked to exit: an operation stops sending between two records."""
    found: asyncio.Event = request.app.state.stopping
    return found


@router.post("/redrive")
async def redrive(
    request: Request,
    who: Operator,
    rate: Annotated[float | None, Form(gt=0, le=MAX_RATE)] = None,
    limit: Annotated[int | None, Form(ge=1)] = None,
    dry_run: Annotated[str, Form()] = "0",
    id: Annotated[int | None, Form()] = None,
    seen: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    """`id`: the one letter of its page, in any state (a redriven one may be redriven again on purpose), if it
    is still as the page showed it (`seen`: its redrive time then, or "pending"): a second click, or a
    second tab or operator on a page drawn before a redrive, sends nothing."""
    store, settings = _deps(request)
    form = LetterForm.read(await request.form())
    if form.errors:
        raise HTTPException(400, "; ".join(form.errors))
    filters = DeadLetterFilter(ids=[id], state="all") if id is not None else form.filters
    as_seen = {id: _seen(seen)} if id is not None and seen is not None else None
    cap = settings.api.operation_limit
    result = await operations.replay_dead_letters(
        store,
        settings.kafka,
        who.principal,
        filters,
        limit=min(limit or cap, cap),
        rate=rate or settings.console.redrive_rate,
        dry_run=dry_run == "1",
        lease=settings.api.replay_lease,
        as_seen=as_seen,
        stop=_stopping(request),
    )
    context = {"result": result, "what": "dead letter(s)", "verb": "redriven to their original topics", "rate": rate}
    answer = fragment(request, "operation_result.html", context, status_code=503 if result.error else 200)
    if not result.dry_run:  # the page's counts and list (its letters' state) are drawn again: see dead_letters.html
        answer.headers["HX-Trigger"] = LETTERS_CHANGED
    return answer


def _seen(value: str, never: str = "pending") -> datetime | None:
    """What the page showed: a time, or `never` (not redriven, not re-extracted)."""
    if value == never:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"seen: {value!r} is neither {never!r} nor a time (ISO 8601)") from None
    if parsed.tzinfo is None:
        raise HTTPException(400, f"seen: {value!r} has no UTC offset")
    return parsed


@router.post("/reextract")
async def reextract(
    request: Request,
    who: Operator,
    conversation_id: Annotated[str, Form(max_length=MAX_ID_LENGTH)],
    seen: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    """The call, if it is still as the page showed it (`seen`: when it was last re-extracted then, or
    "never"): a second click once the first re-extraction was sent, or a second tab, sends nothing (each
    re-extraction is an LLM call)."""
    store, settings = _deps(request)
    as_seen = {conversation_id: _seen(seen, "never")} if seen is not None else None
    result = await operations.reextract_conversations(
        store,
        settings.kafka,
        who.principal,
        ConversationFilter(ids=[conversation_id]),
        limit=1,
        rate=settings.api.operation_rate,
        dry_run=False,
        stop=_stopping(request),
        as_seen=as_seen,
    )
    if not result.matched:
        raise HTTPException(404, f"the event of {conversation_id!r} is not in the store: nothing to re-extract")
    context = {
        "result": result,
        "what": "conversation(s)",
        "verb": "sent for extraction again",
        "rate": None,
        "left_alone": "sent for extraction again since this page was shown (reload it to re-extract once more)",
    }
    return fragment(request, "operation_result.html", context, status_code=503 if result.error else 200)


@router.post("/redeliver")
async def redeliver(
    request: Request, who: Operator, conversation_id: Annotated[str, Form(max_length=MAX_ID_LENGTH)]
) -> Response:
    """The call's dispatcher dead letters (actions that used up their retries or were refused) back to
    their action topics; a delivered action is never sent twice (the dispatcher's ledger skips it)."""
    store, settings = _deps(request)
    result = await operations.replay_dead_letters(
        store,
        settings.kafka,
        who.principal,
        DeadLetterFilter(services=["dispatcher"], key=conversation_id),
        limit=settings.api.operation_limit,
        rate=settings.console.redrive_rate,
        dry_run=False,
        lease=settings.api.replay_lease,
        stop=_stopping(request),
    )
    context = {"result": result, "what": "failed action(s)", "verb": "sent to the dispatcher again", "rate": None}
    if not result.matched:
        context["note"] = (
            "Nothing to redeliver: no action of this call is in the dispatcher's dead-letter topic "
            "(a failed action still in its retry tiers is retried on its own)."
        )
    return fragment(request, "operation_result.html", context, status_code=503 if result.error else 200)
