"""The events on the wire, version 1. Pydantic models are the source of truth; schemas/json/ is generated.

The models accept exactly what the published JSON Schemas accept (tests/contract/test_contract_agreement.py
checks both ways on generated records). Readers are tolerant of unknown fields (producers can add
fields within v1); types are strict, so a wrong type is a schema violation, never a guess:

    times      RFC 3339 strings with a time zone (`Z` or `+hh:mm`), years 1970 to 2999 as written; naive
               times, epoch numbers and times at the calendar's edge are refused
    numbers    JSON numbers only: "12.5", true and null (where not optional) are refused
    integers   JSON integers (1.0 is the integer 1, as JSON Schema says); 1.5 and "1" are refused; counts
               (tokens, attempts) are 0 to MAX_COUNT
    booleans   true or false only
    end_reason.canonical   one of the vocabulary, or absent (then mapped from raw and source_platform)
    free-form  metadata and a platform's analysis (data, details): any JSON; nested at most MAX_NESTING deep
               where the ingress makes the event
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema, model_validator

from schemas.end_reasons import EndReason, canonical_end_reason

MAX_ID_LENGTH = 256  # the longest id the contract takes (conversation, account, agent, event ids)
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]

#: Every time on the wire is written with a year from 1970 up to (not including) 3000. Outside it,
#: arithmetic such as a time-zone shift or a business-hours move overflows (years 1 and 9999), which would
#: look like a retryable crash; a record with such a time is poison at once instead. The bound is on the
#: year as written, so that plain JSON Schema (a pattern) says exactly the same.
FIRST_YEAR, END_YEAR = 1970, 3000
EARLIEST = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
LATEST = datetime(END_YEAR, 1, 1, tzinfo=UTC)  # a written time in UTC may pass it by up to a day
_YEAR = "(19[7-9][0-9]|2[0-9]{3})"
_REST = r"-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})(?![\s\S])"
#: An RFC 3339 date-time with a time zone. The JSON Schemas carry it as `pattern` beside `format`, so that
#: a validator that treats `format` as an annotation (the 2020-12 default) still refuses a naive time.
#: It ends in `(?![\s\S])` (nothing follows) rather than `$`, which Python lets match before a final newline.
DATETIME_PATTERN = f"^{_YEAR}{_REST}"
_SHAPE = re.compile(f"^[0-9]{{4}}{_REST}")


def _rfc3339(value: Any) -> Any:
    # A datetime in UTC itself (what the ingress's mappings build, three per event) is tested first: its
    # offset is known without utcoffset(), a method call through the tzinfo that cost half of this check
    if type(value) is datetime and value.tzinfo is UTC:
        year = value.year
    elif isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError("a time needs a time zone (Z or +hh:mm)")
        year = value.year
    elif isinstance(value, str):
        if not _SHAPE.match(value):
            raise ValueError(f"{value[:40]!r} is not an RFC 3339 time with a time zone, e.g. 2026-11-22T10:00:00Z")
        year = int(value[:4])
    else:
        raise ValueError("a time is an RFC 3339 string with a time zone, e.g. 2026-11-22T10:00:00Z")
    if not FIRST_YEAR <= year < END_YEAR:
        raise ValueError(f"time out of range: the year must be from {FIRST_YEAR} up to (not including) {END_YEAR}")
    return value


def _integral(value: Any) -> Any:
    # JSON Schema: an integer is any number with a zero fractional part, so 1.0 is the integer 1
    return int(value) if isinstance(value, float) and value.is_integer() else value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}),
]
# Constraints sit inside each type, before any validator, so that pydantic writes them into the schema
Number = Annotated[float, Strict()]  # strict: an int is a number; a bool or a string is not
Seconds = Annotated[float, Strict(), Field(ge=0)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Integer = Annotated[int, Strict(), BeforeValidator(_integral)]
#: The largest count: every JSON reader holds it exactly (JavaScript's Number.MAX_SAFE_INTEGER), and the
#: store's 64-bit columns hold the sum of a million of them (a conversation's token counts are summed).
MAX_COUNT = 2**53 - 1
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT), BeforeValidator(_integral)]
Flag = Annotated[bool, Strict()]
Scalar = str | bool | int | float | None  # smart union: every JSON scalar matches one member exactly

#: How deep JSON objects and arrays may nest in a free-form field (metadata, a platform's analysis), its own
#: object counting as one. Every reader of a record parses it with pydantic-core, which refuses a document
#: nested over 200 deep ("recursion limit exceeded"): a deeper value published would be dead-lettered by
#: every consumer. 64 leaves room for the records that carry the field inside others (ConversationExtracted).
#: Checked where a record is made from outside input (the ingress), not on every read: the readers' own
#: limit refuses what is deeper still, as an invalid record.
MAX_NESTING = 64
_FREE_FORM = f" Objects and arrays nest at most {MAX_NESTING} levels deep in it."


_NESTS = (dict, list)  # a tuple built once: `dict | list` in isinstance() builds a union on every test


def nested_too_deep(value: dict[str, Any] | list[Any]) -> bool:
    """Whether objects and arrays nest deeper than MAX_NESTING in `value` (itself counting as one)."""
    for child in value.values() if isinstance(value, dict) else value:  # a loop, not any(): faster, per request
        if isinstance(child, _NESTS):
            break
    else:
        return False  # flat, the usual case
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, _NESTS):
                if depth >= MAX_NESTING:
                    return True
                stack.append((child, depth + 1))
    return False


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)
    #: the field whose value is the event's CloudEvents id (`ce_id`); an event without it gets one from
    #: the record it was made from (services/common/codec.py)
    ce_id_field: ClassVar[str] = "event_id"


# ── ConversationEnded ─────────────────────────────────────────────────────────────────────────────


class Account(Model):
    id: Id
    name: str | None = None


class Agent(Model):
    id: Id
    name: str | None = None
    version: str | None = Field(None, description="Agent version; configurations may target one version.")


class Customer(Model):
    phone_number: str | None = None
    name: str | None = None
    email: str | None = None
    contact_id: str | None = Field(None, description="Set when the conversation is linked to a CRM contact.")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class EndReasonInfo(Model):
    """Why the conversation ended. `canonical` is one of our vocabulary or absent: then it is mapped from
    `raw` and `source_platform`, and a raw value nobody maps becomes UNKNOWN (never an error)."""

    canonical: EndReason = Field(
        EndReason.UNKNOWN,
        description="Our vocabulary. Absent: mapped from raw and source_platform (UNKNOWN when unmapped). "
        "Never null and never a platform's own value: that goes in raw.",
        json_schema_extra=_no_default,  # derived from raw, not a constant
    )
    raw: str | None = Field(None, description="The platform's own value, verbatim.")
    source_platform: str = Field("unknown", description="vapi, retell, elevenlabs, connect, copilot, ...")

    @model_validator(mode="before")
    @classmethod
    def _derive_canonical(cls, data: Any) -> Any:
        if isinstance(data, dict) and "canonical" not in data:
            platform, raw = data.get("source_platform"), data.get("raw")
            if isinstance(raw, str) and isinstance(platform, str | None):
                return {**data, "canonical": canonical_end_reason(platform, raw)}
        return data


class Message(Model):
    role: Literal["agent", "customer", "human_agent", "system", "tool"]
    text: str
    start_seconds: Seconds | None = None
    end_seconds: Seconds | None = None


class PlatformAnalysis(Model):
    """The voice platform's own post-call analysis, as it sent it: flows can test it and the extractor can
    be told to trust it. Which vendor field fills which attribute: docs/publishing.md."""

    summary: str | None = Field(None, description="The platform's summary of the conversation.")
    successful: Flag | None = Field(
        None, description="The platform's verdict on whether the conversation reached its goal, when it gives one."
    )
    sentiment: str | None = Field(None, description="The customer's sentiment as the platform judged it.")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the platform extracted, by name (Vapi structured data and outputs, Retell custom "
        "analysis data, ElevenLabs data collection results)." + _FREE_FORM,
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="The rest of the platform's analysis, verbatim (evaluations, rationales, voicemail flags)."
        + _FREE_FORM,
    )


class ConversationEnded(Model):
    """Published by the voice platform, once per finished conversation; key = conversation_id."""

    event_id: Id = Field(description="Unique per event; duplicates of one event share it.")
    conversation_id: Id
    occurred_at: Timestamp = Field(description="When the platform published the event.")
    account: Account
    agent: Agent
    channel: Literal["phone", "web", "chat", "sms", "other"] = "phone"
    direction: Literal["inbound", "outbound"]
    status: str = Field("completed", description="completed, failed, ...")
    started_at: Timestamp
    ended_at: Timestamp
    duration_seconds: Seconds | None = None
    end_reason: EndReasonInfo
    customer: Customer = Customer()
    to_number: str | None = Field(None, description="The called number (phone calls).")
    messages: list[Message] | None = Field(None, description="The transcript, when it is small enough.")
    transcript_url: str | None = Field(None, description="Claim check: where to fetch a large transcript.")
    recording_url: str | None = None
    conversation_url: str | None = None
    dynamic_variables: dict[str, Scalar] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Anything else, free-form." + _FREE_FORM)
    times_estimated: Flag = Field(
        False,
        description="The platform sent no call times (a call that never connected): started_at and ended_at "
        "are when the platform reported the call, and the duration is 0.",
    )
    platform_analysis: PlatformAnalysis | None = Field(
        None, description="The voice platform's own analysis (summary, verdict, extracted values), when it sent one."
    )

    @property
    def duration(self) -> float:
        if self.duration_seconds is not None:
            return self.duration_seconds
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


# ── ConversationExtracted ─────────────────────────────────────────────────────────────────────────


class ExtractedValue(Model):
    value: Scalar = Field(description="null when the transcript does not support a value.")
    evidence: str | None = Field(None, description="The transcript quote that supports the value.")
    confidence: Probability | None = None
    needs_review: Flag = Field(False, description="Confidence under the configured threshold.")
    raw: Scalar = Field(
        None, description="What the model answered when it was normalised into `value` (e.g. 2026-03-17T00:00:00)."
    )


class TriggerAnswer(Model):
    question: str
    answer: Flag
    rationale: str = ""
    evidence: str | None = None
    confidence: Probability | None = None


class Usage(Model):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    cached_prompt_tokens: Count = 0
    cost_usd: Number = 0.0


class Extraction(Model):
    status: Literal["ok", "failed"]
    reason: str | None = Field(None, description="Why extraction failed, or what was degraded.")
    provider: str = Field(
        description="heuristic, openai (any OpenAI-compatible endpoint), or platform: every value from the voice "
        "platform's own analysis (trust_platform), no provider asked."
    )
    model: str | None = None
    endpoint: str | None = Field(None, description="The LLM endpoint's base URL (no credentials); None: heuristic.")
    config_revision: str
    fields: dict[str, ExtractedValue] = Field(default_factory=dict)
    dynamic: dict[str, ExtractedValue] = Field(default_factory=dict, description="dyn_* template variables.")
    triggers: dict[str, TriggerAnswer] = Field(default_factory=dict, description="Keyed by trigger id.")
    recipients: dict[str, list[str]] = Field(
        default_factory=dict, description="Dynamic-recipient choices, keyed by route id."
    )
    summary: str | None = None
    truncated: Flag = Field(False, description="The transcript was over the token budget and was cut.")
    usage: Usage = Usage()
    latency_ms: Number | None = None


class ConversationExtracted(Model):
    """The original event plus what the extractor found; the router needs nothing else."""

    event_id: Id = Field(
        description="Derived from the conversation's event_id and the record it was extracted from: the same "
        "when that record is read again, new for each re-extraction (postcall reextract)."
    )
    conversation: ConversationEnded
    extraction: Extraction
    extracted_at: Timestamp


# ── Decision trace ────────────────────────────────────────────────────────────────────────────────


class ConditionResult(Model):
    path: str = Field(description="Where the condition sits in the flow, e.g. when.all[1].")
    kind: str = Field(description="end_reason, field, ai, always, all, any, not, confidence, review")
    passed: Flag
    expected: Any = None
    actual: Any = None
    reason: str


class PlannedAction(Model):
    action_id: str
    type: str
    topic: str
    destination: str | None = None


class FlowDecision(Model):
    flow_id: str
    enabled: Flag
    fired: Flag
    held: Flag = Field(
        False,
        description="Extraction failed and the flow uses it: nothing was sent; it runs once a later extraction "
        "of the conversation succeeds (postcall reextract), or when an operator releases it (postcall held).",
    )
    flow_revision: str | None = Field(None, description="The flow's own revision (docs/agent-config.md).")
    reason: str
    conditions: list[ConditionResult] = Field(default_factory=list)
    actions: list[PlannedAction] = Field(default_factory=list)


class DecisionTrace(Model):
    """One on postcall.decisions.v1 each time a conversation is routed (a re-extraction, a republish or a
    held release adds one): every flow, every condition, and why."""

    event_id: Id = Field(
        description="The event_id of the ConversationExtracted decided on: the source_event_id of its actions."
    )
    conversation_id: Id
    agent_id: str
    agent_version: str | None = None
    config_revision: str
    extraction_status: str
    decided_at: Timestamp
    flows: list[FlowDecision]


# ── Actions ───────────────────────────────────────────────────────────────────────────────────────


class ActionBase(Model):
    ce_id_field: ClassVar[str] = "action_id"  # an action command is its action: its results are events of their own

    action_id: str = Field(
        description="Deterministic: conversation + agent + flow + the flow's own revision + action index "
        "(docs/downstream.md); the webhook-id receivers see. A correction's (supersedes set) derives from the "
        "id it replaces, its content digest and its source event. The key to drop a repeat by."
    )
    conversation_id: Id = Field(description="The conversation the action is about; also the record's key.")
    agent_id: str = Field(description="The agent whose configuration file holds the flow.")
    flow_id: str = Field(description="The flow that asked for the action.")
    action_index: Count = Field(description="The action's position in its flow, from 0.")
    config_revision: str = Field(description="The revision of the whole agent configuration file (audit only).")
    requested_at: Timestamp = Field(
        description="When the router wrote the action (a re-extraction writes the same action_id again later)."
    )
    source_event_id: str = Field(
        description="The event_id of the ConversationExtracted the router decided on (also its DecisionTrace's "
        "event_id), not the ConversationEnded's; new for each re-extraction."
    )
    flow_revision: str | None = Field(
        None,
        description="The revision of the flow alone: what the flow and the fields, routes and library "
        "template it uses say (docs/agent-config.md).",
    )
    content_digest: str | None = Field(
        None,
        description="A digest of what the action asks for (its rendered content, without ids and times; "
        "schemas.content). The router writes it on a deliberate re-delivery only, whose action_id derives "
        "from it; the dispatcher computes it for any other action it delivers.",
    )
    supersedes: str | None = Field(
        None,
        description="Set by a deliberate re-delivery (postcall reextract --redeliver): the action_id this "
        "action replaces, so a receiver can upsert.",
    )
    destination: str | None = Field(
        None, description="A destination named in the dispatcher's configuration; never a URL or secret."
    )


class WebhookRequested(ActionBase):
    type: Literal["webhook"] = "webhook"
    destination: str = Field(description="The http destination it is sent to (a name, never a URL).")
    method: Literal["POST", "PUT", "PATCH"] | None = Field(
        None, description="Set only when the flow chose one; None: the destination's configured method."
    )
    body: Any = Field(description="The rendered JSON body.")


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
HTTP_PATH_CHARS = 8192  # an http action's path; the router skips an action whose rendered path is longer


class HttpRequested(ActionBase):
    """A request to someone's API (a CRM, a ticketing system) through an `http` destination, whose URL
    fixes the origin and the path prefix; `path` is appended to it."""

    type: Literal["http"] = "http"
    destination: str
    method: HttpMethod
    path: str = Field(
        "",
        max_length=HTTP_PATH_CHARS,
        description="Appended to the destination's URL: '/...' or '?...', every substituted value already "
        "percent-encoded. The dispatcher refuses a path that would leave the destination's path prefix.",
    )
    query: dict[str, str] = Field(default_factory=dict, description="Query parameters (encoded when sent).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Rendered headers of the flow; credentials are the destination's."
    )
    body: Any = Field(None, description="The rendered JSON body; None: no body.")
    result_id_pointer: str | None = Field(
        None, description="JSON pointer (RFC 6901) to the id in the answer, e.g. /id; reported as result_id."
    )


class EmailRequested(ActionBase):
    type: Literal["email"] = "email"
    to: list[str] = Field(min_length=1)
    recipients_source: Literal["fixed", "dynamic", "fallback"] = "fixed"
    subject: str
    text: str
    html: str | None = None


# bounds that the agent file's actions (schemas/agent_config.py) check where they are written
CARD_FIELDS = 50  # labelled values of a Slack or Teams card
SHEET_NAME_CHARS = 100  # a Google Sheets tab name
ROW_VALUES = 200  # columns of an appended row


class CardField(Model):
    label: str = Field(description="The author's label.")
    value: str = Field(description="The rendered value.")


class MessageCard(Model):
    """What a Slack Block Kit message or a Teams Adaptive Card shows besides its text, rendered by the
    router for the target (values escaped for Slack; for Teams they are never parsed as markup)."""

    title: str | None = Field(None, description="A header line.")
    fields: list[CardField] = Field(default_factory=list, max_length=CARD_FIELDS)
    context: str | None = Field(None, description="A small line at the bottom (agent, time, ...).")
    button: str | None = Field(
        None, description="Label of a link button to the call's console page (the dispatcher knows the URL)."
    )


class SlackRequested(ActionBase):
    type: Literal["slack"] = "slack"
    destination: str
    text: str
    channel: str | None = Field(None, description="Bot-token destinations: the channel; None: the destination's.")
    card: MessageCard | None = Field(None, description="Block Kit content; None: a plain text message.")


class TeamsRequested(ActionBase):
    """A Microsoft Teams incoming-webhook message: an Adaptive Card with the text and the card."""

    type: Literal["teams"] = "teams"
    destination: str
    text: str
    card: MessageCard | None = None


class RowAppendRequested(ActionBase):
    """One row appended to a sheet of a spreadsheet through a `google_sheets` destination, once: the
    action_id goes in the row's id column, which is read first."""

    type: Literal["append_row"] = "append_row"
    destination: str
    spreadsheet_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,200}$")
    sheet: str = Field(min_length=1, max_length=SHEET_NAME_CHARS, description="The sheet (tab) name.")
    values: list[Scalar] = Field(
        min_length=1, max_length=ROW_VALUES, description="The rendered columns, from column A."
    )
    id_column: str | None = Field(
        None, pattern=r"^[A-Z]{1,3}$", description="Where the action_id goes; None: the column after the values."
    )


