"""What the ingress's producer is asked for: an answer only after every in-sync replica has the record."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiokafka
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBatch

from schemas import headers as h
from schemas.events import ConversationEnded
from schemas.topics import MAX_EVENT_BYTES, READ_RECORD_BYTES
from services.common import kafka as common_kafka
from services.common.codec import encode as codec_encode
from services.common.kafka import key_partitioner
from services.common.settings import KafkaSettings
from services.ingress.publisher import (
    Deadlines,
    Published,
    Publisher,
    Route,
    TooLarge,
    Unavailable,
    ce_time,
    cloudevent_headers,
)

MAPPED = Path(__file__).parent / "mapped"  # golden ConversationEnded bytes (test_mapped_bytes.py)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "conversations"


async def test_the_producer_waits_for_all_in_sync_replicas_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    class Unreachable:
        def __init__(self, **options: Any) -> None:
            asked.append(options)

        async def start(self) -> None:
            raise OSError("no broker here")

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(common_kafka, "AIOKafkaProducer", Unreachable)
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=0.3)
    await publisher.start()
    assert not await publisher.ready()
    await publisher.stop()
    assert asked, "the publisher never built a producer"
    assert {(o["acks"], o["enable_idempotence"]) for o in asked} == {("all", True)}
    assert {o["request_timeout_ms"] for o in asked} == {300}  # a request never outlives the 503 deadline


async def test_each_wait_gets_its_own_deadline_from_one_timer() -> None:
    deadlines = Deadlines(0.2)

    async def waiting(work: Any, start_after: float) -> Any:
        await asyncio.sleep(start_after)
        try:
            return await deadlines.wait(work)
        except TimeoutError:
            return "timed out"
        finally:
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    results = await asyncio.gather(
        waiting(asyncio.sleep(10), 0),  # past its deadline (0.2 s)
        waiting(asyncio.sleep(0.15, "late but in time"), 0.1),  # ends at 0.25 s, after the first's deadline
        waiting(asyncio.sleep(0, "at once"), 0),
    )
    assert results == ["timed out", "late but in time", "at once"]
    assert await deadlines.wait(asyncio.sleep(0.01, "again")) == "again"  # the timer is armed anew


def test_deadlines_used_on_a_second_event_loop_still_time_out() -> None:
    """A Deadlines whose timer was armed on a loop that has gone (asyncio.run twice: tests, a CLI)
    arms a new one on the next loop (review L1: the second wait ran its whole second, no TimeoutError)."""
    deadlines = Deadlines(0.05)

    async def wait_past_the_deadline() -> None:
        with pytest.raises(TimeoutError):
            await deadlines.wait(asyncio.sleep(1.0))

    async def leave_a_wait_behind() -> None:
        waiting = asyncio.create_task(deadlines.wait(asyncio.sleep(1.0)))
        await asyncio.sleep(0)  # armed; asyncio.run cancels it at the end of this loop
        assert not waiting.done()

    asyncio.run(wait_past_the_deadline())
    asyncio.run(leave_a_wait_behind())
    asyncio.run(wait_past_the_deadline())


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)
    task = asyncio.create_task(deadlines.wait(asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_record_not_acknowledged_in_time_is_unavailable_and_the_producer_replaced() -> None:
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=0.1)
    publisher._producer = object()  # type: ignore[assignment]

    async def never(current: Any, value: bytes, event: Any, source: str) -> Any:
        await asyncio.Event().wait()

    publisher._send_on = never  # type: ignore[method-assign]
    event = ConversationEnded.model_validate_json(
        MAPPED.joinpath("retell-phone-voicemail-analyzed.plain.txt").read_bytes()
    )
    with pytest.raises(Unavailable):
        await publisher.publish(event, "/retell/acct")
    assert publisher._producer is None  # aborted: the connector starts a new one
    await publisher.stop()


async def test_a_duplicate_of_an_event_in_flight_waits_for_its_outcome() -> None:
    """The first publish sends; a duplicate arriving while it is in flight sends nothing and gets its
    outcome (an acknowledgement as a duplicate, a failure as the same failure); afterwards nothing of it
    is left in flight."""
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=5)
    publisher._producer = object()  # type: ignore[assignment]
    event = ConversationEnded.model_validate_json(
        MAPPED.joinpath("retell-phone-voicemail-analyzed.plain.txt").read_bytes()
    )
    sent: list[str] = []
    release: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    class Sent:
        partition, offset = 4, 17

    async def held(current: Any, value: bytes, e: ConversationEnded, source: str) -> Any:
        sent.append(e.event_id)
        outcome = await release
        if outcome == "fail":
            raise common_kafka.KafkaError()
        return Sent()

    publisher._send_on = held  # type: ignore[method-assign]
    for outcome in ("ack", "fail"):
        sent.clear()
        publisher._recent.clear()
        first = asyncio.create_task(publisher.publish(event, "/retell/acct"))
        await asyncio.sleep(0)
        second = asyncio.create_task(publisher.publish(event, "/retell/acct"))
        third = asyncio.create_task(publisher.publish(event, "/retell/acct"))
        await asyncio.sleep(0)
        release.set_result(outcome)
        results = await asyncio.gather(first, second, third, return_exceptions=True)
        assert sent == [event.event_id]
        if outcome == "ack":
            done = results[0]
            assert not isinstance(done, BaseException)
            assert not done.duplicate and (done.partition, done.offset) == (4, 17)
            assert [r.duplicate for r in results[1:]] == [True, True]  # type: ignore[union-attr]
            assert {r.offset for r in results} == {17}  # type: ignore[union-attr]
        else:
            assert all(isinstance(r, Unavailable) for r in results), results
        assert not publisher._inflight
        release = asyncio.get_running_loop().create_future()
        publisher._producer = object()  # type: ignore[assignment]  (a failure replaced it)
    publisher._producer = None
    await publisher.stop()


async def test_a_duplicate_waiting_on_a_first_request_that_is_cancelled_is_unavailable_not_cancelled() -> None:
    """The first request's task cancelled (the client went away, a shutdown): it stays cancelled, and a
    duplicate waiting on it gets Unavailable (a 503 the vendor retries), not a cancellation of its own
    that would leave its request with no answer and no log line (review5 L6)."""
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=5)
    publisher._producer = object()  # type: ignore[assignment]
    event = ConversationEnded.model_validate_json(
        MAPPED.joinpath("retell-phone-voicemail-analyzed.plain.txt").read_bytes()
    )

    async def never(current: Any, value: bytes, e: ConversationEnded, source: str) -> Any:
        await asyncio.Event().wait()

    publisher._send_on = never  # type: ignore[method-assign]
    first = asyncio.create_task(publisher.publish(event, "/retell/acct"))
    await asyncio.sleep(0)
    second = asyncio.create_task(publisher.publish(event, "/retell/acct"))
    await asyncio.sleep(0)
    first.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], Unavailable), results
    assert not publisher._inflight
    publisher._producer = None
    await publisher.stop()


def test_ce_time_is_the_end_of_the_conversation_in_utc() -> None:
    """headers.py and the AsyncAPI document say ce_time is RFC 3339 UTC, as every other producer writes it
    (codec.now_iso). A native event may send its times with an offset: ce_time is the same instant in UTC."""
    raw = orjson.loads((EXAMPLES / "0001-support-resolved-hangup.json").read_bytes())
    raw["ended_at"] = "2026-03-02T16:05:39.250+01:00"
    event = ConversationEnded.model_validate(raw)
    headers = dict(cloudevent_headers(event, "/native/acct-1"))
    assert headers[h.CE_TIME] == b"2026-03-02T15:05:39.250000Z"


class _Cluster:
    """The part of aiokafka's ClusterMetadata that partitioning reads."""

    def __init__(self, partitions: set[int] | None) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None if self.partitions is None else set(self.partitions)

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


