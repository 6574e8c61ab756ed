"""The consumer runtime: a service is a typed handler; this module owns Kafka.

(Work in progress: the types below are the stable interface handlers are written against.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

In = TypeVar("In", bound=BaseModel, contravariant=True)


@dataclass(frozen=True)
class Emit:
    """One record a handler wants produced; the runtime produces it before committing the input."""

    topic: str
    value: BaseModel
    key: str | None = None  # None: the input record's key
    partition: int | None = None  # None: by key; set it to write on the input's partition number
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordContext:
    """What a handler may know about the record it handles (it never sees offsets to commit)."""

    service: str
    topic: str  # the topic the record was read from (a retry tier, or the main topic)
    original_topic: str  # the main topic it first arrived on
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    headers: Mapping[str, str]
    attempt: int = 1  # 1 on first delivery; +1 per retry tier


class Handler(Protocol[In]):
    """`async def __call__(event, ctx) -> outputs`; raise a services.common.errors error to decide fate."""

    async def __call__(self, event: In, ctx: RecordContext) -> Sequence[Emit]: ...


HandlerFn = Callable[[In, RecordContext], Awaitable[Sequence[Emit]]]


@dataclass
class Lifecycle(Generic[In]):
    """Optional hooks: restore state when partitions arrive; extra records when a record is dead-lettered."""

    on_assigned: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None
    on_revoked: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None
    dead_letter_emits: Callable[[In, RecordContext, BaseException], Sequence[Emit]] | None = None
