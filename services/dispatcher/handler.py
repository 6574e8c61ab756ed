"""The dispatcher's handler: performs one action, once, and records how it ended.

Consumes: postcall.actions.<type>.v1 for every action type (and the dispatcher's retry tiers).
Produces: postcall.action-results.v1, one ActionCompleted per attempt outcome, on the same partition
number as the action's original input partition (that topic is the ledger; schemas.routes.DISPATCHER
declares it). The topic is compacted, so the key decides what survives: outcomes meaning done
(delivered, published, skipped_duplicate) are keyed by action_id; failed and dead_lettered ones by
`<action_id>/attempt-<n>`, so a failure written after a delivery (two copies of one action in flight on
two replicas) never replaces the delivered record, and every failed attempt stays readable for
`postcall explain` until retention removes it.

    already in the ledger                 -> skipped_duplicate (the skip is recorded too)
    supersedes an action whose last delivered content is the same
                                          -> skipped_duplicate ("content unchanged"): a re-delivery sends
                                             only what changed (postcall reextract --redeliver)
    a correction written before one of the same action that was delivered (its retry came after it)
                                          -> skipped_duplicate ("a newer correction"): the receiver's
                                             upsert keeps the newer content
    executor returned                     -> delivered | published, with the action's content digest (its
                                             own, else computed here: the router writes one only on a
                                             re-delivery), which the ledger keeps as its last content
    a failure with retries left           -> on_failure: failed (this attempt); the runtime retries it
    not attempted (Deferred: rate limit, full room)
                                          -> on_failure: failed with the Deferred reason, counted as
                                             `deferred` in postcall_deliveries_total, not as a failure
    PermanentError / retries exhausted    -> on_failure: dead_lettered; the runtime dead-letters it
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from schemas.content import content_digest
from schemas.events import ActionBase, ActionCompleted
from schemas.routes import DISPATCHER
from services.common.api import Context, Deferred, Event, Failure, Service
from services.dispatcher.delivery import AttemptDetails, Delivery
from services.dispatcher.executors import Executors
from services.dispatcher.ledger import Ledger
from services.dispatcher.limits import Pressure
from services.dispatcher.metrics import NO_DESTINATION, deliveries

Outcome = Literal["delivered", "published", "failed", "skipped_duplicate", "dead_lettered"]


def result(
    action: ActionBase,
    ctx: Context,
    outcome: Outcome,
    *,
    destination: str | None = None,
    status_code: int | None = None,
    latency_ms: float | None = None,
    error: str | None = None,
    response_excerpt: str | None = None,
    result_id: str | None = None,
    counted_as: str | None = None,
    digest: str | None = None,
    says_content: bool = True,
) -> ActionCompleted:
    """`digest`: the content digest computed here (content_of); else the action's own, if it has one.
    `says_content` False: the result carries no digest, so the ledger never reads it as content sent."""
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
        response_excerpt=response_excerpt,
        result_id=result_id,
        supersedes=action.supersedes,
        content_digest=(digest or action.content_digest) if says_content else None,
        completed_at=datetime.now(UTC),
        requested_at=action.requested_at,
    )
    deliveries(completed.type, completed.destination or NO_DESTINATION, counted_as or outcome).inc()
    return completed


def failed_result(
    action: ActionBase, ctx: Context, exc: BaseException, outcome: Outcome, counted_as: str | None = None
) -> ActionCompleted:
    details = exc if isinstance(exc, AttemptDetails) else AttemptDetails()
    return result(
        action,
        ctx,
        outcome,
        counted_as=counted_as,
        destination=details.destination,
        status_code=details.status_code,
        latency_ms=details.latency_ms,
        error=f"{type(exc).__name__}: {exc}"[:1000],
    )


class Dispatcher:
    def __init__(self, executors: Executors, ledger: Ledger, pressure: Pressure | None = None) -> None:
        """`pressure`: the registry's (a destination has records in its line, or many records are on
        their way to a gate); this handler counts the records it holds."""
        self._executors = executors
        self._ledger = ledger
        self._pressure = pressure

    def service(self) -> Service[ActionBase]:
        # no on_revoked: the ledger keeps a revoked partition's set and catches it up if it comes back
        return Service(
            DISPATCHER,
            self.handle,
            self.on_failure,
            on_assigned=self._ledger.restore,
            capacity=None if self._pressure is None else self._pressure.capacity,
        )

    async def handle(self, action: ActionBase, ctx: Context) -> Sequence[Event]:
        if self._pressure is None:
            return await self._handle(action, ctx)
        self._pressure.handling += 1
        try:
            return await self._handle(action, ctx)
        finally:
            self._pressure.handling -= 1

    async def _handle(self, action: ActionBase, ctx: Context) -> Sequence[Event]:
        # one action's deliveries take turns, its corrections' included: checked beside one in flight, a
        # correction would be sent beside it and the later answer would decide what the receiver keeps
        async with self._ledger.claim(action.supersedes or action.action_id):
            # ctx.partition is where the action first arrived, also for a retry tier's copy
            if skipped := await self._skip(action, ctx):
                return [skipped]
            # a failure is counted by on_failure, with the outcome its result says (failed or dead_lettered)
            delivery = await self._executors.run(action)
            digest = content_of(action)
            self._ledger.record(ctx.partition, action.action_id, action.supersedes, digest, action.requested_at)
        return [self._completed(action, ctx, delivery, digest)]

    async def _skip(self, action: ActionBase, ctx: Context) -> ActionCompleted | None:
        """skipped_duplicate when the action is done already, or, for a re-delivery, when the content last
        delivered for the action it supersedes is this content, or came from a correction written after
        this one (this one's retry came after it: sent now, it would overwrite newer content)."""
        if action.supersedes is None:
            done = await self._ledger.is_done(ctx.partition, action.action_id)
            return result(action, ctx, "skipped_duplicate") if done else None
        await self._ledger.catch_up(ctx.partition)
        digest = content_of(action)
        last = self._ledger.last_delivered(action.supersedes)
        if last is None:  # nothing delivered for it yet
            return None
        last_digest, newest = last
        if last_digest == digest:
            unchanged = f"content unchanged since the last delivery for {action.supersedes}"
            return result(action, ctx, "skipped_duplicate", error=unchanged, digest=digest)
        if newest is not None and action.requested_at.timestamp() < newest:
            newer = f"a newer correction of {action.supersedes} was delivered"
            return result(action, ctx, "skipped_duplicate", error=newer, says_content=False)
        return None

    def on_failure(self, action: ActionBase, ctx: Context, failure: Failure) -> Sequence[Event]:
        """Every failed attempt is recorded (`failed`), and so is the dead letter (`dead_lettered`). A record
        not attempted (Deferred: the destination's rate limit or waiting room was full) is recorded as
        `failed` with its reason, as the contract's outcomes have it, but counted as `deferred`: a healthy
        destination under its rate limit does not raise the failure count."""
        if failure.fate == "retry":
            counted_as = "deferred" if isinstance(failure.error, Deferred) else None
            return [failed_result(action, ctx, failure.error, "failed", counted_as)]
        return [failed_result(action, ctx, failure.error, "dead_lettered")]

    def _completed(self, action: ActionBase, ctx: Context, delivery: Delivery, digest: str) -> ActionCompleted:
        return result(
            action,
            ctx,
            delivery.outcome,
            digest=digest,
            destination=delivery.destination,
            status_code=delivery.status_code,
            latency_ms=delivery.latency_ms,
            error=delivery.note,
            response_excerpt=delivery.response_excerpt,
            result_id=delivery.result_id,
        )


def content_of(action: ActionBase) -> str:
    """The action's content digest: the one it carries, else computed from its content (schemas.content)."""
    return action.content_digest or content_digest(action)


def action_type(action: ActionBase) -> str:
    return str(getattr(action, "type", "unknown"))
