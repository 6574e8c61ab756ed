"""a revoked token's name may be given to its replacement: one active token per name, not one ever

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "revoked_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint("uq_api_tokens_name", type_="unique")
        batch_op.create_index(
            "uq_api_tokens_active_name",
            ["name"],
            unique=True,
            postgresql_where=sa.text(ACTIVE),
            sqlite_where=sa.text(ACTIVE),
        )


def downgrade() -> None:
    """Fails while two tokens share a name (a revoked one and its replacement): revoke or rename first."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("uq_api_tokens_active_name")
        batch_op.create_unique_constraint("uq_api_tokens_name", ["name"])