class ScheduleCallRequested(ActionBase):
    type: Literal["schedule_call"] = "schedule_call"
    to_number: str = Field(
        description="The number to call: the flow's to_field when it holds an E.164 number, else the customer's "
        "phone number as the platform sent it."
    )
    from_number: str | None = Field(None, description="The number to call from, as the flow names it; None: yours.")
    scheduled_at: Timestamp = Field(
        description="When to call, computed from the conversation's ended_at (never the clock: a replay gives the "
        "same time) and moved into the flow's business hours when it has them."
    )
    schedule_source: Literal["field", "fallback"] = Field(
        description="field: the date or time the flow's use_field holds; fallback: fallback_delay_minutes after the "
        "conversation ended (no use_field, or its value missing, unreadable or not after the end)."
    )
    business_hours_applied: Flag = Field(False, description="Whether business hours moved the time.")


class TaskRequested(ActionBase):
    type: Literal["task"] = "task"
    title: str = Field(description="The rendered title.")
    description: str = Field("", description="The rendered description; empty when the flow has none.")
    priority: Literal["Low", "Medium", "High", "Urgent"] = Field(
        "Medium", description="As the flow names it (in any case), written in this case."
    )
    assignee: str | None = Field(
        None,
        description="Who the task is for (a console user's name), as the flow's task action names it; None: "
        "unassigned. Added after v1's first release: content only when set (schemas.content).",
    )


