"""search_text lower-cased beyond ASCII: SQLite's own lower() left "Émile" as it was; the store now gives
SQLite a Unicode lower() (services/store/db.py), and the text stored before is folded with it

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE conversations SET search_text = lower(search_text) WHERE search_text <> lower(search_text)")


def downgrade() -> None:
    """Nothing to undo: lower-cased text is what the column holds."""
