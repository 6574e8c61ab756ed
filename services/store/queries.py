"""Reading the store: conversations (filters, keyset pagination by end time, or by arrival in the store for
the console's new calls), one conversation in full, dead letters (filters, counts by reason), statistics per
agent and day.

A dead letter's headers are shown with the value of every credential-like header (`shown_headers`)
replaced by [redacted]: a record from an outside producer may carry its HTTP request's Authorization or
Cookie. The store keeps them as they were, and a replay (`dead_letter_records`) sends them so.

Pagination is by keyset, never OFFSET: a cursor holds the (time, id) of the last row returned, so a
page costs the same at row 10 and at row 1,000,000, and rows arriving meanwhile shift nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import orjson
from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import ConversationEnded, DecisionTrace, Extraction
from services.store.models import Action, Attempt, Conversation, DeadLetter, Decision, ScheduledRetry, table
from services.store.models import Extraction as ExtractionRow
from services.store.rows import clean, deferral
from services.store.views import (
    ActionCounts,
    ActionView,
    AgentRef,
    AttemptView,
    ConversationDetail,
    ConversationSummary,
    CustomerRef,
    DayStats,
    DeadLetterDetail,
    DeadLetterSummary,
    ExtractionView,
    Page,
    ReasonCount,
    UsageView,
)

MAX_LIMIT = 500
INT64 = 2**63  # an id column (BIGINT) holds -INT64 <= n < INT64
Order = Literal["desc", "asc"]
#: names of headers whose value is (or may be) a credential: Authorization, Cookie, X-Api-Key, X-Auth-Token,
#: Ocp-Apim-Subscription-Key, X-Hub-Signature, ...; and a value that is an HTTP credential under any name
_SECRET_HEADER = re.compile(r"auth|cookie|token|secret|passw|credential|session|signature|key", re.I)
_SECRET_VALUE = re.compile(r"\s*(?:bearer|basic|negotiate)\s+\S+\s*", re.I)


class QueryError(ValueError):
    """Raised when a query's input cannot be used (a malformed cursor); the API answers 400 with it."""


def storable(name: str, value: Any) -> Any:
    """`value` as a query parameter (NUL-free text, UTC times), or a QueryError naming a number or a time no
    column holds: an id past 64 bits, a time before year 1 or after 9999 once in UTC."""
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        raise QueryError(f"{name}: {value} is out of range")
    try:
        return clean(value)
    except OverflowError:
        raise QueryError(f"{name}: {value} is out of range") from None


# ── cursors ────────────────────────────────────────────────────────────────────────────────────────


