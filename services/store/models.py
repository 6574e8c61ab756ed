"""The store's tables. Children carry `conversation_id` without a foreign key: the recorder reads four
topics and the dead-letter topics concurrently, so an action result may arrive before its conversation.

Identity (what makes re-reading a topic never duplicate a row):

    conversations   conversation_id (the newest event by occurred_at wins)
    extractions     the Kafka record (topic, partition, offset), and (event_id, status)
    decisions       the Kafka record (topic, partition, offset), and (event_id, extraction_status, flows_held)
    decision_flows  the decision's second key and the flow id (a copy of a decision adds no flow row)
    actions         action_id
    attempts        (action_id, attempt, outcome)
    dead_letters    the Kafka record (topic, partition, offset) of the dead letter
    api_tokens      name; the token itself is stored only as its SHA-256

Payloads (the event, the extracted values, the flows) are kept as JSON text exactly as produced; the
columns beside them are what queries filter and sort on. The `conversations` columns after `event` are
recomputed from the children by the writer after each batch (counts, latest extraction, failure flag).

An extractor or router that crashes after producing and before committing produces the same event again
(same event_id) at a new offset: the second key keeps the first copy only. Not event_id alone: the
`failed` extraction written when its input was dead-lettered and the `ok` one after the dead letter's
replay share it, and so do the decision that held flows on a failed extraction and the one a `postcall
held release` made on the same extraction to run them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: TIMESTAMPTZ on PostgreSQL, naive UTC text on SQLite (so that
    text comparison is time comparison)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # a naive time is read as UTC (the contract asks producers for aware times; old records may not be)
        if value.tzinfo is not UTC:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Conversation(Base):
    __tablename__ = "conversations"

    conversation_id: Mapped[str] = mapped_column(String, primary_key=True)
    event_id: Mapped[str] = mapped_column(String)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    account_id: Mapped[str] = mapped_column(String)
    account_name: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[str] = mapped_column(String)
    agent_name: Mapped[str | None] = mapped_column(Text)
    agent_version: Mapped[str | None] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    direction: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_day: Mapped[str] = mapped_column(String(10), doc="UTC date of ended_at, YYYY-MM-DD (stats per day).")
    duration_seconds: Mapped[float] = mapped_column(Float)
    end_reason: Mapped[str] = mapped_column(String)
    end_reason_raw: Mapped[str | None] = mapped_column(Text)
    source_platform: Mapped[str] = mapped_column(String)
    customer_name: Mapped[str | None] = mapped_column(Text)
    customer_phone: Mapped[str | None] = mapped_column(Text)
    customer_email: Mapped[str | None] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text, doc="The ConversationEnded JSON.")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="Kafka timestamp of the record kept.")
    stored_at: Mapped[datetime] = mapped_column(
        UTCDateTime,
        server_default=text("CURRENT_TIMESTAMP"),  # a recorder older than 0010 (a rolling upgrade) does not set it
        doc="The store's time when the row was first written; a newer event does not change it.",
    )
    # written by a re-extraction from the store (the API's, the console's), never by the recorder
    reextracted_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="When it was last sent for extraction again from the store; null: never."
    )
    reextracted_by: Mapped[str | None] = mapped_column(String, doc="Who sent it (a token name, or 'local').")
    # recomputed from the children after each batch
    extraction_status: Mapped[str | None] = mapped_column(String, doc="Of the newest extraction; null: none yet.")
    summary: Mapped[str | None] = mapped_column(Text)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    flows_fired: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    actions_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    actions_delivered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    actions_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    actions_dead_lettered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dead_letters: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    has_failure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="", doc="Lower-cased text search.")

    __table_args__ = (
        Index(None, "ended_at", "conversation_id"),
        Index(None, "stored_at", "conversation_id"),
        Index(None, "agent_id", "ended_at", "conversation_id"),
        Index(None, "end_reason", "ended_at", "conversation_id"),
        Index(None, "extraction_status", "ended_at"),
        Index(
            "ix_conversations_failure",
            "ended_at",
            postgresql_where=text("has_failure"),
            sqlite_where=text("has_failure"),
        ),
        Index(
            "ix_conversations_review",
            "ended_at",
            postgresql_where=text("needs_review"),
            sqlite_where=text("needs_review"),
        ),
    )


class Extraction(Base):
    __tablename__ = "extractions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kafka_topic: Mapped[str] = mapped_column(String)
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    event_id: Mapped[str] = mapped_column(String)
    extracted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String)
    model: Mapped[str | None] = mapped_column(String)
    config_revision: Mapped[str] = mapped_column(String)
    summary: Mapped[str | None] = mapped_column(Text)
    needs_review: Mapped[bool] = mapped_column(Boolean)
    truncated: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    reextract_of: Mapped[str | None] = mapped_column(String, doc="x-reextract-of: the original event id.")
    payload: Mapped[str] = mapped_column(Text, doc="The Extraction JSON (fields, dynamic, triggers, ...).")

    __table_args__ = (
        UniqueConstraint("kafka_topic", "kafka_partition", "kafka_offset"),
        UniqueConstraint("event_id", "status"),
    )


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kafka_topic: Mapped[str] = mapped_column(String)
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    event_id: Mapped[str] = mapped_column(String)
    agent_id: Mapped[str] = mapped_column(String)
    agent_version: Mapped[str | None] = mapped_column(String)
    config_revision: Mapped[str] = mapped_column(String)
    extraction_status: Mapped[str] = mapped_column(String)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    flows_fired: Mapped[int] = mapped_column(Integer)
    flows_held: Mapped[int] = mapped_column(Integer, server_default="0")
    payload: Mapped[str] = mapped_column(Text, doc="The DecisionTrace JSON.")

    __table_args__ = (
        UniqueConstraint("kafka_topic", "kafka_partition", "kafka_offset"),
        UniqueConstraint("event_id", "extraction_status", "flows_held"),
    )


class DecisionFlow(Base):
    """One flow of one decision trace: whether it fired. The console's fire counts per flow
    (services/console/agents.py) read these, not the traces' JSON."""

    __tablename__ = "decision_flows"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String)
    extraction_status: Mapped[str] = mapped_column(String)
    flows_held: Mapped[int] = mapped_column(Integer)
    flow_id: Mapped[str] = mapped_column(String)
    agent_id: Mapped[str] = mapped_column(String)
    agent_version: Mapped[str | None] = mapped_column(String)
    config_revision: Mapped[str] = mapped_column(String)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    fired: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        UniqueConstraint("event_id", "extraction_status", "flows_held", "flow_id"),
        Index(None, "agent_id", "config_revision", "decided_at"),
    )


