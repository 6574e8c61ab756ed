"""dead_letters.key indexed: the key filter (`key = X OR conversation_id = X`, the console's key filter and
"Redeliver failed actions") scanned every dead letter; with both columns indexed SQLite and PostgreSQL read
the two indexes and join what they find (a multi-index OR, a BitmapOr). A hash index on PostgreSQL (see upgrade)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # an index alone, no table copy on SQLite (batch_alter_table would copy dead_letters with its values)
    # hash on PostgreSQL: a B-tree refuses a key over 2,704 bytes, and a key is whatever the producer sent
    op.create_index(op.f("ix_dead_letters_key"), "dead_letters", ["key"], unique=False, postgresql_using="hash")


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_key"), table_name="dead_letters")