def encode_cursor(at: datetime, key: str | int) -> str:
    raw = orjson.dumps([at.astimezone(UTC).isoformat(), key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type[str] | type[int]) -> tuple[datetime, Any]:
    try:
        at, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parsed = datetime.fromisoformat(at)
        if not isinstance(key, key_type) or isinstance(key, bool) or parsed.tzinfo is None:  # bool: an int
            raise ValueError
        storable("cursor", parsed)
        storable("cursor", key)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise QueryError("malformed cursor: pass next_cursor from the previous page unchanged") from None
    return parsed, key


def _after(at_col: Any, key_col: Any, cursor: tuple[datetime, Any], order: Order) -> ColumnElement[bool]:
    at, key = cursor
    if order == "desc":
        return and_(at_col <= at, or_(at_col < at, key_col < key))
    return and_(at_col >= at, or_(at_col > at, key_col > key))


F = TypeVar("F", "ConversationFilter", "DeadLetterFilter")


def _cleaned(filters: F) -> F:
    """NUL-free text (PostgreSQL refuses it in a parameter; nothing stored contains one); a QueryError for a
    number or time out of range (SQLite raises OverflowError on it, PostgreSQL a DataError)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(filters):
        value = getattr(filters, f.name)
        if isinstance(value, tuple | list):
            changes[f.name] = tuple(storable(f.name, v) for v in value)
        else:
            changes[f.name] = storable(f.name, value)
    return dataclasses.replace(filters, **changes)


def _limit(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ── conversations ──────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ConversationFilter:
    agent: str | None = None
    agent_version: str | None = None
    end_reasons: Sequence[str] = ()
    since: datetime | None = None  # ended at or after
    until: datetime | None = None  # ended before
    extraction_status: Literal["ok", "failed", "none"] | None = None
    failed: bool | None = None  # an action failed or was dead-lettered, or a record was dead-lettered
    needs_review: bool | None = None
    text: str | None = None  # in the summary or the customer's name, number or email
    ids: Sequence[str] = ()

    def where(self) -> list[ColumnElement[bool]]:
        f = _cleaned(self)
        c = table(Conversation).c
        out: list[ColumnElement[bool]] = []
        if f.ids:
            out.append(c.conversation_id.in_(list(f.ids)))
        if f.agent is not None:
            out.append(c.agent_id == f.agent)
        if f.agent_version is not None:
            out.append(c.agent_version == f.agent_version)
        if f.end_reasons:
            out.append(c.end_reason.in_(list(f.end_reasons)))
        if f.since is not None:
            out.append(c.ended_at >= f.since)
        if f.until is not None:
            out.append(c.ended_at < f.until)
        if f.extraction_status == "none":
            out.append(c.extraction_status.is_(None))
        elif f.extraction_status is not None:
            out.append(c.extraction_status == f.extraction_status)
        if f.failed is not None:
            out.append(c.has_failure == (true() if f.failed else false()))
        if f.needs_review is not None:
            out.append(c.needs_review == (true() if f.needs_review else false()))
        if f.text:  # lower-cased by the database on both sides (on SQLite by str.lower: services/store/db.py)
            out.append(c.search_text.like(func.lower(_like(f.text)), escape="\\"))
        return out


async def list_conversations(
    conn: AsyncConnection,
    filters: ConversationFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    order: Order = "desc",
) -> Page[ConversationSummary]:
    c = table(Conversation).c
    limit = _limit(limit)
    query = select(*_summary_columns()).where(*filters.where())
    if cursor:
        query = query.where(_after(c.ended_at, c.conversation_id, decode_cursor(cursor, str), order))
    by = (c.ended_at.desc(), c.conversation_id.desc()) if order == "desc" else (c.ended_at, c.conversation_id)
    rows = (await conn.execute(query.order_by(*by).limit(limit + 1))).all()
    items = [summary_of(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor(items[-1].ended_at, items[-1].conversation_id) if more else None)


async def newest_stored(conn: AsyncConnection) -> str | None:
    """A cursor at the conversation stored last (whatever it matches), for `stored_since`; None: none yet."""
    c = table(Conversation).c
    query = select(c.stored_at, c.conversation_id).order_by(c.stored_at.desc(), c.conversation_id.desc()).limit(1)
    return _stored_cursor((await conn.execute(query)).all(), None)


async def stored_since(
    conn: AsyncConnection, filters: ConversationFilter, *, after: str | None, overlap: timedelta, limit: int = 50
) -> tuple[list[ConversationSummary], str | None]:
    """Conversations by arrival in the store, not by end time (a call may reach the store long after it
    ended): those stored after the cursor `after` (oldest first), and the cursor to ask with next.

    Writers commit out of order: a row stored at T1 may become visible after a reader has seen one stored at
    T2 > T1. So the rows stored within `overlap` before the cursor are returned again (the `limit` nearest
    it), ahead of the new ones: a caller that has already seen one must ignore it (the console's page does,
    by the row's element id). Without `after`: the `limit` stored last."""
    c = table(Conversation).c
    limit = _limit(limit)
    query = select(*_summary_columns(), c.stored_at).where(*filters.where())
    newest_first = (c.stored_at.desc(), c.conversation_id.desc())
    if not after:
        last = list(reversed((await conn.execute(query.order_by(*newest_first).limit(limit))).all()))
        return [summary_of(r) for r in last], _stored_cursor(last, None)
    cursor = decode_cursor(after, str)
    try:
        since = cursor[0] - overlap
    except OverflowError:  # a cursor in year 1
        since = datetime.min.replace(tzinfo=UTC)
    again = query.where(c.stored_at > since, _after(c.stored_at, c.conversation_id, cursor, "desc"))
    seen = (await conn.execute(again.order_by(*newest_first).limit(limit))).all()
    fresh = query.where(_after(c.stored_at, c.conversation_id, cursor, "asc"))
    new = (await conn.execute(fresh.order_by(c.stored_at, c.conversation_id).limit(limit))).all()
    return [summary_of(r) for r in [*reversed(seen), *new]], _stored_cursor(new, after)


def _stored_cursor(rows: Sequence[Any], default: str | None) -> str | None:
    return encode_cursor(rows[-1].stored_at, rows[-1].conversation_id) if rows else default


def _summary_columns() -> list[Any]:
    c = table(Conversation).c
    # the event and the re-extraction mark are the detail's (get_conversation)
    hidden = {"event", "search_text", "occurred_at", "received_at", "stored_at", "ended_day"}
    hidden |= {"reextracted_at", "reextracted_by"}
    return [col for col in c if col.name not in hidden]


def summary_of(r: Any) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=r.conversation_id,
        event_id=r.event_id,
        account_id=r.account_id,
        agent=AgentRef(id=r.agent_id, name=r.agent_name, version=r.agent_version),
        channel=r.channel,
        direction=r.direction,
        status=r.status,
        started_at=r.started_at,
        ended_at=r.ended_at,
        duration_seconds=r.duration_seconds,
        end_reason=r.end_reason,
        end_reason_raw=r.end_reason_raw,
        source_platform=r.source_platform,
        customer=CustomerRef(name=r.customer_name, phone_number=r.customer_phone, email=r.customer_email),
        extraction_status=r.extraction_status,
        summary=r.summary,
        needs_review=bool(r.needs_review),
        flows_fired=r.flows_fired,
        actions=ActionCounts(
            total=r.actions_total,
            delivered=r.actions_delivered,
            failed=r.actions_failed,
            dead_lettered=r.actions_dead_lettered,
        ),
        dead_letters=r.dead_letters,
        has_failure=bool(r.has_failure),
        usage=UsageView(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, cost_usd=r.cost_usd),
    )


async def get_conversation(conn: AsyncConnection, conversation_id: str) -> ConversationDetail | None:
    """Everything known about one conversation; None when nothing at all is."""
    c = table(Conversation).c
    conversation_id = clean(conversation_id)
    columns = (*_summary_columns(), c.event, c.reextracted_at, c.reextracted_by)
    row = (await conn.execute(select(*columns).where(c.conversation_id == conversation_id))).first()
    extractions = await _extractions(conn, conversation_id)
    decisions = await _decisions(conn, conversation_id)
    actions = await _actions(conn, conversation_id)
    letters = await _letters(conn, select(*_letter_columns()).where(DeadLetter.conversation_id == conversation_id))
    if row is None and not (extractions or decisions or actions or letters):
        return None
    return ConversationDetail(
        conversation_id=conversation_id,
        summary=summary_of(row) if row is not None else None,
        event=ConversationEnded.model_validate_json(row.event) if row is not None else None,
        extractions=extractions,
        decisions=decisions,
        actions=actions,
        dead_letters=letters,
        reextracted_at=row.reextracted_at if row is not None else None,
        reextracted_by=row.reextracted_by if row is not None else None,
    )


async def _extractions(conn: AsyncConnection, conversation_id: str) -> list[ExtractionView]:
    x = table(ExtractionRow).c
    query = select(*x).where(x.conversation_id == conversation_id).order_by(x.extracted_at, x.id)
    out = []
    for r in await conn.execute(query):
        payload = Extraction.model_validate_json(r.payload)
        out.append(
            ExtractionView(
                event_id=r.event_id,
                extracted_at=r.extracted_at,
                status=r.status,
                reason=r.reason,
                provider=r.provider,
                model=r.model,
                config_revision=r.config_revision,
                summary=r.summary,
                needs_review=r.needs_review,
                truncated=r.truncated,
                usage=UsageView(
                    prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, cost_usd=r.cost_usd
                ),
                latency_ms=r.latency_ms,
                reextract_of=r.reextract_of,
                fields=payload.fields,
                dynamic=payload.dynamic,
                triggers=payload.triggers,
                recipients=payload.recipients,
            )
        )
    return out


async def _decisions(conn: AsyncConnection, conversation_id: str) -> list[DecisionTrace]:
    d = table(Decision).c
    query = select(d.payload).where(d.conversation_id == conversation_id).order_by(d.decided_at, d.id)
    return [DecisionTrace.model_validate_json(p) for (p,) in await conn.execute(query)]


def _next_retry(due: dict[tuple[str, int], datetime], row: Any, deferred: bool) -> datetime | None:
    """When a failed attempt's retry is due. A deferral (`Deferred:`: not attempted, a rate limit or waiting room
    was full) comes back under its own attempt number, not the next: looking for the next showed none. Read off
    the error, not the `deferred` column: a recorder of the version before 0014 (a rolling upgrade) stores its
    deferrals with the column's default, false."""
    if row.outcome != "failed":
        return None
    return due.get((row.action_id, row.attempt if deferred else row.attempt + 1))


async def _actions(conn: AsyncConnection, conversation_id: str) -> list[ActionView]:
    a, t, r = (table(m).c for m in (Action, Attempt, ScheduledRetry))
    due = {
        (row.action_id, row.attempt): row.due_at
        for row in await conn.execute(
            select(r.action_id, r.attempt, r.due_at).where(r.conversation_id == conversation_id)
        )
    }
    attempts: dict[str, list[AttemptView]] = {}
    query = select(*t).where(t.conversation_id == conversation_id).order_by(t.attempt, t.completed_at, t.id)
    for row in await conn.execute(query):
        deferred = deferral(row.outcome, row.error)  # off the error: a pre-0014 recorder's row has the default
        attempts.setdefault(row.action_id, []).append(
            AttemptView(
                attempt=row.attempt,
                outcome=row.outcome,
                at=row.completed_at,
                destination=row.destination,
                status_code=row.status_code,
                latency_ms=row.latency_ms,
                error=row.error,
                response_excerpt=row.response_excerpt,
                result_id=row.result_id,
                next_retry_at=_next_retry(due, row, deferred),
                deferred=deferred,
            )
        )
    actions = select(*a).where(a.conversation_id == conversation_id).order_by(a.first_seen_at, a.action_id)
    return [
        ActionView(
            action_id=row.action_id,
            type=row.type,
            flow_id=row.flow_id,
            destination=row.destination,
            topic=row.topic,
            final_outcome=row.final_outcome,
            attempts=attempts.get(row.action_id, []),
        )
        for row in await conn.execute(actions)
    ]


# ── dead letters ───────────────────────────────────────────────────────────────────────────────────

LetterState = Literal["pending", "replayed", "all"]


@dataclass(frozen=True)
class DeadLetterFilter:
    services: Sequence[str] = ()
    reason: str | None = None  # substring of the reason or the category, any case
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None  # the record key (a conversation id) or the conversation id found in the value
    state: LetterState = "pending"
    ids: Sequence[int] = ()

    def where(self) -> list[ColumnElement[bool]]:
        f = _cleaned(self)
        d = table(DeadLetter).c
        out: list[ColumnElement[bool]] = []
        if f.ids:
            out.append(d.id.in_(list(f.ids)))
        if f.services:
            out.append(d.service.in_(list(f.services)))
        if f.reason:
            pattern = func.lower(_like(f.reason))
            out.append(
                or_(
                    func.lower(d.reason).like(pattern, escape="\\"),
                    func.lower(func.coalesce(d.category, "")).like(pattern, escape="\\"),
                )
            )
        if f.since is not None:
            out.append(d.dead_lettered_at >= f.since)
        if f.until is not None:
            out.append(d.dead_lettered_at < f.until)
        if f.key is not None:
            out.append(or_(d.key == f.key, d.conversation_id == f.key))
        if f.state == "pending":
            out.append(d.replayed_at.is_(None))
        elif f.state == "replayed":
            out.append(d.replayed_at.is_not(None))
        return out


def _letter_columns() -> list[Any]:
    """What a listed letter shows: not its bytes, nor a replay's claim on it (services/store/claims.py)."""
    hidden = ("headers", "value", "replay_claimed_until", "replay_claim")
    return [c for c in table(DeadLetter).c if c.name not in hidden]


async def _letters(conn: AsyncConnection, query: Select[Any]) -> list[DeadLetterSummary]:
    return [DeadLetterSummary(**_letter_fields(r)) for r in await conn.execute(query)]


def _letter_fields(r: Any) -> dict[str, Any]:
    fields = {c.name: getattr(r, c.name) for c in _letter_columns() if not c.name.startswith("kafka_")}
    fields["coordinates"] = f"{r.kafka_topic}:{r.kafka_partition}:{r.kafka_offset}"
    return fields


def dead_letters_query(filters: DeadLetterFilter, limit: int, cursor: str | None = None) -> Select[Any]:
    """One page of letters, newest first, and one more (is there a next page?)."""
    d = table(DeadLetter).c
    query = select(*_letter_columns()).where(*filters.where())
    if cursor:
        query = query.where(_after(d.dead_lettered_at, d.id, decode_cursor(cursor, int), "desc"))
    return query.order_by(d.dead_lettered_at.desc(), d.id.desc()).limit(limit + 1)


async def list_dead_letters(
    conn: AsyncConnection, filters: DeadLetterFilter, *, limit: int = 50, cursor: str | None = None
) -> Page[DeadLetterSummary]:
    limit = _limit(limit)
    items = await _letters(conn, dead_letters_query(filters, limit, cursor))
    more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_cursor=encode_cursor(items[-1].dead_lettered_at, items[-1].id) if more else None)


