"""the id a receiver named for an attempt (an http action's result_id_pointer, a Sheets range, a Slack ts)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("result_id", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("attempts", "result_id")
