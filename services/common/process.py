"""What one record becomes: decoded, handled, and turned into the records to produce.

The Kafka runtime (services.common.runtime) and the in-memory harness (services.common.harness) run
every record through this module, so the harness proves the same decisions the broker carries out:

    ok              the handler's events, each routed by the route (topic, key, partition, ce_type)
    retry           a copy of the input on retry tier N with a due time, plus the failure hook's events
    dead letter     the input, byte for byte, on the dead-letter topic, plus the failure hook's events

A retryable failure on attempt N goes to tier N (a later one when the remote's Retry-After is longer
than tier N's delay); after the last tier, or on a permanent error, to the dead-letter topic. Hop
headers of an earlier hop are replaced, not repeated, so records do not grow. A copy on one of the
service's own topics (a retry tier, or its private replay topic) is handled as if read where it first
arrived (its x-original-* headers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import headers as h
from services.common import codec, observability
from services.common.api import Context, Event, Failure, Service
from services.common.codec import Outgoing
from services.common.errors import (
    Deferred,
    InvalidRecord,
    PermanentError,
    RetryableError,
    UndeclaredEvent,
)
from services.common.settings import RuntimeSettings

log = logging.getLogger("postcall.runtime")

MAX_MESSAGE = 1000


@dataclass
class Verdict:
    """A failed record's fate and the records that carry it out (to produce before committing)."""

    fate: Literal["retry", "dead_letter"]
    records: list[Outgoing]
    error: BaseException
    tier: int = 0
    delay: float = 0.0
    extra: list[Outgoing] = field(default_factory=list)  # the failure hook's outputs, also in records