class Action(Base):
    __tablename__ = "actions"

    action_id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    type: Mapped[str] = mapped_column(String)
    flow_id: Mapped[str | None] = mapped_column(String, doc="From the decision trace; null until it is read.")
    destination: Mapped[str | None] = mapped_column(String)
    topic: Mapped[str | None] = mapped_column(String)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # recomputed from the attempts after each batch
    final_outcome: Mapped[str] = mapped_column(String, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    action_id: Mapped[str] = mapped_column(String)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String)
    destination: Mapped[str | None] = mapped_column(String)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    result_id: Mapped[str | None] = mapped_column(String)  # the id the receiver named ("case 4471")
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    deferred: Mapped[bool] = mapped_column(
        Boolean,
        server_default=false(),
        doc="Not attempted: a rate limit or waiting room was full (outcome failed, error 'Deferred: ...'); its retry "
        "comes back under the same attempt number, and a real failure of it is a row of its own.",
    )

    __table_args__ = (UniqueConstraint("action_id", "attempt", "outcome", "deferred"),)


class ScheduledRetry(Base):
    """A failed action's next attempt, read off the dispatcher's retry tiers: attempt `attempt` is due
    at `due_at` (so attempt - 1 failed with that next retry)."""

    __tablename__ = "retries"

    action_id: Mapped[str] = mapped_column(String, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kafka_topic: Mapped[str] = mapped_column(String)
    kafka_partition: Mapped[int] = mapped_column(Integer)
    kafka_offset: Mapped[int] = mapped_column(BigInteger)
    service: Mapped[str] = mapped_column(String)
    original_topic: Mapped[str | None] = mapped_column(String)
    original_partition: Mapped[int | None] = mapped_column(Integer)
    original_offset: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(Text)
    conversation_id: Mapped[str | None] = mapped_column(String, index=True)
    category: Mapped[str | None] = mapped_column(String)
    exception_class: Mapped[str | None] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int | None] = mapped_column(Integer)
    first_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dead_lettered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    headers: Mapped[str] = mapped_column(Text, doc="Every header, JSON object.")
    value: Mapped[bytes | None] = mapped_column(LargeBinary, doc="The original value, byte for byte.")
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replayed_by: Mapped[str | None] = mapped_column(String)
    replay_claimed_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="A replay is sending it until then (renewed while it sends); past it, anyone may replay it."
    )
    replay_claim: Mapped[str | None] = mapped_column(
        String, index=True, doc="Which replay holds the claim (one id per replay)."
    )

    __table_args__ = (
        UniqueConstraint("kafka_topic", "kafka_partition", "kafka_offset"),
        Index(None, "dead_lettered_at", "id"),
        Index(None, "service", "dead_lettered_at"),
        # the key filter (key = X OR conversation_id = X); a key is the producer's, of any length, and a
        # PostgreSQL B-tree refuses entries over 2,704 bytes: a hash index holds 4 bytes a key (equality only)
        Index("ix_dead_letters_key", "key", postgresql_using="hash"),
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, doc="None: valid until revoked.")

    # one active token per name; a revoked token's name goes to its replacement (rotation)
    __table_args__ = (
        Index(
            "uq_api_tokens_active_name",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
            sqlite_where=text("revoked_at IS NULL"),
        ),
    )


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String, doc="Token name, or 'local' for unauthenticated loopback use.")
    role: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String, doc="replay, reextract, ...")
    target: Mapped[str] = mapped_column(Text, doc="What it applied to: ids or the filters, as JSON.")
    outcome: Mapped[str] = mapped_column(Text, doc="What happened: counts, or the error.")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class ActionRequest(Base):
    """The action record the router produced (postcall.actions.<type>.v1), as produced: the timeline's
    rendered payload."""

    __tablename__ = "action_requests"

    action_id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    agent_id: Mapped[str] = mapped_column(String)
    type: Mapped[str] = mapped_column(String)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    payload: Mapped[str] = mapped_column(Text, doc="The ActionRequested JSON.")


