"""Publishing one ConversationEnded and waiting for the brokers' acknowledgement (acks=all).

* One idempotent producer per process, (re)started by a background task: while Kafka is unreachable a
  request fails at once with `Unavailable` (HTTP 503) instead of queueing behind a connection attempt.
* A record not acknowledged within the publish timeout is answered 503 and its producer is aborted:
  the sender stops and what it still buffered is dropped, never sent later behind the 503 (the
  platform's retry publishes it, once). aiokafka's own stop() would deliver it after the outage, and
  its batch expiry does not fire while the metadata still names a leader. A record already on the wire
  when a broker died is the one case left ambiguous: its retry then lands twice with the same `ce_id`.
* The same event id is published once per process: a request for an event already acknowledged, or
  in flight, gets that outcome (`duplicate`). Across replicas a duplicate reaches the topic with the
  same `ce_id`, and action ids (derived from the conversation) keep its side effects single.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from schemas import headers as h
from schemas.end_reasons import EndReason
from schemas.events import Account, Agent, ConversationEnded, Customer, EndReasonInfo, Message, PlatformAnalysis
from schemas.topics import CE_TYPES, CONVERSATION_ENDED, MAX_EVENT_BYTES, READ_RECORD_BYTES
from services.common import codec, observability
from services.common.kafka import key_partition, key_partitioner, producer
from services.common.settings import KafkaSettings
from services.ingress.metrics import PUBLISH_DURATION

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unavailable(Exception):
    """Raised when Kafka did not acknowledge the record within the publish timeout (HTTP 503)."""


class TooLarge(Exception):
    """Raised when the event is larger than the pipeline carries, or the brokers refuse its size (HTTP 413)."""


@dataclass(frozen=True)
class Published:
    event_id: str
    conversation_id: str
    topic: str
    partition: int
    offset: int
    duplicate: bool = False

    @classmethod
    def acked(cls, event_id: str, conversation_id: str, topic: str, partition: int, offset: int) -> Published:
        """`Published(event_id, conversation_id, topic, partition, offset)` in a fifth of the time (one per
        webhook): the instance's dict set at once, instead of the frozen dataclass's `object.__setattr__`
        per field. Equal to the one __init__ builds (test_publisher.py)."""
        made = object.__new__(cls)
        object.__setattr__(
            made,
            "__dict__",
            {
                "event_id": event_id,
                "conversation_id": conversation_id,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "duplicate": False,
            },
        )
        return made


def ce_source(platform: str, event: ConversationEnded) -> str:
    """`/<platform>/<account>`; a native event names its own platform when it knows it."""
    if platform == "native" and event.end_reason.source_platform not in ("", "unknown"):
        platform = event.end_reason.source_platform
    return f"/{quote(platform, safe='')}/{quote(event.account.id, safe='')}"


def cloudevent_headers(event: ConversationEnded, source: str) -> list[tuple[str, bytes]]:
    """CloudEvents binary mode: the source names platform and account, the time is the conversation's end
    (in UTC, as headers.py says, whatever offset the event's ended_at was written with)."""
    return [
        (h.CE_ID, event.event_id.encode()),
        _CE_TYPE,
        (h.CE_SOURCE, source.encode()),
        codec.SPECVERSION_HEADER,
        (h.CE_TIME, ce_time(event.ended_at)),
        codec.CONTENT_TYPE_HEADER,
        (h.CE_SUBJECT, event.conversation_id.encode()),
    ]


def ce_time(ended_at: datetime) -> bytes:
    """`ended_at.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()`, written from the time's
    fields: datetime.isoformat() cost more than the rest of a record's headers together (test_publisher.py
    compares the two). A time in UTC itself (every mapping's but the native one's) is pydantic-core's text of
    it, the same and in half the time again."""
    if type(ended_at) is datetime and ended_at.tzinfo is UTC:
        written: str = codec.DATETIME_JSON(ended_at, mode="json")
        return written.encode()
    t = ended_at.astimezone(UTC)
    micro = t.microsecond
    two = codec.TWO_DIGITS
    text = f"{t.year:04d}-{two[t.month]}-{two[t.day]}T{two[t.hour]}:{two[t.minute]}:{two[t.second]}"
    return (text + (f".{micro:06d}Z" if micro else "Z")).encode()


# ── the record's value (codec.written_as_pydantic: orjson, the bytes pydantic writes; as the router's) ──
# the sub-models whose fields are all text, None, numbers, booleans or free-form JSON: written as their dicts
_FLAT = {"account": Account, "agent": Agent, "customer": Customer}


def encode_event(event: ConversationEnded) -> bytes:
    """`codec.encode(event)` (pydantic's `to_json`), the same bytes, written by orjson from the event's
    fields: pydantic's serializer checks each field against its type and infers the type of every value
    of the free-form fields, about a twelfth of the ingress's instructions per webhook. The times are
    pydantic's JSON text of them; an event holding anything orjson would write its own way, or a
    sub-model of another class than its field's, is pydantic's JSON."""
    if type(event) is not ConversationEnded:
        return codec.encode(event)
    fields = event.__dict__.copy()
    for name, kind in _FLAT.items():
        part = fields[name]
        if type(part) is not kind:
            return codec.encode(event)
        fields[name] = part.__dict__
    reason = fields["end_reason"]
    if type(reason) is not EndReasonInfo or type(reason.canonical) is not EndReason:
        return codec.encode(event)
    fields["end_reason"] = {**reason.__dict__, "canonical": reason.canonical.value}
    messages = fields["messages"]
    if messages is not None:
        written = []
        for message in messages:
            if type(message) is not Message:
                return codec.encode(event)
            written.append(message.__dict__)
        fields["messages"] = written
    analysis = fields["platform_analysis"]
    if analysis is not None:
        if type(analysis) is not PlatformAnalysis:
            return codec.encode(event)
        fields["platform_analysis"] = analysis.__dict__
    fields["occurred_at"] = codec.DATETIME_JSON(fields["occurred_at"], mode="json")
    fields["started_at"] = codec.DATETIME_JSON(fields["started_at"], mode="json")
    fields["ended_at"] = codec.DATETIME_JSON(fields["ended_at"], mode="json")
    return codec.written_as_pydantic(fields, event)


# the headers every record has the same of, encoded once (tuples: a producer reads, never changes them)
_CE_TYPE = (h.CE_TYPE, CE_TYPES[CONVERSATION_ENDED].encode())


async def abort(producer: AIOKafkaProducer) -> None:
    """Stop a producer without sending what it buffered. aiokafka has no public abort: this uses its
    0.14 internals (pinned in pyproject.toml), and tests/integration/ingress proves the effect."""
    producer._closed = True
    sender = producer._sender
    if sender is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await sender.close()  # cancels the sender task: nothing more goes out
    accumulator = producer._message_accumulator
    # Failing what is buffered must not end in asyncio's "Exception in callback" and "Future exception was
    # never retrieved" lines (ERROR, from aiokafka's internals, mid-outage). A batch put back after a retriable
    # error (a stalled broker's late RequestTimedOut answers the request the sender waited for) still has the
    # callback its first send gave it, which takes it out of the pending set when it completes: failed while
    # queued, it is not in that set (KeyError). And failing a batch fails its drain waiter, which nobody
    # awaits once no sender runs.
    batches = [batch for queued in accumulator._batches.values() for batch in queued]
    batches += accumulator._pending_batches
    for batch in batches:
        if batch.retry_count:
            accumulator._pending_batches.add(batch)  # where its callback looks for it (failed once: a set)
    accumulator.fail_all(KafkaTimeoutError())
    for batch in batches:
        drained = batch._drain_waiter
        if drained.done() and not drained.cancelled():
            drained.exception()  # retrieved
    await producer.client.close()


class Deadlines:
    """The publish timeout of every request in flight, with one timer for all of them, instead of one
    `asyncio.timeout` each: a uvloop timer created and cancelled per request cost 4-8 us of the ingress's
    ~250 us per webhook. Every wait has the same length, so deadlines come in the order waits start;
    the timer stands for the earliest. The task of a wait past its deadline is cancelled, and `wait`
    turns that cancellation into TimeoutError. As with `asyncio.timeout`, a cancellation from outside
    stays a cancellation."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waiting: dict[asyncio.Task[Any], float] = {}  # by deadline, the earliest first
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled by us, the cancellation not seen yet
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the waits and the timer are on

    async def wait(self, work: Awaitable[T]) -> T:
        """`await work`, or TimeoutError once `seconds` have passed."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # (with the loop: no second running-loop lookup)
        assert task is not None, "Deadlines.wait runs in a task"
        if loop is not self._loop:  # used on another loop before (tests, a CLI): its timer and waits are gone
            self._loop, self._timer = loop, None
            self._waiting.clear()
            self._expired.clear()
        cancelling = task.cancelling()
        deadline = self._waiting[task] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            return await work
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._waiting.pop(task, None)
            if task in self._expired:  # the work swallowed our cancellation and finished
                self._expired.discard(task)
                task.uncancel()

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiting:
            task, deadline = next(iter(self._waiting.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._waiting[task]
            self._expired.add(task)
            task.cancel()


class Route:
    """The partition `AIOKafkaProducer.send` would put a keyed record of `topic` in, without its work per
    record: send() looks the topic's partitions up three times (two sets and a sorted list built from the
    cluster metadata), estimates the record's size header by header, makes a TopicPartition and a debug
    log call, about a tenth of the ingress's CPU per webhook in a py-spy profile under bench/ingress.py's
    load. The partition is the same (the producer's key_partitioner over the sorted partitions, murmur2 of
    the key); the partitions are read from the metadata on every record, so that a partition added is
    used at once, as by send(). `partition` answers None where send() has more to do (no metadata for
    the topic yet, a record near the size limit that it must check or refuse): the caller then uses
    send() itself. aiokafka's accumulator is internal (0.14, pinned in pyproject.toml, as `abort`):
    tests/unit/ingress/test_publisher.py compares what it queues with what send() queues."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._known: set[int] = set()
        self._parts: tuple[TopicPartition, ...] = ()  # the partitions in order: sorted(self._known)

    def partition(self, current: AIOKafkaProducer, key: bytes, size: int) -> TopicPartition | None:
        """`size`: the record's key, value and header bytes."""
        if size + _ROOM > current._max_request_size:
            return None
        known = current.client.cluster.partitions_for_topic(self.topic)
        if not known:
            return None
        if known != self._known:
            self._known, self._parts = known, tuple(TopicPartition(self.topic, p) for p in sorted(known))
        return self._parts[key_partition(key, len(self._parts))]


# more than a record's framing beyond its bytes in aiokafka's estimate (DefaultRecordBatchBuilder: the
# batch header, the record overhead and a varint per length): a record this close to the limit goes
# through send(), which checks the estimate itself
_ROOM = 1024


class Publisher:
    def __init__(
        self,
        kafka: KafkaSettings,
        timeout_seconds: float = 4.0,
        topic: str = CONVERSATION_ENDED,
        remember: int = 50_000,
        remember_seconds: float = 900.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.kafka, self.timeout, self.topic = kafka, timeout_seconds, topic
        self.max_event_bytes = max_event_bytes
        self._remember, self._remember_seconds = remember, remember_seconds
        self._producer: AIOKafkaProducer | None = None
        self._wanted = asyncio.Event()  # set when a producer must be (re)started
        self._up = asyncio.Event()  # set while a started producer is in place
        # both keyed by (CloudEvents source, event id), what names one event
        self._inflight: dict[tuple[str, str], asyncio.Future[Published] | None] = {}  # a future once a duplicate waits
        # -> (when, conversation id, topic, partition, offset): a tuple of strings and numbers,
        # which the garbage collector stops tracking, so that tens of thousands of remembered events do
        # not lengthen every full collection (a pause every request in flight waits out)
        self._recent: OrderedDict[tuple[str, str], tuple[float, str, str, int, int]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connector: asyncio.Task[None] | None = None
        self._checked: tuple[float, bool] = (0.0, False)
        self._deadlines = Deadlines(timeout_seconds)
        self._produced = observability.RECORDS_PRODUCED.labels("ingress", topic)
        self._duration = PUBLISH_DURATION.labels()
        self._route = Route(topic)

    async def start(self) -> None:
        """Start connecting in the background; returns at once (readiness says when Kafka is there)."""
        self._wanted.set()
        self._connector = asyncio.create_task(self._connect_forever(), name="ingress-producer")
        with contextlib.suppress(TimeoutError):  # a reachable broker is ready before the first request
            await asyncio.wait_for(self._up.wait(), self.timeout)

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._producer.stop()  # flushes what is still buffered
            self._producer = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout)

    async def _connect_forever(self) -> None:
        backoff = 0.5
        while True:
            await self._wanted.wait()
            candidate = producer(
                self.kafka,
                request_timeout_ms=int(self.timeout * 1000),
                client_id="postcall-ingress",
                partitioner=key_partitioner,  # the default's partitions, its murmur2 in half the time
            )
            try:
                await asyncio.wait_for(candidate.start(), self.timeout)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._later(candidate.stop())
                log.warning("kafka not reachable", extra={"error": type(exc).__name__, "retry_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._producer, backoff = candidate, 0.5
            self._wanted.clear()
            self._up.set()
            log.info("kafka producer started", extra={"bootstrap": self.kafka.bootstrap_servers})

    def _reset(self, broken: AIOKafkaProducer) -> None:
        if self._producer is not broken:
            return  # another request already replaced it
        self._producer = None
        self._up.clear()
        self._later(abort(broken))
        self._wanted.set()

    def _later(self, work: object) -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(work, self.timeout * 2)  # type: ignore[arg-type]

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ready(self) -> bool:
        """Kafka reachable: a producer is running and answered a metadata request (cached 2 s)."""
        at, ok = self._checked
        if time.monotonic() - at < 2.0:
            return ok
        current = self._producer
        ok = False
        if current is not None:
            try:
                await asyncio.wait_for(current.client.fetch_all_metadata(), 2.0)
                ok = bool(current.client.cluster.brokers())
            except (KafkaError, OSError, TimeoutError):
                ok = False
        self._checked = (time.monotonic(), ok)
        return ok

    async def publish(self, event: ConversationEnded, source: str) -> Published:
        """Return once the brokers acknowledged the record (or did so for the same event before). An event
        is its source and id (CloudEvents): two accounts' bridges may each send an `evt-1`."""
        self._forget_old()
        key = (source, event.event_id)
        known = self._recent.get(key)
        if known is not None:
            return Published(event.event_id, *known[1:], duplicate=True)
        if key in self._inflight:  # in flight: wait for its outcome (a future made on demand)
            running = self._inflight[key]
            if running is None:
                running = self._inflight[key] = asyncio.get_running_loop().create_future()
            return replace(await asyncio.shield(running), duplicate=True)
        self._inflight[key] = None  # no future until a duplicate waits for one
        try:
            done = await self._send(event, source)
        except BaseException as exc:
            waiting = self._inflight.pop(key)
            if waiting is not None:  # a cancellation is this request's own: its duplicates may retry
                shared = exc if isinstance(exc, Exception) else Unavailable("the request publishing it was cancelled")
                waiting.set_exception(shared)
                waiting.exception()  # retrieved: a failure nobody else awaited is not an "unretrieved" warning
            raise
        waiting = self._inflight.pop(key)
        if waiting is not None:
            waiting.set_result(done)
        self._recent[key] = (time.monotonic(), done.conversation_id, done.topic, done.partition, done.offset)
        return done

    async def _send(self, event: ConversationEnded, source: str) -> Published:
        value = encode_event(event)
        if len(value) > self.max_event_bytes:
            raise TooLarge(
                f"the event is {len(value):,} bytes once mapped; at most {self.max_event_bytes:,} are accepted, so "
                f"that its extracted record still fits the {READ_RECORD_BYTES:,} bytes the services read: send the "
                "transcript by transcript_url, or fewer messages"
            )
        current = self._producer
        if current is None:
            raise Unavailable("Kafka is not reachable")
        started = time.perf_counter()
        try:
            sent = await self._deadlines.wait(self._send_on(current, value, event, source))
        except MessageSizeTooLargeError as exc:
            raise TooLarge(f"the event is too large for the topic ({type(exc).__name__})") from None
        except (KafkaError, TimeoutError) as exc:
            self._reset(current)
            raise Unavailable(f"Kafka did not acknowledge the record ({type(exc).__name__})") from None
        self._duration.observe(time.perf_counter() - started)
        self._produced.inc()
        return Published.acked(event.event_id, event.conversation_id, self.topic, sent.partition, sent.offset)

    async def _send_on(self, current: AIOKafkaProducer, value: bytes, event: ConversationEnded, source: str) -> Any:
        key, headers = event.conversation_id.encode(), cloudevent_headers(event, source)
        size = len(value) + len(key)
        for name, header in headers:  # a loop, not sum() over a generator: a third of the time
            size += len(name) + len(header)
        tp = self._route.partition(current, key, size)
        if tp is None:
            future = await current.send(self.topic, value, key=key, headers=headers)
        else:
            future = await current._message_accumulator.add_message(
                tp, key, value, current._request_timeout_ms / 1000, headers=headers
            )
        return await future

    def _forget_old(self) -> None:
        horizon = time.monotonic() - self._remember_seconds
        while self._recent and (len(self._recent) > self._remember or next(iter(self._recent.values()))[0] < horizon):
            self._recent.popitem(last=False)
