"""Dead letters: grouped by service and reason, listed with filters, one record in full (key, headers,
value). Redriving them is an operator action (services/console/operations.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from schemas.events import MAX_ID_LENGTH
from schemas.routes import SERVICES
from services.cli.dlq import PRIVATE_REPLAY_TOPICS, DeadLetter, replay_target
from services.console.access import PATH, Viewer
from services.console.pages import ConversationForm
from services.console.render import page
from services.store import queries
from services.store.db import Store
from services.store.queries import DeadLetterFilter, LetterState, QueryError

router = APIRouter(prefix=PATH, include_in_schema=False)


@dataclass
class LetterForm:
    values: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # a time zone the server does not know: among `errors` too
    filters: DeadLetterFilter = field(default_factory=DeadLetterFilter)

    @classmethod
    def read(cls, params: Mapping[str, Any]) -> LetterForm:
        keys = ("service", "reason", "key", "state", "since", "until", "tz")
        form = cls({k: str(params.get(k) or "").strip()[:MAX_ID_LENGTH] for k in keys})  # an id whole
        service, state = form.values["service"], form.values["state"] or "pending"
        if service and service not in SERVICES:
            form.errors.append(f"unknown service {service!r} (known: {', '.join(SERVICES)})")
        if state not in get_args(LetterState):
            form.errors.append(f"unknown state {state!r}")
            state = "pending"
        days = ConversationForm({"since": form.values["since"], "until": form.values["until"], "tz": form.values["tz"]})
        zone = days._zone()
        since, until = days._day("since", zone), days._day("until", zone, next_day=True)
        form.notes = days.notes
        form.errors += days.errors + days.notes  # a redrive's dates must be read as the operator meant them
        form.filters = DeadLetterFilter(
            services=[service] if service in SERVICES else [],
            reason=form.values["reason"] or None,
            key=form.values["key"] or None,
            state=state,  # type: ignore[arg-type]
            since=since,
            until=until,
        )
        return form

    def query(self, **extra: str) -> str:
        return urlencode([(k, v) for k, v in {**self.values, **extra}.items() if v])

    @property
    def unreadable(self) -> list[str]:
        """What the list cannot be filtered by (an unknown service or state, a date it cannot read): the page
        is a 400. An unknown time zone is a note there (the dates read as UTC), as on the conversations page;
        a redrive refuses it with the rest."""
        return [e for e in self.errors if e not in self.notes]

    @property
    def chosen(self) -> bool:
        """Something narrower than every pending letter (a redrive of all needs a filter on purpose)."""
        return any(self.values[k] for k in ("service", "reason", "key", "since", "until"))


def _store(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


@router.get("/dead-letters")
async def dead_letters(request: Request, who: Viewer, cursor: str | None = None) -> Response:
    form = LetterForm.read(request.query_params)
    settings = request.app.state.settings
    if form.unreadable:  # the letters without that filter are not what was asked for: the form, no list
        context = {"form": form, "unreadable": True, "services": SERVICES, "cursor": None}
        return page(request, "dead_letters.html", context, status_code=400)
    try:
        async with _store(request).read() as conn:
            # a GROUP BY over every matching letter: on the first page only, not again for each older page
            counts = None if cursor else await queries.dead_letter_counts(conn, form.filters)
            found = await queries.list_dead_letters(conn, form.filters, limit=settings.console.page_size, cursor=cursor)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    context = {
        "form": form,
        "unreadable": False,
        "counts": counts,
        "page": found,
        "cursor": cursor,
        "services": SERVICES,
        "can_operate": who.can("operator"),
        "rate": settings.console.redrive_rate,
        "limit": settings.api.operation_limit,
    }
    return page(request, "dead_letters.html", context)


@router.get("/dead-letters/{letter_id}")
async def dead_letter(request: Request, who: Viewer, letter_id: int) -> Response:
    async with _store(request).read() as conn:
        found = await queries.get_dead_letter(conn, letter_id)
    if found is None:
        raise HTTPException(404, f"no dead letter {letter_id} in the store")
    target = _target(found.coordinates, found.headers)
    context = {
        "l": found,
        "can_operate": who.can("operator"),
        "rate": request.app.state.settings.console.redrive_rate,
        "target": target,
        # a redrive sends it to its service alone (the recorder's private replay topic), not its original topic
        "alone": target in PRIVATE_REPLAY_TOPICS,
    }
    return page(request, "dead_letter.html", context)


def _target(coordinates: str, headers: dict[str, str]) -> str | None:
    """Where a redrive sends the letter (what `postcall dlq replay` and the API's replay choose), or None: it
    names no original topic, or one its service does not read (a redrive of it matches nothing)."""
    topic, partition, offset = coordinates.rsplit(":", 2)
    return replay_target(DeadLetter(topic, int(partition), int(offset), 0, None, None, headers))
