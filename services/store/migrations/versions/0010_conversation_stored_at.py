"""conversations.stored_at: the store's time when a conversation's row was first written, so that the console
asks for calls by arrival in the store, not by end time (a call whose webhook or record came late, with an
end before the newest row shown, was never offered as new); the rows stored before take their received_at

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stored_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE conversations SET stored_at = received_at")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        # the store's time for rows a recorder of the version before inserts meanwhile (a rolling upgrade)
        batch_op.alter_column(
            "stored_at", existing_type=UTCDateTime(), nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_stored_at_conversation_id"), ["stored_at", "conversation_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversations_stored_at_conversation_id"))
        batch_op.drop_column("stored_at")
