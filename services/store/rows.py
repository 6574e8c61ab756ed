"""Records read from Kafka -> the rows they add to the store (pure functions, no database).

Each function takes one parsed record and returns `Rows`; the writer merges the rows of many records
and writes them in one transaction. Building rows per record (in the recorder's handler) means a
record that cannot be stored (an impossible date, say) fails alone, before any batch is touched.

Text from callers may hold NUL characters, which PostgreSQL refuses in text: they become U+FFFD.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas import headers as h
from schemas.events import (
    MAX_ID_LENGTH,
    ActionBase,
    ActionCompleted,
    ConversationEnded,
    ConversationExtracted,
    DecisionTrace,
    Extraction,
    TaskRequested,
    TeamAlertRequested,
)

Row = dict[str, Any]
ZERO = timedelta(0)
DONE_OUTCOMES = ("delivered", "published", "skipped_duplicate")


@dataclass(frozen=True)
class Source:
    """Where a record was read: its identity for idempotent inserts, and its Kafka time."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def columns(self) -> Row:
        return {"kafka_topic": self.topic, "kafka_partition": self.partition, "kafka_offset": self.offset}


@dataclass
class Rows:
    """Rows for each table, and which conversations and actions need their summaries recomputed."""

    conversations: list[Row] = field(default_factory=list)
    extractions: list[Row] = field(default_factory=list)
    decisions: list[Row] = field(default_factory=list)
    decision_flows: list[Row] = field(default_factory=list)
    actions: list[Row] = field(default_factory=list)
    attempts: list[Row] = field(default_factory=list)
    retries: list[Row] = field(default_factory=list)
    dead_letters: list[Row] = field(default_factory=list)
    replays: list[Row] = field(default_factory=list)
    audits: list[Row] = field(default_factory=list)
    requests: list[Row] = field(default_factory=list)
    tasks: list[Row] = field(default_factory=list)
    alerts: list[Row] = field(default_factory=list)
    conversation_ids: set[str] = field(default_factory=set)
    action_ids: set[str] = field(default_factory=set)

    def extend(self, other: Rows) -> None:
        for name in TABLES:
            getattr(self, name).extend(getattr(other, name))
        self.conversation_ids |= other.conversation_ids
        self.action_ids |= other.action_ids

    def __len__(self) -> int:
        return sum(len(getattr(self, name)) for name in TABLES)


TABLES = (
    "conversations", "extractions", "decisions", "decision_flows", "actions", "attempts", "retries",
    "dead_letters", "replays", "audits", "requests", "tasks", "alerts",
)  # fmt: skip


def final_outcome(outcomes: Sequence[tuple[int, str]]) -> str:
    """What became of an action, from its attempts (attempt number, outcome)."""
    seen = {o for _, o in outcomes}
    for done in DONE_OUTCOMES:
        if done in seen:
            return done
    if "dead_lettered" in seen:
        return "dead_lettered"
    return "failed" if "failed" in seen else "pending"


def clean(value: Any) -> Any:
    """NUL-free text; aware UTC times (a naive time is read as UTC)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, datetime):
        return utc(value)
    return value


def utc(value: datetime) -> datetime:
    """Aware UTC; fast for what the contract carries (`...Z`: pydantic's own UTC tzinfo, whose
    astimezone() costs ten times a replace)."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) == ZERO:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _row(**columns: Any) -> Row:
    return {k: clean(v) for k, v in columns.items()}


def day_of(t: datetime) -> str:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d")


# ── the main path ──────────────────────────────────────────────────────────────────────────────────


def conversation_row(event: ConversationEnded, received_at: datetime) -> Row:
    return _row(
        conversation_id=event.conversation_id,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        account_id=event.account.id,
        account_name=event.account.name,
        agent_id=event.agent.id,
        agent_name=event.agent.name,
        agent_version=event.agent.version,
        channel=event.channel,
        direction=event.direction,
        status=event.status,
        started_at=event.started_at,
        ended_at=event.ended_at,
        ended_day=day_of(event.ended_at),
        duration_seconds=float(event.duration_seconds if event.duration_seconds is not None else _span(event)),
        end_reason=event.end_reason.canonical.value,
        end_reason_raw=event.end_reason.raw,
        source_platform=event.end_reason.source_platform,
        customer_name=event.customer.name,
        customer_phone=event.customer.phone_number,
        customer_email=event.customer.email,
        event=event.model_dump_json(),
        received_at=received_at,
        search_text=search_text(None, event.customer.name, event.customer.phone_number, event.customer.email),
    )


def _span(event: ConversationEnded) -> float:
    started, ended = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (event.started_at, event.ended_at))
    return max(0.0, (ended - started).total_seconds())


def search_text(*parts: str | None) -> str:
    return str(clean(" ".join(p for p in parts if p).lower()))


