"""The retention job: delete rows older than `retention_days`, in batches (short transactions, so that the
recorder keeps writing meanwhile). A conversation goes when it ended before the horizon, and the rows of the
call (CALL_ROWS: its extractions, decisions, actions and their attempts, requests, tasks, alerts and retries)
go with it, however recent: a call published or re-extracted long after it ended left those rows behind, out
of the list and /stats while its own page answered with no event. Then each table ages by its own time.
Dead letters and the per-flow counts age by their own time only.

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
from services.store.writer import CHUNK, horizon

# (table name, primary key, the time it ages by)
AGES_BY: tuple[
    tuple[str, InstrumentedAttribute[str] | InstrumentedAttribute[int], InstrumentedAttribute[datetime]], ...
] = (
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


#: the rows of a call, deleted with its conversation
CALL_ROWS = (Extraction, Decision, Action, Attempt, ActionRequest, Task, TeamAlert, ScheduledRetry)


async def prune(store: Store, retention_days: float, batch: int, now: datetime | None = None) -> dict[str, int]:
    """Rows deleted per table."""
    cutoff = horizon(retention_days, now)
    deleted = await _calls(store, cutoff, batch)
    for name, key, at in AGES_BY:
        total = deleted.get(name, 0)
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
        deleted["retries"] = deleted.get("retries", 0) + result.rowcount
    return deleted


async def _calls(store: Store, cutoff: datetime, batch: int) -> dict[str, int]:
    """The conversations that ended before `cutoff`, each with the rows of its call, `batch` calls a transaction."""
    deleted = {"conversations": 0} | {model.__tablename__: 0 for model in CALL_ROWS}
    while True:
        async with store.write() as conn:
            oldest = select(Conversation.conversation_id).where(Conversation.ended_at < cutoff).limit(batch)
            ids = list((await conn.execute(oldest)).scalars())
            # a bound parameter per id: asyncpg takes at most 32,767 in a statement, and a batch may be more
            for i in range(0, len(ids), CHUNK):
                chunk = ids[i : i + CHUNK]
                for model in CALL_ROWS:
                    result = await conn.execute(delete(model).where(model.conversation_id.in_(chunk)))
                    deleted[model.__tablename__] += result.rowcount
                await conn.execute(delete(Conversation).where(Conversation.conversation_id.in_(chunk)))
        deleted["conversations"] += len(ids)
        if len(ids) < batch:
            return deleted
