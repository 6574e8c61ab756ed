"""a replay claims its dead letters for a lease before sending them: two replays at once send each once

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replay_claimed_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("replay_claim", sa.String(), nullable=True))
        batch_op.create_index(batch_op.f("ix_dead_letters_replay_claim"), ["replay_claim"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_replay_claim"))
        batch_op.drop_column("replay_claim")
        batch_op.drop_column("replay_claimed_until")