class Task(Base):
    """A `task` action (seed 001's Create Task): kept so a person can work it in the console's inbox."""

    __tablename__ = "tasks"

    action_id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    agent_id: Mapped[str] = mapped_column(String)
    priority: Mapped[str] = mapped_column(String)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by: Mapped[str | None] = mapped_column(String)

    __table_args__ = (Index(None, "done_at", "requested_at"),)


class TeamAlert(Base):
    """A `team_alert` action (seed 001's Team Alert): the console's alert feed."""

    __tablename__ = "team_alerts"

    action_id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, index=True)
    agent_id: Mapped[str] = mapped_column(String)
    message: Mapped[str] = mapped_column(Text)
    everyone: Mapped[bool] = mapped_column(Boolean)
    teammates: Mapped[str] = mapped_column(Text, doc="JSON list of names; empty when everyone.")
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ConsoleSession(Base):
    """A console login (services/console/sessions.py): only the SHA-256 of the session id is kept; the
    session ends at `expires_at`, after `idle` without a request, on logout, or when its token is revoked."""

    __tablename__ = "console_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer, index=True, doc="api_tokens.id it was opened with.")
    csrf_token: Mapped[str] = mapped_column(String, doc="Every state change must carry it.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def table(model: type[Base]) -> Table:
    """A model's Core table, typed as such (what inserts, updates and column lists take)."""
    found = model.__table__
    assert isinstance(found, Table)
    return found