def ended(event: ConversationEnded, source: Source, headers: Mapping[str, str] | None = None) -> Rows:
    """The conversation; a copy `postcall reextract` sent from the topic is also audited (who, which)."""
    out = Rows(conversations=[conversation_row(event, source.at)], conversation_ids={event.conversation_id})
    by = (headers or {}).get(h.REEXTRACTED_BY)
    if by is not None:
        target = {"conversation_id": event.conversation_id, "event_id": event.event_id, "record": source.coordinates}
        out.audits.append(_command_line_audit("reextract", by, source.at, target))
    return out


def extracted(record: ConversationExtracted, source: Source, headers: Mapping[str, str]) -> Rows:
    x = record.extraction
    row = _row(
        **source.columns(),
        conversation_id=record.conversation.conversation_id,
        event_id=record.event_id,
        extracted_at=record.extracted_at,
        status=x.status,
        reason=x.reason,
        provider=x.provider,
        model=x.model,
        config_revision=x.config_revision,
        summary=x.summary,
        needs_review=needs_review(x),
        truncated=x.truncated,
        prompt_tokens=x.usage.prompt_tokens,
        completion_tokens=x.usage.completion_tokens,
        cached_prompt_tokens=x.usage.cached_prompt_tokens,
        cost_usd=x.usage.cost_usd,
        latency_ms=x.latency_ms,
        reextract_of=headers.get(h.REEXTRACT_OF),
        payload=x.model_dump_json(),
    )
    return Rows(
        conversations=[conversation_row(record.conversation, source.at)],
        extractions=[row],
        conversation_ids={record.conversation.conversation_id},
    )


def needs_review(x: Extraction) -> bool:
    return any(v.needs_review for v in (*x.fields.values(), *x.dynamic.values()))


def decided(trace: DecisionTrace, source: Source) -> Rows:
    row = _row(
        **source.columns(),
        conversation_id=trace.conversation_id,
        event_id=trace.event_id,
        agent_id=trace.agent_id,
        agent_version=trace.agent_version,
        config_revision=trace.config_revision,
        extraction_status=trace.extraction_status,
        decided_at=trace.decided_at,
        flows_fired=sum(1 for f in trace.flows if f.fired),
        flows_held=sum(1 for f in trace.flows if f.held),
        payload=trace.model_dump_json(),
    )
    actions = [
        _row(
            action_id=a.action_id,
            conversation_id=trace.conversation_id,
            type=a.type,
            flow_id=flow.flow_id,
            destination=a.destination,
            topic=a.topic,
            first_seen_at=trace.decided_at,
        )
        for flow in trace.flows
        for a in flow.actions
    ]
    flows = [
        _row(
            event_id=trace.event_id,
            extraction_status=trace.extraction_status,
            flows_held=row["flows_held"],
            flow_id=flow.flow_id,
            agent_id=trace.agent_id,
            agent_version=trace.agent_version,
            config_revision=trace.config_revision,
            decided_at=trace.decided_at,
            fired=flow.fired,
        )
        for flow in trace.flows
    ]
    return Rows(
        decisions=[row],
        decision_flows=flows,
        actions=actions,
        conversation_ids={trace.conversation_id},
        action_ids={a["action_id"] for a in actions},
    )


def completed(result: ActionCompleted, source: Source, excerpt: str | None = None) -> Rows:
    action = _row(
        action_id=result.action_id,
        conversation_id=result.conversation_id,
        type=result.type,
        flow_id=None,
        destination=result.destination,
        topic=None,
        first_seen_at=result.completed_at,
    )
    attempt = _row(
        action_id=result.action_id,
        conversation_id=result.conversation_id,
        attempt=result.attempts,
        outcome=result.outcome,
        destination=result.destination,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        response_excerpt=excerpt if excerpt is not None else getattr(result, "response_excerpt", None),
        result_id=result.result_id,
        completed_at=result.completed_at,
        deferred=deferral(result.outcome, result.error),
    )
    return Rows(
        actions=[action],
        attempts=[attempt],
        conversation_ids={result.conversation_id},
        action_ids={result.action_id},
    )


#: how a deferral's error begins: the dispatcher records `<exception class>: <message>` (handler.failed_result)
DEFERRED = "Deferred:"


def deferral(outcome: str, error: str | None) -> bool:
    """Whether an attempt's result is a deferral: not attempted, a rate limit or waiting room was full (the
    dispatcher records it `failed` with its Deferred error, services/dispatcher/handler.py on_failure)."""
    return outcome == "failed" and error is not None and error.startswith(DEFERRED)


def requested(action: ActionBase, source: Source) -> Rows:
    """An action record from postcall.actions.<type>.v1: its payload for the timeline; a task for the
    console's inbox; a team alert for its feed."""
    common = {"action_id": action.action_id, "conversation_id": action.conversation_id, "agent_id": action.agent_id}
    out = Rows(
        requests=[
            _row(
                **common,
                type=str(getattr(action, "type", "")),
                requested_at=action.requested_at,
                payload=action.model_dump_json(),
            )
        ]
    )
    if isinstance(action, TaskRequested):
        out.tasks.append(
            _row(
                **common,
                priority=action.priority,
                title=action.title,
                description=action.description,
                assignee=action.assignee,
                requested_at=action.requested_at,
                done_at=None,
                done_by=None,
            )
        )
    elif isinstance(action, TeamAlertRequested):
        out.alerts.append(
            _row(
                **common,
                message=action.message,
                everyone=action.everyone,
                teammates=orjson.dumps(action.teammates).decode(),
                requested_at=action.requested_at,
            )
        )
    return out


