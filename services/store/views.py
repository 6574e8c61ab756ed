"""What the store's queries return: the query API's response bodies, the CLI's input, the console's data."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import ConversationEnded, DecisionTrace, ExtractedValue, TriggerAnswer

T = TypeVar("T")

FinalOutcome = Literal["pending", "delivered", "published", "skipped_duplicate", "failed", "dead_lettered"]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Page(View, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class AgentRef(View):
    id: str
    name: str | None = None
    version: str | None = None


class CustomerRef(View):
    name: str | None = None
    phone_number: str | None = None
    email: str | None = None


class ActionCounts(View):
    total: int = Field(description="Actions planned or reported for this conversation.")
    delivered: int = Field(description="Delivered, published, or found already done (skipped as duplicate).")
    failed: int = Field(description="Whose latest attempt failed; a retry may follow.")
    dead_lettered: int


class UsageView(View):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class ConversationSummary(View):
    conversation_id: str
    event_id: str
    account_id: str
    agent: AgentRef
    channel: str
    direction: str
    status: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    end_reason: str = Field(description="Canonical end reason.")
    end_reason_raw: str | None
    source_platform: str
    customer: CustomerRef
    extraction_status: Literal["ok", "failed"] | None = Field(description="Of the newest extraction; null: none yet.")
    summary: str | None
    needs_review: bool = Field(description="The newest extraction has a value flagged for review.")
    flows_fired: int = Field(description="Flows that fired in the newest decision trace.")
    actions: ActionCounts
    dead_letters: int = Field(description="Dead letters of this conversation not replayed yet.")
    has_failure: bool = Field(description="An action failed or was dead-lettered, or a record was dead-lettered.")
    usage: UsageView = Field(description="LLM usage summed over every extraction of this conversation.")


class ExtractionView(View):
    event_id: str
    extracted_at: datetime
    status: Literal["ok", "failed"]
    reason: str | None
    provider: str
    model: str | None
    config_revision: str
    summary: str | None
    needs_review: bool
    truncated: bool
    usage: UsageView
    latency_ms: float | None
    reextract_of: str | None = Field(description="Set for a re-extraction: the original event id.")
    fields: dict[str, ExtractedValue]
    dynamic: dict[str, ExtractedValue]
    triggers: dict[str, TriggerAnswer]
    recipients: dict[str, list[str]]


class AttemptView(View):
    attempt: int
    outcome: Literal["delivered", "published", "failed", "skipped_duplicate", "dead_lettered"]
    at: datetime
    destination: str | None
    status_code: int | None
    latency_ms: float | None
    error: str | None
    response_excerpt: str | None
    result_id: str | None = Field(
        None, description="The id the receiver named: an http action's result_id_pointer, a Sheets range, a Slack ts."
    )
    next_retry_at: datetime | None = Field(description="For a failed attempt: when the next one is due.")
    deferred: bool = Field(
        False,
        description="Not attempted (outcome failed, error 'Deferred: ...'): the destination's rate limit or waiting "
        "room was full; its retry comes back under the same attempt number.",
    )


class ActionView(View):
    action_id: str
    type: str
    flow_id: str | None
    destination: str | None
    topic: str | None
    final_outcome: FinalOutcome
    attempts: list[AttemptView]


class DeadLetterSummary(View):
    id: int
    coordinates: str = Field(description="topic:partition:offset of the dead letter (what `postcall dlq show` takes).")
    service: str
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    key: str | None
    conversation_id: str | None
    category: str | None
    exception_class: str | None
    reason: str
    attempts: int | None
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    dead_lettered_at: datetime
    replayed_at: datetime | None
    replayed_by: str | None


class DeadLetterDetail(DeadLetterSummary):
    headers: dict[str, str] = Field(
        description="Every header; a credential-like one (Authorization, Cookie, X-Api-Key, ...) as [redacted]. "
        "A replay sends the headers as they were."
    )
    value: Any = Field(None, description="The value parsed as JSON, when it is JSON.")
    value_text: str | None = Field(None, description="The value as text, when it is UTF-8 but not JSON.")
    value_base64: str | None = Field(None, description="The value in base64, when it is not UTF-8.")


class ConversationDetail(View):
    conversation_id: str
    summary: ConversationSummary | None = Field(description="Null when only later records (or dead letters) arrived.")
    event: ConversationEnded | None
    extractions: list[ExtractionView] = Field(description="Every extraction, oldest first.")
    decisions: list[DecisionTrace] = Field(description="Every decision trace, oldest first.")
    actions: list[ActionView]
    dead_letters: list[DeadLetterSummary]
    reextracted_at: datetime | None = Field(
        None, description="When it was last sent for extraction again from the store (API, console); null: never."
    )
    reextracted_by: str | None = Field(None, description="Who sent it then: a token name, or 'local'.")


class ReasonCount(View):
    service: str
    category: str | None
    reason: str
    count: int
    first_at: datetime
    last_at: datetime


class DayStats(View):
    day: str = Field(description="UTC date the conversations ended, YYYY-MM-DD.")
    agent_id: str
    conversations: int
    extraction_failures: int = Field(description="Conversations whose newest extraction failed.")
    actions_delivered: int
    actions_failed: int
    actions_dead_lettered: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class AuditView(View):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: Any
    outcome: Any
    dry_run: bool


class TokenView(View):
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None
