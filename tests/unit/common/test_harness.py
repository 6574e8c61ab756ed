"""The runtime's record logic in memory: routing by the route, fates, hop headers, the failure hook."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from pydantic import BaseModel

from schemas import headers as h
from schemas.routes import Output, Route
from schemas.topics import Stream
from services.common import codec
from services.common.api import Context, Deferred, Event, Failure, PermanentError, RetryableError, Service
from services.common.harness import Harness, Incoming
from services.common.settings import RuntimeSettings


class Job(BaseModel):
    id: str
    fail: int = 0  # fail this many attempts (retryable)
    permanent: bool = False
    defer: int = 0
    retry_after: float | None = None
    stray: bool = False  # return an event the route does not declare


class Done(BaseModel):
    id: str
    attempt: int
    partition: int


class Failed(BaseModel):
    id: str
    fate: str
    attempt: int


class Stray(BaseModel):
    id: str


JOBS = Stream.plain("jobs", Job, key=lambda j: j.id)
ROUTE = Route(
    "worker",
    "a test service",
    consumes=(JOBS,),
    produces=(
        Output(Stream.plain("done", Done, key=lambda d: d.id)),
        Output(Stream.plain("failed", Failed), partition="input"),
    ),
    retry_delays_seconds=(1.0, 2.0, 4.0),
)


class Worker:
    def __init__(self) -> None:
        self.deferred = 0

    async def handle(self, job: Job, ctx: Context) -> Sequence[Event]:
        if self.deferred < job.defer:
            self.deferred += 1
            raise Deferred("busy")
        if job.permanent:
            raise PermanentError(f"{job.id} is broken")
        if ctx.attempt <= job.fail:
            raise RetryableError(f"{job.id} failed attempt {ctx.attempt}", retry_after=job.retry_after)
        if job.stray:
            return [Stray(id=job.id)]
        return [Done(id=job.id, attempt=ctx.attempt, partition=ctx.partition)]

    def on_failure(self, job: Job, ctx: Context, failure: Failure) -> Sequence[Event]:
        return [Failed(id=job.id, fate=failure.fate, attempt=ctx.attempt)]


def harness(burst: bool = True, **settings: object) -> Harness[Job]:
    worker = Worker()
    rs = RuntimeSettings(metrics_port=0, retry_jitter=0, retry_delays_seconds=[1.0, 2.0, 4.0], **settings)  # type: ignore[arg-type]
    return Harness(Service(ROUTE, worker.handle, worker.on_failure), rs, burst=burst)


async def test_events_go_where_the_route_says_keyed_by_their_stream() -> None:
    out = await harness().send(Job(id="a"), partition=5)
    [record] = out.outputs
    assert (out.status, record.topic, record.key, record.partition) == ("ok", "done", b"a", None)
    assert record.headers[h.CE_TYPE] == "dev.postcall.Done.v1" and record.headers[h.CE_SUBJECT] == "a"
    assert out.events == [Done(id="a", attempt=1, partition=5)]


async def test_a_retried_record_keeps_its_origin_and_counts_attempts() -> None:
    out = await harness().send(Job(id="a", fail=2), partition=5)
    assert [r.topic for r in out.retries] == [ROUTE.retry_topics[0], ROUTE.retry_topics[1]]
    assert [(c.topic, c.partition, c.offset, c.attempt) for c in out.contexts] == [("jobs", 5, 0, n) for n in (1, 2, 3)]
    assert out.on("done") == [Done(id="a", attempt=3, partition=5)]
    # the failure hook ran once per retry, its outputs on the input's partition
    assert [(r.event, r.partition) for r in out.outputs if r.topic == "failed"] == [
        (Failed(id="a", fate="retry", attempt=1), 5),
        (Failed(id="a", fate="retry", attempt=2), 5),
    ]
    second = out.retries[1].headers
    assert second[h.ATTEMPTS] == "2" and second[h.ORIGINAL_PARTITION] == "5"
    assert second[h.FIRST_FAILURE_AT] == out.retries[0].headers[h.FIRST_FAILURE_AT]
    assert second[h.EXCEPTION_MESSAGE] == "RetryableError: a failed attempt 2"
    assert second[h.EXCEPTION_CLASS] == "services.common.errors.RetryableError"
    assert second[h.CE_ID] == out.retries[0].headers[h.CE_ID]  # the input's own headers travel along


async def test_after_the_last_tier_the_record_is_dead_lettered_with_why() -> None:
    out = await harness().send(Job(id="a", fail=99))
    assert (out.status, len(out.retries), out.attempts) == ("dead_lettered", 3, 4)
    [letter] = out.dead_letters
    assert letter.value == b'{"id":"a","fail":99,"permanent":false,"defer":0,"retry_after":null,"stray":false}'
    assert letter.headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_RETRIES_EXHAUSTED
    assert letter.headers[h.ATTEMPTS] == "4" and letter.headers[h.ORIGINAL_TOPIC] == "jobs"
    assert h.RETRY_DUE_AT not in letter.headers, "hop headers are replaced, not stacked"
    assert out.on("failed")[-1] == Failed(id="a", fate="dead_letter", attempt=4)


async def test_a_permanent_error_is_dead_lettered_at_once() -> None:
    out = await harness().send(Job(id="a", permanent=True))
    assert (out.status, out.retries, out.attempts) == ("dead_lettered", [], 1)
    assert out.dead_letters[0].headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_PERMANENT


@pytest.mark.parametrize(
    ("value", "reason"), [(b"{oops", "not valid JSON"), (b'{"fail": 1}', "id: Field required"), (None, "tombstone")]
)
async def test_a_poison_record_is_dead_lettered_without_calling_the_hook(value: bytes | None, reason: str) -> None:
    out = await harness().send(value, topic="jobs", key="k")
    assert (out.status, out.outputs) == ("dead_lettered", [])
    [letter] = out.dead_letters
    assert letter.headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_POISON and letter.value == value
    assert reason in letter.headers[h.EXCEPTION_MESSAGE] and letter.key == b"k"


async def test_forged_hop_headers_on_a_main_topic_are_ignored() -> None:
    forged = {h.ATTEMPTS: "abc", h.ORIGINAL_PARTITION: "-9", h.ORIGINAL_TOPIC: "elsewhere"}
    out = await harness().send(Job(id="a"), headers=forged, partition=2)
    assert out.events == [Done(id="a", attempt=1, partition=2)]
    assert not set(forged) & set(out.contexts[0].headers)


async def test_a_forged_first_failure_time_on_a_main_topic_is_not_carried_into_the_retry_copy() -> None:
    """x-first-failure-at on a record from outside (a main topic) was carried into its retry copies and
    dead letter as the time of its first failure (the store and console show it)."""
    forged = {h.FIRST_FAILURE_AT: "1999-01-01T00:00:00Z"}
    out = await harness().send(Job(id="a", fail=99), headers=forged)
    assert out.retries and out.dead_letters
    for copy in (*out.retries, *out.dead_letters):
        assert copy.headers[h.FIRST_FAILURE_AT] != "1999-01-01T00:00:00Z"
    assert {c.headers[h.FIRST_FAILURE_AT] for c in (*out.retries, *out.dead_letters)} == {
        out.retries[0].headers[h.FIRST_FAILURE_AT]
    }, "the first failure's time, ours, carried from tier to tier"


async def test_a_copy_on_its_private_replay_topic_is_read_as_where_it_first_arrived() -> None:
    """Route.private_replay (the recorder): a dead letter replayed to the service's own replay topic is handled
    as if read where it first arrived, as a retry tier's copy is, but as a first attempt again (as a replay to
    a main topic is), and its hop headers are the replay's, not the record's (raw_headers leaves them out).
    A retry after it still names the original."""
    route = dataclasses.replace(ROUTE, private_replay=True)
    assert route.replay_topics == ("postcall.worker.replay.v1",) and route.replay_topics[0] in route.topics()
    worker = Worker()
    rs = RuntimeSettings(metrics_port=0, retry_jitter=0, retry_delays_seconds=[1.0, 2.0, 4.0])
    replaying = Harness(Service(route, worker.handle, worker.on_failure), rs)
    origin = {h.ORIGINAL_TOPIC: "jobs", h.ORIGINAL_PARTITION: "5", h.ORIGINAL_OFFSET: "41"}
    headers = {**origin, h.ORIGINAL_TIMESTAMP: "1700000000123", h.ATTEMPTS: "4", h.REPLAY_COUNT: "1"}
    value = Job(id="a", fail=1).model_dump_json().encode()
    copy = Incoming(route.replay_topics[0], 0, 3, 9, b"a", value, tuple(codec.header_list(headers)))
    out = await replaying.run(copy)
    seen = [(c.topic, c.partition, c.offset, c.timestamp_ms, c.attempt) for c in out.contexts]
    assert seen == [("jobs", 5, 41, 1_700_000_000_123, 1), ("jobs", 5, 41, 1_700_000_000_123, 2)]
    assert out.contexts[0].raw_headers == {h.REPLAY_COUNT: "1"}
    assert out.on("done") == [Done(id="a", attempt=2, partition=5)]
    assert {k: out.retries[0].headers[k] for k in origin} == origin


async def test_a_long_retry_after_picks_a_longer_tier_and_counts_one_attempt() -> None:
    out = await harness().send(Job(id="a", fail=1, retry_after=1.5))
    assert [r.topic for r in out.retries] == [ROUTE.retry_topics[1]]
    assert out.on("done") == [Done(id="a", attempt=2, partition=0)]


async def test_a_deferred_record_waits_in_the_first_tier_without_using_an_attempt() -> None:
    out = await harness().send(Job(id="a", defer=3))
    assert [r.topic for r in out.retries] == [ROUTE.retry_topics[0]] * 3
    assert out.on("done") == [Done(id="a", attempt=1, partition=0)]


async def test_an_event_the_route_does_not_declare_is_a_permanent_error() -> None:
    out = await harness().send(Job(id="a", stray=True))
    assert out.status == "dead_lettered" and "Stray is not an output of the worker route" in str(out.error)


async def test_without_burst_one_send_is_one_attempt() -> None:
    out = await harness(burst=False).send(Job(id="a", fail=1))
    assert (out.status, out.attempts, len(out.retries)) == ("retrying", 1, 1)
    again = await harness(burst=False).run(harness().record(Job(id="x")))
    assert again.status == "ok"


def test_more_retry_delays_than_the_route_declares_are_refused_at_start() -> None:
    worker = Worker()
    with pytest.raises(ValueError, match="its route declares 3 retry tiers"):
        Harness(Service(ROUTE, worker.handle), RuntimeSettings(retry_delays_seconds=[1, 2, 3, 4]))


async def test_a_failure_hook_that_raises_does_not_keep_the_record_from_its_fate() -> None:
    def broken(job: Job, ctx: Context, failure: Failure) -> Sequence[Event]:
        raise RuntimeError("hook bug")

    out = await Harness(Service(ROUTE, Worker().handle, broken)).send(Job(id="a", permanent=True))
    assert (out.status, out.outputs, len(out.dead_letters)) == ("dead_lettered", [], 1)


def test_a_retry_delay_the_retry_topics_would_not_keep_until_due_is_refused_at_start() -> None:
    """POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS is free text: a tier of 8 days (or 6 days with 20 % jitter)
    outlives the retry topics' 7 days, so its copies were deleted before due and skipped, never retried."""
    worker = Worker()
    week = 7 * 24 * 3600
    with pytest.raises(ValueError, match="reach the retry topics' retention of 7 days"):
        Harness(Service(ROUTE, worker.handle), RuntimeSettings(retry_delays_seconds=[1, 60, 8 * 24 * 3600]))
    with pytest.raises(ValueError, match=r"retry delays \[518400.0\] \(with 20% jitter\)"):
        Harness(Service(ROUTE, worker.handle), RuntimeSettings(retry_delays_seconds=[518400], retry_jitter=0.2))
    Harness(Service(ROUTE, worker.handle), RuntimeSettings(retry_delays_seconds=[week / 2], retry_jitter=0.2))