class TeamAlertRequested(ActionBase):
    type: Literal["team_alert"] = "team_alert"
    message: str = Field(description="The rendered message.")
    everyone: Flag = Field(True, description="True when the flow names no teammates: the alert is for everyone.")
    teammates: list[str] = Field(
        default_factory=list, description="The console user names the flow lists; empty: everyone."
    )


ActionRequested = Annotated[
    WebhookRequested
    | HttpRequested
    | RowAppendRequested
    | EmailRequested
    | SlackRequested
    | TeamsRequested
    | ScheduleCallRequested
    | TaskRequested
    | TeamAlertRequested,
    Field(discriminator="type"),
]

ACTION_MODELS: dict[str, type[ActionBase]] = {
    "webhook": WebhookRequested,
    "http": HttpRequested,
    "append_row": RowAppendRequested,
    "email": EmailRequested,
    "slack": SlackRequested,
    "teams": TeamsRequested,
    "schedule_call": ScheduleCallRequested,
    "task": TaskRequested,
    "team_alert": TeamAlertRequested,
}


RESPONSE_EXCERPT_CHARS = 1000
RESULT_ID_CHARS = 256  # the id a receiver's answer named, as ActionCompleted carries it


class ActionCompleted(Model):
    """The dispatcher's outcome for one attempt of one action on postcall.action-results.v1 (compacted).

    Key: the action_id for outcomes that mean the effect happened (delivered, published,
    skipped_duplicate); `<action_id>/attempt-<n>` for failed and dead_lettered, so that compaction can
    never replace a done outcome with a later failure."""

    action_id: str = Field(description="The action this result is about (the record key holds it too).")
    conversation_id: Id = Field(description="The conversation the action is about.")
    type: str = Field(description="The action's type.")
    destination: str | None = Field(None, description="The destination it went to; None: published on its topic.")
    outcome: Literal["delivered", "published", "failed", "skipped_duplicate", "dead_lettered"] = Field(
        description="delivered or published: done; skipped_duplicate: done before (or a correction whose content "
        "did not change), nothing sent; failed: this attempt failed and it is retried (error 'Deferred: ...': "
        "not attempted, a rate limit or full waiting room); dead_lettered: no more attempts."
    )
    attempts: Count = Field(
        description="The attempt this result reports, from 1 (a deferred one keeps its number; a replay from the "
        "dead-letter topic starts again at 1)."
    )
    status_code: Integer | None = Field(
        None,
        description="The HTTP status of the answer (for email: the 250 of a delivered message only); None when no "
        "HTTP answer came (a timeout, a lost connection, not attempted) and on published and skipped results.",
    )
    latency_ms: Number | None = Field(
        None, description="How long the attempt took: on a delivery and on an HTTP answer that failed it."
    )
    error: str | None = Field(
        None,
        description="Why the attempt failed ('DeliveryRetryable: HTTP 503: <the start of the answer>', 'Deferred: "
        "...'); on a delivered email the recipients refused; on a skipped correction 'content unchanged ...' or "
        "'a newer correction of ... was delivered'.",
    )
    response_excerpt: str | None = Field(
        None,
        max_length=RESPONSE_EXCERPT_CHARS,
        description="The start of the receiver's answer (http actions), secrets redacted; for the console and "
        "downstream consumers.",
    )
    result_id: str | None = Field(
        None,
        max_length=RESULT_ID_CHARS,
        description="The id the receiver's answer named (an http action's result_id_pointer, a Sheets row's "
        "range, a Slack message's ts): 'CRM case 4471 updated'.",
    )
    supersedes: str | None = Field(None, description="The action's own `supersedes` (a deliberate re-delivery).")
    content_digest: str | None = Field(
        None,
        description="The action's content digest (schemas.content): its own, or, on a delivered or published "
        "result and on a re-delivery's, computed by the dispatcher when the action carries none. A later "
        "re-delivery compares with the one last delivered. None on the skip of a correction older than one "
        "delivered.",
    )
    completed_at: Timestamp = Field(description="When the dispatcher finished the attempt.")
    requested_at: Timestamp | None = Field(
        None,
        description="The action's requested_at (when the router wrote it): of two corrections of one action, the "
        "one written later is the newer, and an older one is not sent after it. Added after v1's first release: "
        "None in results written before.",
    )


