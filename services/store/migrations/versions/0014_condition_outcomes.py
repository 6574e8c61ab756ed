"""condition_outcomes: the flows' condition outcomes that decision traces name by ref (FlowDecision.conditions_ref,
from postcall.condition-outcomes.v1) instead of copying them into every trace; the store's queries put them
back as they read a trace. Nothing to fill: the traces stored before hold their conditions themselves

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "condition_outcomes",
        sa.Column("ref", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("config_revision", sa.String(), nullable=False),
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("flow_revision", sa.String(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_condition_outcomes")),
    )


def downgrade() -> None:
    op.drop_table("condition_outcomes")
