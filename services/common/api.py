"""What a service's code sees of the runtime: events in, events out, a context, a failure hook, errors.

    from services.common.api import Context, Failure, PermanentError, Service

    async def handle(event: ConversationExtracted, ctx: Context) -> Sequence[Event]:
        ...                                   # return events; raise an error to decide the record's fate

    def on_failure(event: ConversationExtracted, ctx: Context, failure: Failure) -> Sequence[Event]:
        ...                                   # what a failed record additionally produces (often nothing)

    SERVICE = Service(ROUTER, handle, on_failure)  # schemas.routes.ROUTER says where each event goes

Nothing here is Kafka: topics, keys, partitions, headers, offsets, commits, producers and retry tiers
are the route's and the runtime's business (services.common.runtime on a broker,
services.common.harness in memory for unit tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from schemas import headers as h
from schemas.routes import Route
from services.common.errors import (
    Deferred,
    DependencyUnavailable,
    InvalidRecord,
    PermanentError,
    PostcallError,
    RetryableError,
    classify_http_status,
)

__all__ = [
    "Context",
    "Deferred",
    "DependencyUnavailable",
    "Event",
    "Failure",
    "FailureHook",
    "Handler",
    "InvalidRecord",
    "PartitionsHook",
    "PermanentError",
    "PostcallError",
    "RetryableError",
    "Service",
    "classify_http_status",
]

#: An event is a pydantic model of schemas/events.py (or any model a route declares).
Event = BaseModel
E = TypeVar("E")
Fate = Literal["retry", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler may know about the record it handles. `topic`, `partition`, `offset` and
    `timestamp_ms` say where the record first arrived, also when this attempt comes from a retry tier or
    from the service's private replay topic (schemas.routes.Route.private_replay): state kept per input
    partition (the dispatcher's ledger) is keyed by `partition`."""

    service: str
    topic: str
    partition: int = 0
    offset: int = 0
    key: str | None = None
    timestamp_ms: int = 0
    attempt: int = 1  # 1 on first delivery; +1 per retry tier
    #: the input's headers without the runtime's hop headers (CloudEvents, replay and re-extraction)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: every header as read, hop headers included: a consumer of another service's dead letters or
    #: retry tiers (the recorder) reads their context (x-dlq-*, x-retry-*) from them. Not on a private
    #: replay's copy: its hop headers are the replay's, not the record's
    raw_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str | None:
        """The input record's CloudEvents id (a re-extraction's copy has a fresh one)."""
        return self.headers.get(h.CE_ID)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt, as the failure hook sees it: the error, and where the record goes now."""

    error: BaseException
    fate: Fate  # retry: a retry tier (the attempt counted, or deferred); dead_letter: the dead-letter topic
    category: str  # the dead-letter category (poison, permanent, retryable-exhausted) or "retry"


#: `async def handle(event, ctx) -> Sequence[Event]`; where each event goes is the route's business.
Handler = Callable[[E, Context], Awaitable[Sequence[Event]]]
#: `def on_failure(event, ctx, failure) -> Sequence[Event]`: produced with the retry copy or the dead
#: letter, in the same step (the input is committed only after all of them are acknowledged). Not
#: called for poison records (there is no event) nor for DependencyUnavailable (retried in place).
FailureHook = Callable[[E, Context, Failure], Sequence[Event]]
#: called with the (topic, partition) pairs assigned to or revoked from this instance
PartitionsHook = Callable[[list[tuple[str, int]]], Awaitable[None]]


@dataclass(frozen=True)
class Service(Generic[E]):
    """A route bound to its code: what the runtime (or the harness) runs."""

    route: Route
    handle: Handler[E]
    on_failure: FailureHook[E] | None = None
    on_assigned: PartitionsHook | None = None  # restore state before the partitions' records are handled
    on_revoked: PartitionsHook | None = None
    version: str = "0.1.0"
    #: How many more records the service takes now (its backpressure), asked before each poll: 0 stops
    #: fetching, as a full window does, until it is above 0 again; otherwise the runtime takes at most that
    #: many and lets their handlers start before it asks again (the records it holds are not affected)
    capacity: Callable[[], int] | None = None