async def test_the_route_is_the_partition_send_would_choose_and_follows_added_partitions() -> None:
    producer = common_kafka.producer(KafkaSettings(bootstrap_servers="127.0.0.1:9"), partitioner=key_partitioner)
    route, rng = Route("t"), random.Random(14)
    for count in (12, 1, 3, 12, 13):  # partitions added to a topic are used at once, as by send()
        producer._metadata = producer.client.cluster = _Cluster(set(range(count)))
        for _ in range(300):
            key = rng.randbytes(rng.randint(1, 60))
            tp = route.partition(producer, key, 2000)
            assert tp == TopicPartition("t", producer._partition("t", None, key, b"v", key, b"v")), (count, key)


async def test_the_route_leaves_to_send_a_topic_without_metadata_and_a_record_near_the_size_limit() -> None:
    producer = common_kafka.producer(KafkaSettings(bootstrap_servers="127.0.0.1:9"), max_request_size=100_000)
    producer.client.cluster = _Cluster(None)
    assert Route("t").partition(producer, b"k", 10) is None  # send() waits for the topic's metadata
    producer.client.cluster = _Cluster({0, 1})
    assert Route("t").partition(producer, b"k", 100_000 - 2048) is not None
    assert Route("t").partition(producer, b"k", 100_000 - 100) is None  # send() checks its estimate, or refuses


