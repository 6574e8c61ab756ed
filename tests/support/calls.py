"""Builders for stored calls: a conversation's records on each topic, as the services produce them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import (
    ActionCompleted,
    ConditionResult,
    ConversationEnded,
    ConversationExtracted,
    DecisionTrace,
    ExtractedValue,
    Extraction,
    FlowDecision,
    PlannedAction,
    Usage,
)
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS, action_topic

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def ended(
    cid: str,
    *,
    agent: str = "support-line",
    version: str | None = "3",
    end_reason: str = "CUSTOMER_HANGUP",
    at: datetime = T0,
    customer: str | None = "Tom Becker",
    event_id: str | None = None,
    **extra: Any,
) -> ConversationEnded:
    data: dict[str, Any] = {
        "event_id": event_id or f"evt-{cid}",
        "conversation_id": cid,
        "occurred_at": (at + timedelta(seconds=5)).isoformat(),
        "account": {"id": "acct-1", "name": "Copperline"},
        "agent": {"id": agent, "name": agent.replace("-", " ").title(), "version": version},
        "direction": "inbound",
        "started_at": (at - timedelta(minutes=3)).isoformat(),
        "ended_at": at.isoformat(),
        "end_reason": {"canonical": end_reason, "raw": end_reason.lower(), "source_platform": "vapi"},
        "customer": {"phone_number": "+16305550123", "name": customer, "email": "tom@becker.example"},
        "messages": [{"role": "customer", "text": "Please call me back tomorrow."}],
        **extra,
    }
    return ConversationEnded.model_validate(data)


def extracted(
    event: ConversationEnded,
    *,
    status: str = "ok",
    summary: str | None = "Customer asked for a callback.",
    review: bool = False,
    at: datetime | None = None,
    tokens: tuple[int, int] = (120, 30),
    cost: float = 0.0004,
) -> ConversationExtracted:
    fields = {
        "follow_up_required": ExtractedValue(
            value=True,
            evidence="Please call me back tomorrow.",
            confidence=0.55 if review else 0.93,
            needs_review=review,
        )
    }
    return ConversationExtracted(
        event_id=event.event_id,
        conversation=event,
        extraction=Extraction(
            status=status,
            reason=None if status == "ok" else "LLM unavailable",
            provider="heuristic",
            config_revision="rev-1",
            fields=fields if status == "ok" else {},
            summary=summary if status == "ok" else None,
            usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1], cost_usd=cost),
        ),
        extracted_at=at or event.ended_at + timedelta(seconds=2),
    )


def action_id(cid: str, flow: str, index: int = 0) -> str:
    return f"act-{cid}-{flow}-{index}"


def trace(
    event: ConversationEnded, flows: Sequence[tuple[str, bool, Sequence[str]]], at: datetime | None = None
) -> DecisionTrace:
    """flows: (flow id, fired, action types)."""
    return DecisionTrace(
        event_id=event.event_id,
        conversation_id=event.conversation_id,
        agent_id=event.agent.id,
        agent_version=event.agent.version,
        config_revision="rev-1",
        extraction_status="ok",
        decided_at=at or event.ended_at + timedelta(seconds=3),
        flows=[
            FlowDecision(
                flow_id=flow,
                enabled=True,
                fired=fired,
                reason="conditions passed" if fired else "end_reason did not match",
                conditions=[
                    ConditionResult(
                        path="when.end_reason",
                        kind="end_reason",
                        passed=fired,
                        expected=["CUSTOMER_HANGUP"],
                        actual=event.end_reason.canonical.value,
                        reason="in list" if fired else "not in list",
                    ),
                    *(
                        ConditionResult(
                            path=f"actions[{i}]",
                            kind="action",
                            passed=True,
                            expected=kind,
                            actual=action_id(event.conversation_id, flow, i),
                            reason="planned",
                        )
                        for i, kind in enumerate(types if fired else ())
                    ),
                ],
                actions=[
                    PlannedAction(
                        action_id=action_id(event.conversation_id, flow, i),
                        type=kind,
                        topic=action_topic(kind),
                        destination="crm" if kind == "webhook" else None,
                    )
                    for i, kind in enumerate(types)
                ]
                if fired
                else [],
            )
            for flow, fired, types in flows
        ],
    )


def result(
    aid: str,
    cid: str,
    outcome: str,
    attempt: int = 1,
    *,
    at: datetime = T0 + timedelta(seconds=4),
    status_code: int | None = 200,
    error: str | None = None,
    kind: str = "webhook",
) -> ActionCompleted:
    return ActionCompleted(
        action_id=aid,
        conversation_id=cid,
        type=kind,
        destination="crm",
        outcome=outcome,
        attempts=attempt,
        status_code=status_code,
        latency_ms=12.5,
        error=error,
        completed_at=at,
    )


def story(cid: str, at: datetime = T0, **kwargs: Any) -> list[tuple[str, Any]]:
    """One delivered call: ended, extracted, a trace with one fired flow (webhook + email), two results."""
    event = ended(cid, at=at, **kwargs)
    return [
        (CONVERSATION_ENDED, event),
        (CONVERSATION_EXTRACTED, extracted(event)),
        (DECISIONS, trace(event, [("crm-sync", True, ["webhook", "email"]), ("callback", False, [])])),
        (ACTION_RESULTS, result(action_id(cid, "crm-sync", 0), cid, "delivered", at=at + timedelta(seconds=4))),
        (
            ACTION_RESULTS,
            result(action_id(cid, "crm-sync", 1), cid, "published", at=at + timedelta(seconds=4), kind="email"),
        ),
    ]


def rows_of(records: Sequence[tuple[str, Any]], first_offset: int = 0) -> Any:
    """The rows the recorder would build for these records (offsets numbered per topic)."""
    from services.store import rows as r

    out = r.Rows()
    offsets: dict[str, int] = {}
    for topic, value in records:
        offset = offsets[topic] = offsets.get(topic, first_offset - 1) + 1
        source = r.Source(topic, 0, offset, int(T0.timestamp() * 1000))
        if topic == CONVERSATION_ENDED:
            out.extend(r.ended(value, source))
        elif topic == CONVERSATION_EXTRACTED:
            out.extend(r.extracted(value, source, {}))
        elif topic == DECISIONS:
            out.extend(r.decided(value, source))
        elif topic == ACTION_RESULTS:
            out.extend(r.completed(value, source))
        else:
            raise ValueError(topic)
    return out
