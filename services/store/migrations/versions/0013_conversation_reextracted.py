"""conversations.reextracted_at and reextracted_by: when and by whom a conversation was last sent for
extraction again from the store, so that the console's Re-extract acts on the call as its page showed it (a
second click after the first re-extraction was sent, or a second tab, sent it again: an LLM call each)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # two nullable columns without a default: no table copy on SQLite, no rewrite on PostgreSQL
    op.add_column("conversations", sa.Column("reextracted_at", UTCDateTime(), nullable=True))
    op.add_column("conversations", sa.Column("reextracted_by", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("reextracted_by")
        batch_op.drop_column("reextracted_at")