class Processor:
    """One service's record logic: contexts, decoding, the handler call, routing and failure fates."""

    def __init__(self, service: Service[Any], settings: RuntimeSettings, group_id: str) -> None:
        route = service.route
        route.check(settings.retry_delays_seconds, settings.retry_jitter)
        self.service, self.route, self.settings, self.group_id = service, route, settings, group_id
        self.name = route.service
        # the tiers failures go to; settings may use fewer than the route declares
        self.retry_topics = route.retry_topics[: len(settings.retry_delays_seconds)]
        # the tiers read: every one the route declares, for a tier no longer written may still hold copies
        # (written before the settings dropped it) that nothing else would ever read
        self.tier_topics = route.retry_topics
        self._retry_set = frozenset(self.tier_topics)
        # its own topics, whose copies say where they first arrived: the retry tiers and its private replay topic
        self.replay_topics = route.replay_topics
        self._replay_set = frozenset(self.replay_topics)
        self._own_set = self._retry_set | self._replay_set
        # the longest a copy can wait in each tier: its delay with the most jitter (Retry-After never exceeds
        # it); in a tier the settings no longer use, the route's delay for it
        delays = [*settings.retry_delays_seconds, *route.retry_delays_seconds[len(settings.retry_delays_seconds) :]]
        self.tier_waits = {t: d * (1 + settings.retry_jitter) for t, d in zip(self.tier_topics, delays, strict=True)}
        self.dead_letter_topic = route.dead_letter_topic
        self._decoders = {s.topic: codec.decoder(s.model) for s in route.consumes}
        self._handler_seconds = observability.HANDLER_DURATION.labels(self.name)
        # per event class: (topic, its constant CloudEvents headers, the field holding its ce_id, the key
        # function or None for the input's key, partition by input)
        self._plans = {
            o.stream.model: (o.stream.topic, codec.cloudevent_constant(o.stream.ce_type, self.name),
                             codec.ce_id_field(o.stream.model), o.stream.key if o.key == "event" else None,
                             o.partition == "input")
            for o in route.produces
        }  # fmt: skip

    def is_retry_topic(self, topic: str) -> bool:
        return topic in self._retry_set

    def context(self, record: Any, headers: Mapping[str, str]) -> Context:
        """Hop headers are only trusted on our own retry tiers and replay topic, and parsed defensively:
        anyone can produce a record with an `x-attempts: abc` header to a main topic. A replay's copy is a
        first attempt again, and its hop headers are the replay's, not the record's: `raw_headers` leaves
        them out (a dead letter stored from it does not claim to have first arrived on its own topic)."""
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        own = _without_hops(headers)
        if record.topic not in self._own_set:  # a first attempt: where it is now is where it arrived
            return new_context(
                self.name, record.topic, record.partition, record.offset, key, record.timestamp, 1, own, headers
            )
        replayed = record.topic in self._replay_set
        return Context(
            service=self.name,
            topic=headers.get(h.ORIGINAL_TOPIC) or record.topic,
            partition=_int(headers.get(h.ORIGINAL_PARTITION), record.partition),
            offset=_int(headers.get(h.ORIGINAL_OFFSET), record.offset),
            key=key,
            timestamp_ms=_int(headers.get(h.ORIGINAL_TIMESTAMP), record.timestamp),
            attempt=1 if replayed else max(0, _int(headers.get(h.ATTEMPTS), 0)) + 1,
            headers=own,
            raw_headers=own if replayed else headers,
        )

    def decode(self, record: Any, ctx: Context) -> Any:
        decoder = self._decoders.get(ctx.topic)
        if decoder is None:  # a retry copy claiming an origin this route does not consume
            raise InvalidRecord(f"topic {ctx.topic!r} is not an input of {self.name}")
        return codec.decode(decoder, record.value, self.settings.max_record_bytes)

    async def handle(self, event: Any, ctx: Context) -> Sequence[Event]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.handler_timeout_seconds):  # no extra task, unlike wait_for
                return await self.service.handle(event, ctx)
        except TimeoutError:
            raise RetryableError(f"handler took longer than {self.settings.handler_timeout_seconds:.0f}s") from None
        finally:
            self._handler_seconds.observe(time.perf_counter() - started)

    def outputs(self, events: Sequence[Event], ctx: Context) -> list[Outgoing]:
        """Each event to its route's output: topic, key and ce_type from the stream, partition by policy."""
        out = []
        forwards = self.route.forwards_headers
        forwarded = [(k, ctx.headers[k].encode()) for k in forwards if k in ctx.headers] if forwards else None
        for index, event in enumerate(events):
            plan = self._plans.get(type(event))
            if plan is None:
                raise UndeclaredEvent(f"{type(event).__name__} is not an output of the {self.name} route")
            topic, constant, id_field, key_of, by_input = plan
            key = key_of(event) if key_of is not None else ctx.key
            ce_id = event.__dict__.get(id_field)  # codec.own_event_id, its field known per model
            if not isinstance(ce_id, str):  # no id of its own (an action's result): one per input, attempt, output
                ce_id = f"{ctx.topic}:{ctx.partition}:{ctx.offset}:{ctx.attempt}:{index}"
            encoded_key = key.encode() if key is not None else None
            headers = codec.wire_headers(ce_id, constant, encoded_key, forwarded)
            out.append(
                Outgoing(topic, encoded_key, codec.encode(event), headers, ctx.partition if by_input else None, event)
            )
        return out

    def fail(self, record: Any, ctx: Context, event: Any, exc: BaseException) -> Verdict:
        """Where a failed record goes: a retry tier while tiers remain and the error is retryable."""
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        attempts, tier = ctx.attempt, choose_tier(self.settings.retry_delays_seconds, ctx.attempt, retry_after)
        if isinstance(exc, Deferred) and self.retry_topics:
            tier, attempts = 1, ctx.attempt - 1  # not attempted: back soon with the same attempt number
        if not is_retryable(exc) or tier > len(self.retry_topics):
            return self.dead_letter(record, ctx, event, exc)
        s = self.settings
        delay = tier_delay(s.retry_delays_seconds, tier, s.retry_jitter, retry_after, s.retry_after_cap_seconds)
        headers = retry_headers(record, ctx, exc, attempts, wall_clock() + delay)
        copy = Outgoing(self.retry_topics[tier - 1], record.key, record.value, headers)
        extra = self._hook(event, ctx, Failure(exc, "retry", "retry"))
        return Verdict("retry", [*extra, copy], exc, tier, delay, extra)

    def dead_letter(
        self, record: Any, ctx: Context, event: Any, exc: BaseException, *, value_dropped: str | None = None
    ) -> Verdict:
        """The input on the dead-letter topic with why; `value_dropped` when even it cannot be written.
        A record read from that very topic (the recorder reads its own) stays where it is: its dead letter
        would be read and fail again, forever."""
        if ctx.topic == self.dead_letter_topic:
            return Verdict("dead_letter", [], exc)
        headers = dead_letter_headers(
            record, ctx, exc, service=self.name, version=self.service.version, group=self.group_id
        )
        value = record.value
        extra: list[Outgoing] = []
        if value_dropped is not None:
            headers[h.DLQ_VALUE_DROPPED] = value_dropped
            value = None
        else:
            extra = self._hook(event, ctx, Failure(exc, "dead_letter", category(exc)))
        letter = Outgoing(self.dead_letter_topic, record.key, value, headers)
        return Verdict("dead_letter", [*extra, letter], exc, extra=extra)

    def _hook(self, event: Any, ctx: Context, failure: Failure) -> list[Outgoing]:
        hook = self.service.on_failure
        if hook is None or event is None:
            return []
        try:
            return self.outputs(hook(event, ctx, failure), ctx)
        except Exception:  # a broken hook must not keep the record from its retry tier or dead letter
            log.exception("failure hook raised; the record's fate is carried out without its outputs")
            return []


# the slot descriptors' setters in field order (unpacking fails at import if Context's fields change)
_s0, _s1, _s2, _s3, _s4, _s5, _s6, _s7, _s8 = (getattr(Context, f.name).__set__ for f in dataclasses.fields(Context))


