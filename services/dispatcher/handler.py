"""The dispatcher's handler: performs one action, once, and records how it ended.

Consumes: postcall.actions.<type>.v1 for every action type (and the dispatcher's retry tiers).
Produces: postcall.action-results.v1, one ActionCompleted per attempt outcome, on the same partition
number as the action's original input partition (that topic is the ledger). The topic is compacted, so
the key decides what survives: outcomes meaning done (delivered, published, skipped_duplicate) are keyed
by action_id; failed and dead_lettered ones by `<action_id>/attempt-<n>`, so a failure written after a
delivery (two copies of one action in flight on two replicas) never replaces the delivered record, and
every failed attempt stays readable for `postcall explain` until retention removes it.

    already in the ledger                 -> skipped_duplicate (the skip is recorded too)
    executor returned                     -> delivered | published
    RetryableError                        -> failed (this attempt), the runtime moves it to a retry tier
    PermanentError / retries exhausted    -> the runtime dead-letters it; dead_letter_emits -> dead_lettered
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from schemas.events import ActionBase, ActionCompleted
from schemas.topics import ACTION_RESULTS
from services.common.errors import PermanentError, RetryableError
from services.common.runtime import Emit, RecordContext
from services.dispatcher.delivery import AttemptDetails, Delivery
from services.dispatcher.executors import Executors
from services.dispatcher.ledger import DONE_OUTCOMES, Ledger
from services.dispatcher.metrics import NO_DESTINATION, deliveries

Outcome = Literal["delivered", "published", "failed", "skipped_duplicate", "dead_lettered"]


def ledger_partition(ctx: RecordContext) -> int:
    """The partition number of the action's first delivery (the runtime reads it off a retry tier's record)."""
    return ctx.original_partition if ctx.original_partition >= 0 else ctx.partition


def result(
    action: ActionBase,
    ctx: RecordContext,
    outcome: Outcome,
    *,
    topic: str = ACTION_RESULTS,
    destination: str | None = None,
    status_code: int | None = None,
    latency_ms: float | None = None,
    error: str | None = None,
) -> Emit:
    completed = ActionCompleted(
        action_id=action.action_id,
        conversation_id=action.conversation_id,
        type=action_type(action),
        destination=destination or action.destination,
        outcome=outcome,
        attempts=ctx.attempt,
        status_code=status_code,
        latency_ms=latency_ms,
        error=error,
        completed_at=datetime.now(UTC),
    )
    deliveries(completed.type, completed.destination or NO_DESTINATION, outcome).inc()
    return Emit(
        topic, completed, key=result_key(action.action_id, outcome, ctx.attempt), partition=ledger_partition(ctx)
    )


def result_key(action_id: str, outcome: Outcome, attempt: int) -> str:
    """The compaction key: one per action for done outcomes, one per attempt for the others."""
    return action_id if outcome in DONE_OUTCOMES else f"{action_id}/attempt-{attempt}"


def failed_result(
    action: ActionBase, ctx: RecordContext, exc: BaseException, outcome: Outcome, topic: str = ACTION_RESULTS
) -> Emit:
    details = exc if isinstance(exc, AttemptDetails) else AttemptDetails()
    return result(
        action,
        ctx,
        outcome,
        topic=topic,
        destination=details.destination,
        status_code=details.status_code,
        latency_ms=details.latency_ms,
        error=f"{type(exc).__name__}: {exc}"[:1000],
    )


class Dispatcher:
    def __init__(self, executors: Executors, ledger: Ledger, results_topic: str = ACTION_RESULTS) -> None:
        self._executors = executors
        self._ledger = ledger
        self._topic = results_topic

    async def __call__(self, action: ActionBase, ctx: RecordContext) -> list[Emit]:
        partition = ledger_partition(ctx)
        async with self._ledger.claim(action.action_id):
            if await self._ledger.is_done(partition, action.action_id):
                return [result(action, ctx, "skipped_duplicate", topic=self._topic)]
            try:
                delivery = await self._executors.run(action)
            except RetryableError as exc:
                # the attempt's own result, so every failed attempt shows in `postcall explain`
                exc.emit = (*exc.emit, failed_result(action, ctx, exc, "failed", self._topic))
                raise
            except PermanentError as exc:
                deliveries(action_type(action), _destination(exc, action), "failed").inc()
                raise
            self._ledger.record(partition, action.action_id)
        return [self._completed(action, ctx, delivery)]

    def dead_letter_emits(self, action: ActionBase, ctx: RecordContext, exc: BaseException) -> list[Emit]:
        """Lifecycle.dead_letter_emits: the dead-lettered outcome, on the ledger partition."""
        return [failed_result(action, ctx, exc, "dead_lettered", self._topic)]

    def _completed(self, action: ActionBase, ctx: RecordContext, delivery: Delivery) -> Emit:
        return result(
            action,
            ctx,
            delivery.outcome,
            topic=self._topic,
            destination=delivery.destination,
            status_code=delivery.status_code,
            latency_ms=delivery.latency_ms,
            error=delivery.note,
        )


def action_type(action: ActionBase) -> str:
    return str(getattr(action, "type", "unknown"))


def _destination(exc: BaseException, action: ActionBase) -> str:
    named = exc.destination if isinstance(exc, AttemptDetails) else None
    return named or action.destination or NO_DESTINATION