# ── Destination state (shared by the dispatcher's replicas) ─────────────────────────────────────────


class DestinationState(Model):
    """One fact about a destination, shared by every dispatcher replica (postcall.destination-state.v1).

    kind `disabled`: the destination answered 410 Gone (`disabled` true) or an operator enabled it again
    (`postcall destinations enable`, false). kind `circuit`: a replica's circuit breaker opened (`circuit`
    open, until `open_until`) or its probe closed it. kind `replica`: a replica's heartbeat; the rate
    limits are shared out among the live ones that want to send to the destination (`wants`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [  # what _complete checks, for readers of the JSON Schema
                {
                    "if": {"properties": {"kind": {"const": "disabled"}}},
                    "then": {
                        "required": ["destination", "disabled"],
                        "properties": {"destination": {"type": "string"}, "disabled": {"type": "boolean"}},
                    },
                },
                {
                    "if": {"properties": {"kind": {"const": "circuit"}}},
                    "then": {"required": ["destination"], "properties": {"destination": {"type": "string"}}},
                },
            ]
        }
    )

    kind: Literal["disabled", "circuit", "replica"]
    destination: str | None = Field(None, description="The destination (kinds disabled and circuit).")
    disabled: Flag | None = None
    circuit: Literal["open", "closed"] | None = None
    open_until: Timestamp | None = Field(None, description="When an open circuit lets a probe through.")
    reason: str | None = Field(None, max_length=1000, description="Why: the answer, or who enabled it.")
    replica: Id = Field(description="Who wrote it: a dispatcher replica's id, or `postcall destinations`.")
    at: Timestamp
    wants: list[str] | None = Field(
        None,
        description="Kind replica: the rate-limited destinations this replica has had work for lately; a "
        "destination's limit is shared among the live replicas that want it. None (a replica from before "
        "this field): it wants every destination.",
    )

    @model_validator(mode="after")
    def _complete(self) -> DestinationState:
        if self.kind in ("disabled", "circuit") and self.destination is None:
            raise ValueError(f"kind {self.kind} needs a destination")
        if self.kind == "disabled" and self.disabled is None:
            raise ValueError("kind disabled needs `disabled` (true: disabled, false: enabled again)")
        return self

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.destination if self.kind != 'replica' else self.replica}"
