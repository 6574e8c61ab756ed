"""The router-like step of the faust comparison, shared by both stream apps, and its input records.

Input: ConversationExtracted JSON (built from examples/conversations/*.json when they parse as
ConversationEnded, synthesized otherwise). Step: validate with pydantic, evaluate a few end-reason
and extraction conditions, build a DecisionTrace. A record whose event_id is in `slow_ids` sleeps
`slow_seconds` first: the head-of-line record of the kill -9 test.

Both apps (bench.faust_router, bench.runtime_router) read their settings from BENCH_* variables.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.end_reasons import EndReason, connected, outcome_class
from schemas.events import (
    Account,
    Agent,
    ConditionResult,
    ConversationEnded,
    ConversationExtracted,
    Customer,
    DecisionTrace,
    EndReasonInfo,
    ExtractedValue,
    Extraction,
    FlowDecision,
    Message,
    PlannedAction,
    TriggerAnswer,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "conversations"


class StreamBenchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BENCH_")

    bootstrap_servers: str = Field(description="The private broker.")
    group: str = Field(description="Consumer group (faust app id / runtime service name).")
    input_topic: str = Field(description="ConversationExtracted records.")
    output_topic: str = Field(description="DecisionTrace records.")
    concurrency: int = Field(16, description="faust agent concurrency / runtime max_in_flight.")
    slow_ids: str = Field("", description="Comma-separated event ids that sleep slow_seconds.")
    slow_seconds: float = Field(30.0, description="How long a slow record sleeps.")
    web_port: int = Field(0, description="faust web port (a free port).")
    datadir: str = Field("", description="faust data directory (a temp dir).")
    session_timeout_seconds: float = Field(10.0, description="Consumer group session timeout (both apps).")

    def slow(self) -> set[str]:
        return {s for s in self.slow_ids.split(",") if s}


# ── the step ──────────────────────────────────────────────────────────────────────────────────

FOLLOW_UP = {EndReason.CUSTOMER_HANGUP, EndReason.SILENCE_TIMEOUT, EndReason.NETWORK_DROP}
TRANSFERS = {EndReason.BLIND_TRANSFER, EndReason.CCAAS_TRANSFER, EndReason.TAKEN_OVER}


def decide(event: ConversationExtracted) -> DecisionTrace:
    conversation, extraction = event.conversation, event.extraction
    reason = conversation.end_reason.canonical
    interested = extraction.triggers.get("wants_follow_up")
    flows = [
        _flow(event, "follow_up_call", "end_reason", reason in FOLLOW_UP and connected(reason), "schedule_call"),
        _flow(event, "voicemail_retry", "end_reason", reason == EndReason.VOICEMAIL, "schedule_call"),
        _flow(event, "transfer_summary", "end_reason", reason in TRANSFERS, "email"),
        _flow(event, "failed_call_alert", "end_reason", outcome_class(reason) == "error", "team_alert"),
        _flow(
            event,
            "hot_lead",
            "ai",
            bool(interested and interested.answer and (interested.confidence or 0) >= 0.7),
            "webhook",
        ),
        _flow(event, "needs_review", "review", any(v.needs_review for v in extraction.fields.values()), "task"),
    ]
    return DecisionTrace(
        event_id=event.event_id,
        conversation_id=conversation.conversation_id,
        agent_id=conversation.agent.id,
        agent_version=conversation.agent.version,
        config_revision=extraction.config_revision,
        extraction_status=extraction.status,
        decided_at=datetime.now(UTC),
        flows=flows,
    )


def _flow(event: ConversationExtracted, flow_id: str, kind: str, passed: bool, action: str) -> FlowDecision:
    condition = ConditionResult(
        path="when",
        kind=kind,
        passed=passed,
        actual=event.conversation.end_reason.canonical,
        reason="matched" if passed else "not matched",
    )
    actions = (
        [
            PlannedAction(
                action_id=f"{event.conversation.conversation_id}:{flow_id}:0",
                type=action,
                topic=f"postcall.actions.{action.replace('_', '-')}.v1",
            )
        ]
        if passed
        else []
    )
    return FlowDecision(
        flow_id=flow_id, enabled=True, fired=passed, reason=condition.reason, conditions=[condition], actions=actions
    )


# ── input records ─────────────────────────────────────────────────────────────────────────────


def records(n: int, slow_ids: Sequence[str] = (), seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) of n ConversationExtracted records; the slow ids come first, in order."""
    rng = random.Random(seed)
    templates = example_conversations() or [synthetic_conversation(rng, i) for i in range(20)]
    ids = [*slow_ids, *(f"evt-{i:06d}" for i in range(n - len(slow_ids)))]
    out = []
    for i, event_id in enumerate(ids):
        conversation = templates[i % len(templates)].model_copy(
            update={
                "conversation_id": f"conv-{event_id}",
                "event_id": f"ended-{event_id}",
                "end_reason": EndReasonInfo(canonical=rng.choice(list(EndReason)), source_platform="vapi"),
            }
        )
        event = ConversationExtracted(
            event_id=event_id, conversation=conversation, extraction=extraction(rng), extracted_at=datetime.now(UTC)
        )
        out.append((conversation.conversation_id.encode(), event.model_dump_json().encode()))
    return out