def new_context(
    service: str, topic: str, partition: int, offset: int, key: str | None, timestamp_ms: int, attempt: int,
    headers: Mapping[str, str], raw_headers: Mapping[str, str],
) -> Context:  # fmt: skip
    """Context(...) for every record: the frozen dataclass's __init__ sets each field through
    object.__setattr__ (looked up per field), which took about a tenth of a pass-through record's
    handling; here the same slots are set by their descriptors. Equal to Context(...) (a unit test)."""
    ctx = object.__new__(Context)
    _s0(ctx, service)
    _s1(ctx, topic)
    _s2(ctx, partition)
    _s3(ctx, offset)
    _s4(ctx, key)
    _s5(ctx, timestamp_ms)
    _s6(ctx, attempt)
    _s7(ctx, headers)
    _s8(ctx, raw_headers)
    return ctx


# ── tiers and hop headers ─────────────────────────────────────────────────────────────────────────


def now_iso() -> str:
    return codec.now_iso()


def describe(exc: BaseException) -> str:
    """The exception's class and message for a header or a log line: at most MAX_MESSAGE characters, and
    always UTF-8 (a remote's text read by Python's json may hold a lone surrogate, half an emoji, which no
    header can carry: the retry copy or dead letter failed to encode, an internal error that stopped the
    service, and the record failed the same way after the restart)."""
    text = f"{type(exc).__name__}: {exc}"
    text = text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


def category(exc: BaseException) -> str:
    if isinstance(exc, InvalidRecord):
        return h.CATEGORY_POISON
    if isinstance(exc, PermanentError):
        return h.CATEGORY_PERMANENT
    return h.CATEGORY_RETRIES_EXHAUSTED


def is_retryable(exc: BaseException) -> bool:
    """Unknown exceptions are retryable (see services.common.errors); permanent ones are not."""
    return not isinstance(exc, PermanentError)


def choose_tier(delays: Sequence[float], attempt: int, retry_after: float | None) -> int:
    """The tier for a failure on `attempt` (1-based): normally tier `attempt`; when the remote asked
    for a longer wait than that tier's delay, the first later tier at least that long (or the last),
    so one record's long Retry-After never parks a short tier's partition behind it. The tier only
    chooses the delay: the attempt count still grows by one per real attempt."""
    tier = attempt
    if retry_after is None or tier > len(delays):
        return tier
    while tier < len(delays) and delays[tier - 1] < retry_after:
        tier += 1
    return tier


def tier_delay(delays: Sequence[float], tier: int, jitter: float, retry_after: float | None, cap: float) -> float:
    """Seconds until a record in `tier` (1-based) is due: the tier's delay ± jitter, at least Retry-After."""
    base = delays[tier - 1]
    delay = base * (1 + random.uniform(-jitter, jitter)) if jitter else base
    if retry_after is not None:  # honoured, but never past the tier's own delay (see choose_tier)
        delay = max(delay, min(retry_after, cap, base * (1 + jitter)))
    return max(0.0, delay)


def _carried(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in h.HOP_HEADERS}


def _without_hops(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The headers without hop headers; the same mapping when it has none (most records)."""
    return _carried(headers) if headers and not h.HOP_HEADERS.isdisjoint(headers) else headers


def hop_headers(record: Any, ctx: Context, exc: BaseException, attempts: int) -> dict[str, str]:
    """The input's own headers, with this hop's family in place of any earlier hop's."""
    previous = codec.header_dict(record.headers)
    out = _carried(previous)
    failed_at = now_iso()
    out.update(
        {
            h.ORIGINAL_TOPIC: ctx.topic,
            h.ORIGINAL_PARTITION: str(ctx.partition),
            h.ORIGINAL_OFFSET: str(ctx.offset),
            h.ORIGINAL_TIMESTAMP: str(ctx.timestamp_ms),
            h.ATTEMPTS: str(attempts),
            # an earlier hop's time only from our own copy (on a retry tier: ctx names the original topic)
            h.FIRST_FAILURE_AT: (previous.get(h.FIRST_FAILURE_AT) if record.topic != ctx.topic else None) or failed_at,
            h.LAST_FAILURE_AT: failed_at,
            h.EXCEPTION_CLASS: f"{type(exc).__module__}.{type(exc).__qualname__}",
            h.EXCEPTION_MESSAGE: describe(exc),
        }
    )
    return out


def retry_headers(record: Any, ctx: Context, exc: BaseException, attempts: int, due_at: float) -> dict[str, str]:
    out = hop_headers(record, ctx, exc, attempts)
    out[h.RETRY_DUE_AT] = f"{due_at:.3f}"
    return out


def dead_letter_headers(
    record: Any, ctx: Context, exc: BaseException, *, service: str, version: str, group: str
) -> dict[str, str]:
    out = hop_headers(record, ctx, exc, ctx.attempt)
    out.update(
        {
            h.DLQ_CONSUMER_GROUP: group,
            h.DLQ_SERVICE: service,
            h.DLQ_SERVICE_VERSION: version,
            h.DLQ_HOST: socket.gethostname(),
            h.DLQ_FAILURE_CATEGORY: category(exc),
        }
    )
    return out


def due_time_of(headers: Mapping[str, str]) -> float:
    try:
        return float(headers.get(h.RETRY_DUE_AT, "0"))
    except ValueError:
        return 0.0


def wall_clock() -> float:
    return time.time()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
