"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # substring search (LIKE '%...%') on conversations.search_text uses a trigram index;
        # pg_trgm is a trusted extension: the database owner may create it
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "actions",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("flow_id", sa.String(), nullable=True),
        sa.Column("destination", sa.String(), nullable=True),
        sa.Column("topic", sa.String(), nullable=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("final_outcome", sa.String(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_actions")),
    )
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_actions_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_actions_first_seen_at"), ["first_seen_at"], unique=False)

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_tokens_token_sha256")),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("action_id", "attempt", "outcome", name=op.f("uq_attempts_action_id_attempt_outcome")),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attempts_completed_at"), ["completed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_attempts_conversation_id"), ["conversation_id"], unique=False)

    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_at"), ["at"], unique=False)

    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("account_name", sa.Text(), nullable=True),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("agent_name", sa.Text(), nullable=True),
        sa.Column("agent_version", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.Column("ended_day", sa.String(length=10), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("end_reason", sa.String(), nullable=False),
        sa.Column("end_reason_raw", sa.Text(), nullable=True),
        sa.Column("source_platform", sa.String(), nullable=False),
        sa.Column("customer_name", sa.Text(), nullable=True),
        sa.Column("customer_phone", sa.Text(), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("extraction_status", sa.String(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("flows_fired", sa.Integer(), server_default="0", nullable=False),
        sa.Column("actions_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("actions_delivered", sa.Integer(), server_default="0", nullable=False),
        sa.Column("actions_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("actions_dead_lettered", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dead_letters", sa.Integer(), server_default="0", nullable=False),
        sa.Column("has_failure", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_usd", sa.Float(), server_default="0", nullable=False),
        sa.Column("search_text", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversations_agent_id_ended_at_conversation_id"),
            ["agent_id", "ended_at", "conversation_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_end_reason_ended_at_conversation_id"),
            ["end_reason", "ended_at", "conversation_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_ended_at_conversation_id"), ["ended_at", "conversation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_extraction_status_ended_at"), ["extraction_status", "ended_at"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_failure",
            ["ended_at"],
            unique=False,
            postgresql_where=sa.text("has_failure"),
            sqlite_where=sa.text("has_failure"),
        )
        batch_op.create_index(
            "ix_conversations_review",
            ["ended_at"],
            unique=False,
            postgresql_where=sa.text("needs_review"),
            sqlite_where=sa.text("needs_review"),
        )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kafka_topic", sa.String(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("original_topic", sa.String(), nullable=True),
        sa.Column("original_partition", sa.Integer(), nullable=True),
        sa.Column("original_offset", sa.BigInteger(), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.String(), nullable=True),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("exception_class", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("first_failure_at", UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("dead_lettered_at", UTCDateTime(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("replayed_at", UTCDateTime(), nullable=True),
        sa.Column("replayed_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint(
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            name=op.f("uq_dead_letters_kafka_topic_kafka_partition_kafka_offset"),
        ),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dead_letters_dead_lettered_at_id"), ["dead_lettered_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dead_letters_service_dead_lettered_at"), ["service", "dead_lettered_at"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_conversations_search_text_trgm ON conversations USING gin (search_text gin_trgm_ops)"
        )
    op.create_table(
        "decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kafka_topic", sa.String(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("agent_version", sa.String(), nullable=True),
        sa.Column("config_revision", sa.String(), nullable=False),
        sa.Column("extraction_status", sa.String(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("flows_fired", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint(
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            name=op.f("uq_decisions_kafka_topic_kafka_partition_kafka_offset"),
        ),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decisions_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_decisions_decided_at"), ["decided_at"], unique=False)

    op.create_table(
        "extractions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kafka_topic", sa.String(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("extracted_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("config_revision", sa.String(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("reextract_of", sa.String(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extractions")),
        sa.UniqueConstraint(
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            name=op.f("uq_extractions_kafka_topic_kafka_partition_kafka_offset"),
        ),
    )
    with op.batch_alter_table("extractions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extractions_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_extractions_extracted_at"), ["extracted_at"], unique=False)

    op.create_table(
        "retries",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("action_id", "attempt", name=op.f("pk_retries")),
    )
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retries_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_retries_due_at"), ["due_at"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_conversations_search_text_trgm")
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retries_due_at"))
        batch_op.drop_index(batch_op.f("ix_retries_conversation_id"))

    op.drop_table("retries")
    with op.batch_alter_table("extractions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extractions_extracted_at"))
        batch_op.drop_index(batch_op.f("ix_extractions_conversation_id"))

    op.drop_table("extractions")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_decided_at"))
        batch_op.drop_index(batch_op.f("ix_decisions_conversation_id"))

    op.drop_table("decisions")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_service_dead_lettered_at"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_dead_lettered_at_id"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_conversation_id"))

    op.drop_table("dead_letters")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_conversations_review", postgresql_where=sa.text("needs_review"), sqlite_where=sa.text("needs_review")
        )
        batch_op.drop_index(
            "ix_conversations_failure", postgresql_where=sa.text("has_failure"), sqlite_where=sa.text("has_failure")
        )
        batch_op.drop_index(batch_op.f("ix_conversations_extraction_status_ended_at"))
        batch_op.drop_index(batch_op.f("ix_conversations_ended_at_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_conversations_end_reason_ended_at_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_conversations_agent_id_ended_at_conversation_id"))

    op.drop_table("conversations")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_at"))

    op.drop_table("audit")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempts_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_attempts_completed_at"))

    op.drop_table("attempts")
    op.drop_table("api_tokens")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_actions_first_seen_at"))
        batch_op.drop_index(batch_op.f("ix_actions_conversation_id"))

    op.drop_table("actions")