def retry_scheduled(action: Mapping[str, Any], headers: Mapping[str, str]) -> Rows:
    """A dispatcher retry-tier record: the action's next attempt and when it is due. Empty when the
    record does not say (a foreign record on the topic)."""
    try:
        attempt = int(headers[h.ATTEMPTS]) + 1
        due = datetime.fromtimestamp(float(headers[h.RETRY_DUE_AT]), UTC)
        action_id, conversation_id = str(action["action_id"]), str(action["conversation_id"])
    except (KeyError, ValueError, TypeError, OverflowError, OSError):
        return Rows()
    row = _row(action_id=action_id, attempt=attempt, conversation_id=conversation_id, due_at=due)
    return Rows(retries=[row], conversation_ids={conversation_id})


# ── dead letters ───────────────────────────────────────────────────────────────────────────────────


def dead_letter(
    source: Source, service: str, key: str | bytes | None, value: bytes | None, headers: Mapping[str, str]
) -> Rows:
    """A dead letter, stored whatever its value holds: its context is in the headers."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    # indexed columns: PostgreSQL refuses an index entry over 8 kB, and keys and headers are anyone's
    conversation_id = _conversation_of(value) or (key[:MAX_ID_LENGTH] if key else None)
    row = _row(
        **source.columns(),
        service=(headers.get(h.DLQ_SERVICE) or service)[:MAX_ID_LENGTH],
        original_topic=headers.get(h.ORIGINAL_TOPIC),
        original_partition=_int(headers.get(h.ORIGINAL_PARTITION)),
        original_offset=_int(headers.get(h.ORIGINAL_OFFSET)),
        key=key,
        conversation_id=conversation_id,
        category=headers.get(h.DLQ_FAILURE_CATEGORY),
        exception_class=headers.get(h.EXCEPTION_CLASS),
        reason=headers.get(h.EXCEPTION_MESSAGE) or headers.get(h.DLQ_VALUE_DROPPED) or "(no reason recorded)",
        attempts=_int(headers.get(h.ATTEMPTS)),
        first_failure_at=_time(headers.get(h.FIRST_FAILURE_AT)),
        last_failure_at=_time(headers.get(h.LAST_FAILURE_AT)),
        dead_lettered_at=source.at,
        headers=orjson.dumps(dict(headers)).decode(),
        value=value,
        replayed_at=None,
        replayed_by=None,
    )
    return Rows(dead_letters=[row], conversation_ids={conversation_id} if conversation_id else set())


def replay_marker(headers: Mapping[str, str], source: Source) -> Rows:
    """`x-dlq-replayed: topic:partition:offset`, written after a replay was acknowledged. A command
    line's replay (`postcall dlq replay`) is audited from its marker: the API audits its own."""
    coordinates = headers.get(h.DLQ_REPLAYED, "")
    topic, _, rest = coordinates.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    number, offset = _int(partition), _int(rest)
    if not topic or number is None or offset is None:
        return Rows()
    at = _time(headers.get(h.REPLAYED_AT)) or source.at
    by = headers.get(h.REPLAYED_BY, "unknown")
    row = _row(kafka_topic=topic, kafka_partition=number, kafka_offset=offset, replayed_at=at, replayed_by=by)
    if headers.get(h.REPLAYED_VIA) == "api":
        return Rows(replays=[row])
    target = {"dead_letter": f"{topic}:{number}:{offset}", "marker": source.coordinates}
    return Rows(replays=[row], audits=[_command_line_audit("replay", by, at, target)])


def _command_line_audit(action: str, by: str, at: datetime, target: Mapping[str, str]) -> Row:
    """An operator action sent straight to Kafka, audited when the recorder reads what it sent; the
    record's own coordinates in the target make the row's identity (re-reading adds nothing)."""
    outcome = {"matched": 1, "sent": 1}
    return _row(at=at, actor=by, role="command line", action=action, target=orjson.dumps(target).decode(),
                outcome=orjson.dumps(outcome).decode(), dry_run=False)  # fmt: skip


def _conversation_of(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    found = data.get("conversation_id")
    if found is None and isinstance(data.get("conversation"), dict):
        found = data["conversation"].get("conversation_id")
    return str(found)[:MAX_ID_LENGTH] if isinstance(found, str | int) and str(found) else None


def _int(value: str | None) -> int | None:
    """A decimal header value; None for anything else (headers can be forged: `²` is a digit to Python)."""
    text = (value or "").strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 19:
        return None
    return int(text)


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError, OverflowError):  # year 1 at +05:00 parses, but has no UTC time
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return None
