"""action requests, tasks and team alerts

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "action_requests",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_action_requests")),
    )
    op.create_index(op.f("ix_action_requests_conversation_id"), "action_requests", ["conversation_id"])
    op.create_index(op.f("ix_action_requests_requested_at"), "action_requests", ["requested_at"])
    op.create_table(
        "tasks",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("priority", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("assignee", sa.String(), nullable=True),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.Column("done_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_conversation_id"), "tasks", ["conversation_id"])
    op.create_index(op.f("ix_tasks_done_at_requested_at"), "tasks", ["done_at", "requested_at"])
    op.create_table(
        "team_alerts",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("everyone", sa.Boolean(), nullable=False),
        sa.Column("teammates", sa.Text(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_team_alerts")),
    )
    op.create_index(op.f("ix_team_alerts_conversation_id"), "team_alerts", ["conversation_id"])
    op.create_index(op.f("ix_team_alerts_requested_at"), "team_alerts", ["requested_at"])


def downgrade() -> None:
    for name in ("team_alerts", "tasks", "action_requests"):
        op.drop_table(name)
