"""Tasks and team alerts (seed 001's "Create Task" and "Team Alert"): the store keeps every task and alert
the router asked for (services/store/rows.py `requested`); here people see them.

* Tasks: an inbox, open ones first by default, filtered by priority and assignee (or "mine"); each links
  to its call. An operator marks a task done or assigns it; both are audited. The changed row replaces
  the row; a refusal (done or taken by another operator, gone, a lapsed session) is shown beside the
  row's buttons.
* Alerts: a feed, newest first, for everyone or only the alerts that name me (the login's token name).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, or_, select, update

from services.console.access import PATH, Csrf, Operator, Viewer
from services.console.render import fragment, page
from services.store import tokens
from services.store.db import Store
from services.store.models import Task, TeamAlert, table
from services.store.queries import QueryError, decode_cursor, encode_cursor
from services.store.rows import clean

router = APIRouter(prefix=PATH, include_in_schema=False)
PRIORITIES = ("Urgent", "High", "Medium", "Low")
STATES = ("open", "done", "all")


def _store(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


def _cursor(cursor: str) -> tuple[datetime, str]:
    """The page's cursor; a malformed one is the console's 400 page (the API's handler answers JSON)."""
    try:
        at, key = decode_cursor(cursor, str)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    return at, key


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@router.get("/tasks")
async def tasks(
    request: Request,
    who: Viewer,
    state: str = "open",
    priority: str = "",
    assignee: str = "",
    cursor: str | None = None,
) -> Response:
    if state not in STATES:
        raise HTTPException(400, f"unknown state {state!r} ({', '.join(STATES)})")
    if priority and priority not in PRIORITIES:
        raise HTTPException(400, f"unknown priority {priority!r} ({', '.join(PRIORITIES)})")
    t = table(Task).c
    limit = request.app.state.settings.console.page_size
    query = select(table(Task))
    if state == "open":
        query = query.where(t.done_at.is_(None))
    elif state == "done":
        query = query.where(t.done_at.is_not(None))
    if priority in PRIORITIES:
        query = query.where(t.priority == priority)
    chosen = who.principal.name if assignee == "me" else clean(assignee.strip()[:200])
    if assignee == "none":
        query = query.where(t.assignee.is_(None))
    elif chosen:
        query = query.where(t.assignee == chosen)
    if cursor:
        at, key = _cursor(cursor)
        query = query.where(or_(t.requested_at < at, (t.requested_at == at) & (t.action_id < key)))
    async with _store(request).read() as conn:
        rows = (await conn.execute(query.order_by(t.requested_at.desc(), t.action_id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    context = {
        "tasks": rows,
        "values": {"state": state, "priority": priority, "assignee": assignee},
        "priorities": PRIORITIES,
        "next_cursor": encode_cursor(rows[-1].requested_at, rows[-1].action_id) if more else None,
        "can_operate": who.can("operator"),
    }
    return page(request, "tasks.html", context)


@router.post("/tasks/done", dependencies=[Csrf])
async def mark_done(request: Request, who: Operator, action_id: Annotated[str, Form(max_length=300)]) -> Response:
    t = table(Task).c
    values = {"done_at": datetime.now(UTC), "done_by": who.principal.name}
    return await _change(request, who.principal, action_id, "task_done", values, (t.done_at.is_(None), _done_by))


@router.post("/tasks/assign", dependencies=[Csrf])
async def assign(
    request: Request,
    who: Operator,
    action_id: Annotated[str, Form(max_length=300)],
    assignee: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    name = who.principal.name if assignee.strip() == "me" else assignee.strip() or None
    still = table(Task).c.assignee.is_(None)  # the button is offered on unassigned tasks only
    return await _change(request, who.principal, action_id, "task_assign", {"assignee": name}, (still, _assignee))


def _done_by(task: Any) -> str:
    return f"task {task.action_id!r} is already done by {task.done_by}"


def _assignee(task: Any) -> str:
    return f"task {task.action_id!r} is already assigned to {task.assignee}"


Unchanged = tuple[ColumnElement[bool], Callable[[Any], str]]


async def _change(
    request: Request, who: Any, action_id: str, action: str, values: dict[str, Any], unchanged: Unchanged
) -> Response:
    """Change the task if it is still as the page showed it (`unchanged`: that condition, and what to say
    otherwise): the click of a page drawn before another operator's never replaces who did it or owns it."""
    t = table(Task).c
    still, conflict = unchanged
    action_id, values = clean(action_id), {k: clean(v) for k, v in values.items()}  # NUL-free, as stored
    async with _store(request).write() as conn:
        changed = await conn.execute(update(table(Task)).where(t.action_id == action_id, still).values(**values))
        if not changed.rowcount:
            task = (await conn.execute(select(table(Task)).where(t.action_id == action_id))).first()
            raise HTTPException(404, f"no task {action_id!r}") if task is None else HTTPException(409, conflict(task))
        await tokens.audit(conn, who, action, {"action_id": action_id}, {k: str(v) for k, v in values.items()})
        row = (await conn.execute(select(table(Task)).where(t.action_id == action_id))).one()
    answer = fragment(request, "task_row.html", {"task": row, "can_operate": True})
    # the buttons aim at the row's error slot, so that a refusal (the error fragment) is shown beside the
    # row instead of replacing it; the changed row replaces the whole row
    answer.headers.update({"HX-Retarget": "closest tr", "HX-Reswap": "outerHTML"})
    return answer


@router.get("/alerts")
async def alerts(request: Request, who: Viewer, mine: str = "", cursor: str | None = None) -> Response:
    a = table(TeamAlert).c
    limit = request.app.state.settings.console.page_size
    query = select(table(TeamAlert))
    if mine:
        name = orjson.dumps(who.principal.name).decode()  # as it appears inside the JSON list
        query = query.where(or_(a.everyone.is_(True), a.teammates.like(_like(name), escape="\\")))
    if cursor:
        at, key = _cursor(cursor)
        query = query.where(or_(a.requested_at < at, (a.requested_at == at) & (a.action_id < key)))
    async with _store(request).read() as conn:
        rows = (await conn.execute(query.order_by(a.requested_at.desc(), a.action_id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [(r, orjson.loads(r.teammates)) for r in rows]
    context = {
        "alerts": items,
        "mine": bool(mine),
        "next_cursor": encode_cursor(rows[-1].requested_at, rows[-1].action_id) if more else None,
    }
    return page(request, "alerts.html", context)
