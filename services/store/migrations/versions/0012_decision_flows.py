"""decision_flows: one row per flow of each decision trace (whether it fired), written by the recorder
beside the trace, so that the console's agents page counts fires per flow in SQL instead of reading and
parsing up to 20,000 traces per configuration file a view; filled here from the stored traces

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from alembic import op

from services.store.models import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
# the agents page counts the last 7 days (services/console/agents.py WINDOW): older traces are not read for
# their flows, so filling them would only make the first start after the upgrade (migrate_on_start) longer
# than its probes allow on a store of a year of calls
FILL_DAYS = 8


def upgrade() -> None:
    flows = op.create_table(
        "decision_flows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("extraction_status", sa.String(), nullable=False),
        sa.Column("flows_held", sa.Integer(), nullable=False),
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("agent_version", sa.String(), nullable=True),
        sa.Column("config_revision", sa.String(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("fired", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_flows")),
        sa.UniqueConstraint(
            "event_id",
            "extraction_status",
            "flows_held",
            "flow_id",
            name=op.f("uq_decision_flows_event_id_extraction_status_flows_held_flow_id"),
        ),
    )
    op.create_index(
        op.f("ix_decision_flows_agent_id_config_revision_decided_at"),
        "decision_flows",
        ["agent_id", "config_revision", "decided_at"],
    )
    op.create_index(op.f("ix_decision_flows_decided_at"), "decision_flows", ["decided_at"])
    assert flows is not None
    _fill(op.get_bind(), flows)


def _fill(conn: sa.Connection, flows: sa.Table) -> None:
    """A row per flow of every trace of the last FILL_DAYS, a batch at a time (a trace is kilobytes of JSON)."""
    keys = ("event_id", "extraction_status", "flows_held", "agent_id", "agent_version", "config_revision")
    d = sa.table(
        "decisions",
        sa.column("id", sa.BigInteger()),
        *(sa.column(k) for k in keys),
        sa.column("decided_at", UTCDateTime()),
        sa.column("payload", sa.Text()),
    )
    since = datetime.now(UTC) - timedelta(days=FILL_DAYS)
    last = -1
    while True:
        query = sa.select(d).where(d.c.id > last, d.c.decided_at >= since).order_by(d.c.id).limit(BATCH)
        batch = conn.execute(query).all()
        if not batch:
            return
        last = batch[-1].id
        rows = [
            {**{k: getattr(r, k) for k in keys}, "decided_at": r.decided_at, "flow_id": f["flow_id"],
             "fired": bool(f.get("fired"))}
            for r in batch
            for f in orjson.loads(r.payload).get("flows", [])
        ]  # fmt: skip
        if rows:
            conn.execute(sa.insert(flows), rows)


def downgrade() -> None:
    op.drop_index(op.f("ix_decision_flows_decided_at"), table_name="decision_flows")
    op.drop_index(op.f("ix_decision_flows_agent_id_config_revision_decided_at"), table_name="decision_flows")
    op.drop_table("decision_flows")
