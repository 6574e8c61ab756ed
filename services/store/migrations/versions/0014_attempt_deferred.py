"""attempts.deferred: a deferral (an attempt the dispatcher did not make: a rate limit or waiting room was full,
recorded `failed` with a `Deferred:` error) and a real failure of the same attempt number are two rows; before,
attempts were unique by (action_id, attempt, outcome), and the real failure that followed a deferral (its retry
comes back under the same attempt number) was dropped as a copy, so the timeline never showed it

Revision ID: 0014
Revises: 0013

Scans attempts once (the deferrals stored so far are marked) and rebuilds its unique index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = ("action_id", "attempt", "outcome")
NEW_KEY = (*OLD_KEY, "deferred")

attempts = sa.table(
    "attempts",
    sa.column("outcome", sa.String),
    sa.column("error", sa.Text),
    sa.column("deferred", sa.Boolean),
)


def upgrade() -> None:
    # a default: the rows of a recorder of the version before this one (a rolling upgrade) are real attempts
    op.add_column("attempts", sa.Column("deferred", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        attempts.update()
        .where(attempts.c.outcome == "failed", attempts.c.error.like("Deferred:%"))
        .values(deferred=True)
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_attempts_action_id_attempt_outcome", type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_attempts_action_id_attempt_outcome_deferred"), list(NEW_KEY))


def downgrade() -> None:
    # a deferral stored beside a real failure of the same attempt goes (the old key holds one of them): the
    # destination's answer is kept
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "DELETE FROM attempts WHERE deferred AND EXISTS (SELECT 1 FROM attempts AS o WHERE "
            "o.action_id = attempts.action_id AND o.attempt = attempts.attempt AND "
            "o.outcome = attempts.outcome AND NOT o.deferred)"
        )
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_attempts_action_id_attempt_outcome_deferred", type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_attempts_action_id_attempt_outcome"), list(OLD_KEY))
        batch_op.drop_column("deferred")