async def dead_letter_counts(conn: AsyncConnection, filters: DeadLetterFilter, top: int = 100) -> list[ReasonCount]:
    d = table(DeadLetter).c
    n = func.count().label("n")
    query = (
        select(d.service, d.category, d.reason, n, func.min(d.dead_lettered_at), func.max(d.dead_lettered_at))
        .where(*filters.where())
        .group_by(d.service, d.category, d.reason)
        .order_by(n.desc(), d.service, d.reason)
        .limit(top)
    )
    return [
        ReasonCount(service=r[0], category=r[1], reason=r[2], count=r[3], first_at=_aware(r[4]), last_at=_aware(r[5]))
        for r in await conn.execute(query)
    ]


def _aware(value: Any) -> datetime:
    """min()/max() lose the column type on SQLite (a string comes back)."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(parsed, datetime)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def get_dead_letter(conn: AsyncConnection, letter_id: int) -> DeadLetterDetail | None:
    if not -INT64 <= letter_id < INT64:
        return None
    row = (await conn.execute(select(table(DeadLetter)).where(DeadLetter.id == letter_id))).first()
    if row is None:
        return None
    headers = shown_headers(orjson.loads(row.headers))
    return DeadLetterDetail(**_letter_fields(row), headers=headers, **_value_fields(row.value))


def shown_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers as the API and the console show them: credential-like values as [redacted]."""
    return {
        name: "[redacted]" if _SECRET_HEADER.search(name) or _SECRET_VALUE.fullmatch(value) else value
        for name, value in headers.items()
    }