async def test_an_event_larger_than_the_pipeline_carries_is_too_large_before_it_is_sent() -> None:
    """The extracted record is the event plus its extraction and must fit what the router reads: a larger
    event was acknowledged (2xx) and then dead-lettered downstream. Refused with the sizes, nothing sent."""
    publisher = Publisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_seconds=5)
    publisher._producer = object()  # type: ignore[assignment]
    sent: list[int] = []

    async def send(current: Any, value: bytes, e: ConversationEnded, source: str) -> Any:
        sent.append(len(value))
        return type("Sent", (), {"partition": 0, "offset": 1})()

    publisher._send_on = send  # type: ignore[method-assign]
    event = ConversationEnded.model_validate_json(
        MAPPED.joinpath("retell-phone-voicemail-analyzed.plain.txt").read_bytes()
    )
    assert publisher.max_event_bytes == MAX_EVENT_BYTES == READ_RECORD_BYTES - 512 * 1024
    said = event.messages[0].model_copy(update={"text": "x" * 1000})
    big = event.model_copy(update={"messages": [said] * (MAX_EVENT_BYTES // 1000)})
    with pytest.raises(TooLarge, match=r"is 3,9\d\d,\d{3} bytes once mapped; at most 3,670,016 .* 4,194,304 bytes"):
        await publisher.publish(big, "/retell/acct")
    assert not sent and not publisher._inflight
    fits = event.model_copy(update={"messages": [said] * (MAX_EVENT_BYTES // 1100)})
    await publisher.publish(fits, "/retell/acct")
    assert len(sent) == 1 and MAX_EVENT_BYTES - 400_000 < sent[0] <= MAX_EVENT_BYTES


def _queued(producer: Any) -> dict[TopicPartition, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]]:
    """What aiokafka's accumulator holds, by partition: each record's key, value and headers."""
    held: dict[TopicPartition, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {}
    for tp, batches in producer._message_accumulator._batches.items():
        for batch in batches:
            data = bytes(batch.get_data_buffer())
            held.setdefault(tp, []).extend(
                (r.key, r.value, [(k, bytes(v)) for k, v in r.headers]) for r in DefaultRecordBatch(data)
            )
    return held


async def test_a_routed_record_is_queued_as_send_would_queue_it() -> None:
    """The publisher hands records to aiokafka's accumulator itself (Route), through internals of aiokafka
    0.14 (pinned in pyproject.toml): `_message_accumulator.add_message(tp, key, value, timeout, headers=)`,
    `_max_request_size`, `_request_timeout_ms`, `client.cluster`. Another aiokafka that renamed or reordered
    them must fail here, not publish elsewhere or otherwise: the records the real accumulator holds
    are those send() queues, in the same partitions."""
    assert aiokafka.__version__.startswith("0.14."), "re-read Route and abort against this aiokafka's internals"
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    routed = common_kafka.producer(settings, request_timeout_ms=5000, partitioner=key_partitioner)
    sent = common_kafka.producer(settings, request_timeout_ms=5000, partitioner=key_partitioner)
    for p in (routed, sent):
        p.client.cluster = p._metadata = _Cluster(set(range(6)))
    publisher = Publisher(settings, timeout_seconds=5)
    raw = MAPPED.joinpath("retell-phone-voicemail-analyzed.plain.txt").read_bytes()
    waits = []
    for n in range(40):
        event = ConversationEnded.model_validate_json(raw).model_copy(
            update={"conversation_id": f"conv-{n}", "event_id": f"e-{n}"}
        )
        value = codec_encode(event)
        waits.append(asyncio.ensure_future(publisher._send_on(routed, value, event, "/retell/acct")))
        await asyncio.sleep(0)
        key = event.conversation_id.encode()
        await sent.send(publisher.topic, value, key=key, headers=cloudevent_headers(event, "/retell/acct"))
    assert publisher._route._parts, "the records went through the route, not send()"
    expected = _queued(sent)
    assert sum(map(len, expected.values())) == 40 and len(expected) > 1
    assert _queued(routed) == expected
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    for p in (routed, sent):
        await p.stop()


def test_an_acked_published_is_the_one_its_init_builds() -> None:
    fields = ("retell:c1:call_analyzed", "c1", "postcall.conversation-ended.v1", 3, 17)
    made, built = Published.acked(*fields), Published(*fields)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert type(made) is Published and dataclasses.astuple(made) == (*fields, False)
    assert dataclasses.replace(made, duplicate=True) == Published(*fields, duplicate=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.offset = 18  # type: ignore[misc]


def test_ce_time_is_isoformats_text_in_utc() -> None:
    rng = random.Random(14)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), timezone(timedelta(0))]
    times = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 6, 16, 0, 31, tzinfo=timezone(timedelta(hours=-5))),  # another day in UTC
        datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=1))),  # year 1: isoformat's %04d
        datetime(9999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ]
    for _ in range(2000):
        moment = datetime(1970, 1, 2, tzinfo=UTC) + timedelta(microseconds=rng.randrange(32_000_000_000 * 10**6))
        if rng.random() < 0.3:
            moment = moment.replace(microsecond=0)
        times.append(moment.astimezone(rng.choice(zones)))
    for moment in times:
        assert ce_time(moment) == moment.astimezone(UTC).isoformat().replace("+00:00", "Z").encode(), moment
