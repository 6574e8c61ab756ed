"""The retention job: delete rows older than `retention_days`, each table by its own time, in batches
(short transactions, so that the recorder keeps writing meanwhile).

The recorder runs it every `prune_interval_seconds`; `postcall store prune` runs it once. The recorder
also skips records older than the horizon, so re-reading a topic never brings pruned rows back.
The audit table is kept: who did what is not subject to the data's retention.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import InstrumentedAttribute

from services.store.db import Store
from services.store.models import (
    Action,
    ActionRequest,
    Attempt,
    Conversation,
    DeadLetter,
    Decision,
    DecisionFlow,
    Extraction,
    ScheduledRetry,
    Task,
    TeamAlert,
)
from services.store.writer import horizon

# (table name, primary key, the time it ages by)
AGES_BY: tuple[
    tuple[str, InstrumentedAttribute[str] | InstrumentedAttribute[int], InstrumentedAttribute[datetime]], ...
] = (
    ("conversations", Conversation.conversation_id, Conversation.ended_at),
    ("extractions", Extraction.id, Extraction.extracted_at),
    ("decisions", Decision.id, Decision.decided_at),
    ("decision_flows", DecisionFlow.id, DecisionFlow.decided_at),
    ("actions", Action.action_id, Action.first_seen_at),
    ("attempts", Attempt.id, Attempt.completed_at),
    ("dead_letters", DeadLetter.id, DeadLetter.dead_lettered_at),
    ("action_requests", ActionRequest.action_id, ActionRequest.requested_at),
    ("tasks", Task.action_id, Task.requested_at),
    ("team_alerts", TeamAlert.action_id, TeamAlert.requested_at),
)


async def prune(store: Store, retention_days: float, batch: int, now: datetime | None = None) -> dict[str, int]:
    """Rows deleted per table."""
    cutoff = horizon(retention_days, now)
    deleted: dict[str, int] = {}
    for name, key, at in AGES_BY:
        total = 0
        while True:
            async with store.write() as conn:
                oldest = select(key).where(at < cutoff).limit(batch).scalar_subquery()
                result = await conn.execute(delete(key.class_).where(key.in_(oldest)))
            total += result.rowcount
            if result.rowcount < batch:
                break
        deleted[name] = total
    async with store.write() as conn:
        result = await conn.execute(delete(ScheduledRetry).where(ScheduledRetry.due_at < cutoff))
        deleted["retries"] = result.rowcount
    return deleted