def _value_fields(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode()}
    try:
        return {"value": orjson.loads(value)}
    except orjson.JSONDecodeError:
        return {"value_text": text}


async def dead_letter_records(conn: AsyncConnection, filters: DeadLetterFilter, limit: int) -> list[Any]:
    """Rows to replay, oldest first: coordinates, original topic, key, headers and replay state, without the
    value (`dead_letter_values` reads it for the letters a replay sends, a batch at a time: a replay may
    choose 10,000 letters of up to a MiB each)."""
    d = table(DeadLetter).c
    columns = [c for c in d if c.name != "value"]
    query = select(*columns).where(*filters.where()).order_by(d.dead_lettered_at, d.id).limit(limit)
    return list((await conn.execute(query)).all())


async def dead_letter_values(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, bytes | None]:
    """The value of each of these dead letters still in the store (a pruned one is not in the answer)."""
    d = table(DeadLetter).c
    return {row.id: row.value for row in await conn.execute(select(d.id, d.value).where(d.id.in_(list(ids))))}


# ── statistics ─────────────────────────────────────────────────────────────────────────────────────


async def stats(conn: AsyncConnection, since: datetime, until: datetime, agent: str | None = None) -> list[DayStats]:
    """Per agent and UTC day the conversations ended: counts, delivery outcomes, LLM tokens and cost."""
    c = table(Conversation).c
    failures = func.sum(case((c.extraction_status == "failed", 1), else_=0))
    query = (
        select(
            c.ended_day,
            c.agent_id,
            func.count(),
            failures,
            func.sum(c.actions_delivered),
            func.sum(c.actions_failed),
            func.sum(c.actions_dead_lettered),
            func.sum(c.prompt_tokens),
            func.sum(c.completion_tokens),
            func.sum(c.cost_usd),
        )
        .where(c.ended_at >= since, c.ended_at < until, *([c.agent_id == storable("agent", agent)] if agent else []))
        .group_by(c.ended_day, c.agent_id)
        .order_by(c.ended_day, c.agent_id)
    )
    return [
        DayStats(
            day=r[0],
            agent_id=r[1],
            conversations=r[2],
            extraction_failures=int(r[3] or 0),
            actions_delivered=int(r[4] or 0),
            actions_failed=int(r[5] or 0),
            actions_dead_lettered=int(r[6] or 0),
            prompt_tokens=int(r[7] or 0),
            completion_tokens=int(r[8] or 0),
            cost_usd=round(float(r[9] or 0.0), 6),
        )
        for r in await conn.execute(query)
    ]


# ── re-extraction ──────────────────────────────────────────────────────────────────────────────────


async def events_for(conn: AsyncConnection, filters: ConversationFilter, limit: int) -> list[tuple[str, str]]:
    """(conversation_id, event_id) of the chosen conversations, oldest first; `events_of` reads their events,
    a batch at a time (a re-extraction may choose 10,000 calls, each with its whole transcript)."""
    c = table(Conversation).c
    query = (
        select(c.conversation_id, c.event_id)
        .where(*filters.where())
        .order_by(c.ended_at, c.conversation_id)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in await conn.execute(query)]


async def events_of(conn: AsyncConnection, conversation_ids: Sequence[str]) -> dict[str, str]:
    """The stored ConversationEnded JSON of each of these conversations still in the store."""
    c = table(Conversation).c
    query = select(c.conversation_id, c.event).where(c.conversation_id.in_(list(conversation_ids)))
    return {r[0]: r[1] for r in await conn.execute(query)}
