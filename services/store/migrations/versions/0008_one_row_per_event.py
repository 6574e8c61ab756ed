"""an event produced again after a crash is one row: extractions are unique by (event_id, status), decisions by
(event_id, extraction_status, flows_held); the copies already stored are removed (the first one is kept) and
their conversations' summaries (tokens, cost, newest extraction, flows fired) recomputed

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 500
EXTRACTION_KEY = ("event_id", "status")
DECISION_KEY = ("event_id", "extraction_status", "flows_held")

extractions = sa.table(
    "extractions",
    sa.column("id", sa.Integer),
    sa.column("conversation_id", sa.String),
    sa.column("event_id", sa.String),
    sa.column("status", sa.String),
    sa.column("extracted_at", sa.String),
    sa.column("summary", sa.Text),
    sa.column("needs_review", sa.Boolean),
    sa.column("prompt_tokens", sa.BigInteger),
    sa.column("completion_tokens", sa.BigInteger),
    sa.column("cost_usd", sa.Float),
)
decisions = sa.table(
    "decisions",
    sa.column("id", sa.Integer),
    sa.column("conversation_id", sa.String),
    sa.column("event_id", sa.String),
    sa.column("extraction_status", sa.String),
    sa.column("flows_held", sa.Integer),
    sa.column("decided_at", sa.String),
    sa.column("flows_fired", sa.Integer),
    sa.column("payload", sa.Text),
)
conversations = sa.table(
    "conversations",
    sa.column("conversation_id", sa.String),
    sa.column("customer_name", sa.Text),
    sa.column("customer_phone", sa.Text),
    sa.column("customer_email", sa.Text),
    sa.column("extraction_status", sa.String),
    sa.column("summary", sa.Text),
    sa.column("needs_review", sa.Boolean),
    sa.column("prompt_tokens", sa.BigInteger),
    sa.column("completion_tokens", sa.BigInteger),
    sa.column("cost_usd", sa.Float),
    sa.column("flows_fired", sa.Integer),
    sa.column("search_text", sa.Text),
)


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("decisions", sa.Column("flows_held", sa.Integer(), server_default="0", nullable=False))
    _count_held_flows(bind)
    touched = _remove_copies(bind, extractions, EXTRACTION_KEY) | _remove_copies(bind, decisions, DECISION_KEY)
    with op.batch_alter_table("extractions", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_extractions_event_id_status"), list(EXTRACTION_KEY))
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_decisions_event_id_extraction_status_flows_held"), list(DECISION_KEY)
        )
    _summarise(bind, touched)


def downgrade() -> None:
    """The copies removed by the upgrade are not brought back."""
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_decisions_event_id_extraction_status_flows_held", type_="unique")
        batch_op.drop_column("flows_held")
    with op.batch_alter_table("extractions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_extractions_event_id_status", type_="unique")


def _count_held_flows(bind: sa.Connection) -> None:
    """flows_held of the traces stored so far, from their JSON (compact: a held flow says "held":true)."""
    last = -1
    while True:
        page = bind.execute(
            sa.select(decisions.c.id, decisions.c.payload)
            .where(decisions.c.id > last, decisions.c.payload.like('%"held":true%'))
            .order_by(decisions.c.id)
            .limit(CHUNK)
        ).all()
        if not page:
            return
        counts = [{"b_id": i, "b_held": _held(payload)} for i, payload in page]
        bind.execute(
            sa.update(decisions)
            .where(decisions.c.id == sa.bindparam("b_id"))
            .values(flows_held=sa.bindparam("b_held")),
            counts,
        )
        last = page[-1][0]


def _held(payload: str) -> int:
    try:
        flows = orjson.loads(payload).get("flows")
        return sum(1 for f in flows if isinstance(f, dict) and f.get("held") is True)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return 0


def _remove_copies(bind: sa.Connection, t: sa.TableClause, key: Sequence[str]) -> set[str]:
    """Every row after the first (lowest id) of its key; returns their conversations."""
    n = sa.func.row_number().over(partition_by=[t.c[k] for k in key], order_by=t.c.id).label("n")
    ranked = sa.select(t.c.id, t.c.conversation_id, n).subquery()
    copies = bind.execute(sa.select(ranked.c.id, ranked.c.conversation_id).where(ranked.c.n > 1)).all()
    ids = [row[0] for row in copies]
    for i in range(0, len(ids), CHUNK):
        bind.execute(sa.delete(t).where(t.c.id.in_(ids[i : i + CHUNK])))
    return {row[1] for row in copies}


def _summarise(bind: sa.Connection, conversation_ids: Iterable[str]) -> None:
    """The summary columns the removed rows counted in, as the writer computes them (services/store/writer.py)."""
    c, x, d = conversations.c, extractions.c, decisions.c
    mine = x.conversation_id == c.conversation_id

    def newest(column: sa.ColumnClause[object]) -> sa.ScalarSelect[object]:
        return sa.select(column).where(mine).order_by(x.extracted_at.desc(), x.id.desc()).limit(1).scalar_subquery()

    def total(column: sa.ColumnClause[object]) -> sa.ColumnElement[object]:
        return sa.func.coalesce(sa.select(sa.func.sum(column)).where(mine).scalar_subquery(), 0)

    summary = newest(x.summary)
    search = sa.func.lower(
        sa.func.coalesce(summary, "")
        + " "
        + sa.func.coalesce(c.customer_name, "")
        + " "
        + sa.func.coalesce(c.customer_phone, "")
        + " "
        + sa.func.coalesce(c.customer_email, "")
    )
    fired = (
        sa.select(d.flows_fired)
        .where(d.conversation_id == c.conversation_id)
        .order_by(d.decided_at.desc(), d.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    values = {
        "extraction_status": newest(x.status),
        "summary": summary,
        "needs_review": sa.func.coalesce(newest(x.needs_review), sa.false()),
        "prompt_tokens": total(x.prompt_tokens),
        "completion_tokens": total(x.completion_tokens),
        "cost_usd": total(x.cost_usd),
        "flows_fired": sa.func.coalesce(fired, 0),
        "search_text": sa.func.trim(search),
    }
    ids = sorted(conversation_ids)
    for i in range(0, len(ids), CHUNK):
        bind.execute(sa.update(conversations).where(c.conversation_id.in_(ids[i : i + CHUNK])).values(values))