def example_conversations() -> list[ConversationEnded]:
    found = []
    for path in sorted(EXAMPLES.glob("*.json")):
        try:
            found.append(ConversationEnded.model_validate_json(path.read_bytes()))
        except ValidationError:
            continue
    return found


def synthetic_conversation(rng: random.Random, i: int) -> ConversationEnded:
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=17 * i)
    turns = rng.randint(8, 24)
    messages = [
        Message(
            role="agent" if t % 2 == 0 else "customer",
            text=_sentence(rng),
            start_seconds=6.0 * t,
            end_seconds=6.0 * t + 5,
        )
        for t in range(turns)
    ]
    return ConversationEnded(
        event_id=f"ended-{i}",
        conversation_id=f"conv-{i}",
        occurred_at=start + timedelta(seconds=6 * turns + 2),
        account=Account(id="acct-1", name="Acme Dental"),
        agent=Agent(id="agent-7", name="Reception", version="3"),
        direction=rng.choice(["inbound", "outbound"]),
        started_at=start,
        ended_at=start + timedelta(seconds=6 * turns),
        end_reason=EndReasonInfo(
            canonical=EndReason.CUSTOMER_HANGUP, raw="customer-ended-call", source_platform="vapi"
        ),
        customer=Customer(phone_number=f"+1555{rng.randint(1000000, 9999999)}", name="Sam Lee"),
        messages=messages,
        dynamic_variables={"clinic": "Downtown", "slot": "Tuesday 10:00"},
    )


WORDS = [
    "appointment",
    "cleaning",
    "tuesday",
    "insurance",
    "callback",
    "price",
    "whitening",
    "cancel",
    "reschedule",
    "morning",
    "afternoon",
    "dentist",
    "pain",
    "urgent",
    "follow",
    "up",
    "email",
    "confirm",
    "address",
    "thanks",
]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."


def extraction(rng: random.Random) -> Extraction:
    confidence = round(rng.uniform(0.4, 1.0), 2)
    return Extraction(
        status="ok",
        provider="openai",
        model="gpt-4.1-mini",
        config_revision="rev-12",
        fields={
            "appointment_date": ExtractedValue(
                value="2026-11-10", evidence="next tuesday", confidence=confidence, needs_review=confidence < 0.6
            ),
            "insurance": ExtractedValue(value="Delta", evidence="I have Delta", confidence=0.9),
            "callback_number": ExtractedValue(value="+15550001111", confidence=0.95),
        },
        triggers={
            "wants_follow_up": TriggerAnswer(
                question="Does the caller want a follow-up?",
                answer=rng.random() < 0.5,
                rationale="asked for a call back",
                confidence=confidence,
            ),
        },
        summary="Caller asked about a cleaning appointment and insurance coverage.",
    )
