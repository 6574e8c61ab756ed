"""The runtime on the real broker: ordering, commits, retry tiers, dead letters, kill -9 and SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from schemas import headers as h
from schemas.routes import ROUTER
from schemas.topics import dead_letter_topic, retry_topic
from services.common import runtime as runtime_module
from services.common.api import Context, DependencyUnavailable, Event, Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from tests.support import procs
from tests.support.kafka import Received, committed, create_topics, produce, read_all, unique
from tests.support.worker import Done, Job, JobHandler, WorkerSettings, build, route


@dataclass
class Topics:
    service: str
    input: str
    output: str
    tiers: int

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.service)

    def all(self) -> list[str]:
        return [self.input, self.output, self.dlq, *(retry_topic(self.service, i + 1) for i in range(self.tiers))]


async def make_topics(kafka: KafkaSettings, tiers: int = 2, partitions: int = 3) -> Topics:
    service = unique("svc")
    t = Topics(service, unique("in"), unique("out"), tiers)
    await create_topics(kafka, t.all(), partitions)
    return t


def worker_settings(kafka: KafkaSettings, t: Topics, **runtime: object) -> WorkerSettings:
    rs = RuntimeSettings(metrics_port=0, retry_delays_seconds=[1.0] * t.tiers, retry_jitter=0, **runtime)  # type: ignore[arg-type]
    return WorkerSettings(kafka=kafka, runtime=rs, service=t.service, input_topic=t.input, output_topic=t.output)


def worker_env(kafka: KafkaSettings, t: Topics, **extra: str) -> dict[str, str]:
    env = {
        "WORKER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "WORKER_SERVICE": t.service,
        "WORKER_INPUT_TOPIC": t.input,
        "WORKER_OUTPUT_TOPIC": t.output,
        "WORKER_RUNTIME__METRICS_PORT": "0",
        "WORKER_RUNTIME__RETRY_DELAYS_SECONDS": "[1.0, 1.0]",
        # a killed worker's place in the group is given up after 6 s (the broker's minimum)
        "WORKER_RUNTIME__SESSION_TIMEOUT_MS": "6000",
        "WORKER_RUNTIME__HEARTBEAT_INTERVAL_MS": "1000",
        "WORKER_RUNTIME__COMMIT_INTERVAL_SECONDS": "0.3",
    }
    env.update(extra)
    return env


@asynccontextmanager
async def running(settings: WorkerSettings) -> AsyncIterator[None]:
    runtime = build(settings)
    task = asyncio.create_task(runtime.run())
    try:
        yield
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)


async def wait_for_ids(kafka: KafkaSettings, topic: str, ids: set[str], timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        got = [r.json() for r in await read_all(kafka, topic)]
        if ids <= {g["id"] for g in got} or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.5)


def jobs(n: int, prefix: str = "j", **fields: object) -> list[tuple[str, Job]]:
    return [(f"key-{i % 17}", Job(id=f"{prefix}{i}", **fields)) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_every_record_is_processed_and_committed(kafka: KafkaSettings, fast_path: bool) -> None:
    t = await make_topics(kafka)
    await produce(kafka, t.input, jobs(300, sleep=0.01))
    async with running(worker_settings(kafka, t, max_in_flight=50, fast_path=fast_path)):
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(300)})
    assert Counter(g["id"] for g in got) == Counter({f"j{i}": 1 for i in range(300)})
    offsets = await committed(kafka, f"postcall-{t.service}", t.input, 3)
    ends = Counter(r.partition for r in await read_all(kafka, t.input))
    assert offsets == {p: ends[p] for p in range(3)}


async def test_same_key_runs_in_order_different_keys_concurrently(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, partitions=1)
    records = [("same", Job(id=f"s{i}", sleep=0.05)) for i in range(10)]
    records += [(f"k{i}", Job(id=f"d{i}", sleep=0.5)) for i in range(20)]
    await produce(kafka, t.input, records)
    started = time.monotonic()
    async with running(worker_settings(kafka, t, max_in_flight=64)):
        got = await wait_for_ids(kafka, t.output, {f"s{i}" for i in range(10)} | {f"d{i}" for i in range(20)})
    elapsed = time.monotonic() - started
    same = [g["id"] for g in got if str(g["id"]).startswith("s")]
    assert same == [f"s{i}" for i in range(10)]
    # twenty 0.5 s records with distinct keys ran side by side, not one after another (10 s)
    assert elapsed < 8


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_permanent_error_goes_to_dead_letter_without_retry(kafka: KafkaSettings, fast_path: bool) -> None:
    t = await make_topics(kafka)
    await produce(kafka, t.input, [("k1", Job(id="bad", permanent=True)), ("k2", Job(id="good"))])
    async with running(worker_settings(kafka, t, fast_path=fast_path)):
        await wait_for_ids(kafka, t.output, {"good"})
        dead = await read_all(kafka, t.dlq, expect=1, timeout=20)
    assert len(dead) == 1
    record = dead[0]
    assert record.key == "k1" and record.json()["id"] == "bad"
    for name in h.DLQ_HEADERS:
        assert record.headers.get(name), f"dead letter lacks header {name}"
    assert record.headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_PERMANENT
    assert record.headers[h.ATTEMPTS] == "1"
    assert record.headers[h.ORIGINAL_TOPIC] == t.input
    assert "permanently broken" in record.headers[h.EXCEPTION_MESSAGE]
    assert await read_all(kafka, retry_topic(t.service, 1)) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"id": 42}', "schema violation: id: Input should be a valid string"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_malformed_record_is_dead_lettered_and_service_goes_on(
    kafka: KafkaSettings, raw: bytes, reason: str
) -> None:
    t = await make_topics(kafka)
    await produce(kafka, t.input, [("k", raw), ("k", Job(id="after"))])
    async with running(worker_settings(kafka, t)):
        await wait_for_ids(kafka, t.output, {"after"})
        dead = await read_all(kafka, t.dlq, expect=1, timeout=20)
    assert [d.value for d in dead] == [raw]
    assert dead[0].headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_POISON
    assert reason.lower() in dead[0].headers[h.EXCEPTION_MESSAGE].lower()


async def test_retry_tiers_never_process_a_record_before_its_due_time(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, tiers=2)
    await produce(kafka, t.input, [("k", Job(id="flaky", fail=2))])
    settings = worker_settings(kafka, t)
    settings.runtime.retry_delays_seconds = [2.0, 3.0]
    async with running(settings):
        got = await wait_for_ids(kafka, t.output, {"flaky"}, timeout=40)
    assert [(g["id"], g["attempt"]) for g in got] == [("flaky", 3)]
    tier1 = (await read_all(kafka, retry_topic(t.service, 1)))[0]
    tier2 = (await read_all(kafka, retry_topic(t.service, 2)))[0]
    out = (await read_all(kafka, t.output))[0]
    # due = failure time + 2 s; the copy is produced a few milliseconds after the failure
    assert float(tier1.headers[h.RETRY_DUE_AT]) >= 2.0 + _produced_at(tier1) - 0.1
    # the second tier copy was written by attempt 2, which ran no earlier than tier 1's due time
    assert _produced_at(tier2) >= float(tier1.headers[h.RETRY_DUE_AT])
    assert _produced_at(out) >= float(tier2.headers[h.RETRY_DUE_AT])
    assert tier2.headers[h.ORIGINAL_TOPIC] == t.input
    assert await read_all(kafka, t.dlq) == []


def _produced_at(record: Received) -> float:
    return record.timestamp_ms / 1000


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_retries_exhausted_go_to_dead_letter_with_attempt_count(kafka: KafkaSettings, fast_path: bool) -> None:
    t = await make_topics(kafka, tiers=2)
    await produce(kafka, t.input, [("k", Job(id="hopeless", fail=99))])
    async with running(worker_settings(kafka, t, fast_path=fast_path)):
        dead = await read_all(kafka, t.dlq, expect=1, timeout=60)
    assert dead[0].headers[h.DLQ_FAILURE_CATEGORY] == h.CATEGORY_RETRIES_EXHAUSTED
    assert dead[0].headers[h.ATTEMPTS] == "3"
    assert dead[0].headers[h.ORIGINAL_TOPIC] == t.input
    assert h.RETRY_DUE_AT not in dead[0].headers


async def test_head_of_line_record_survives_kill_9(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, partitions=1)
    await produce(kafka, t.input, [("slow", Job(id="slow"))] + [(f"f{i}", Job(id=f"f{i}")) for i in range(300)])
    first = procs.start("tests.support.worker", worker_env(kafka, t, WORKER_SLOW_IDS='["slow"]'))
    try:
        fast = {f"f{i}" for i in range(300)}
        await wait_for_ids(kafka, t.output, fast, timeout=60)
        await asyncio.sleep(1)  # a commit interval passes; the committed offset must stay at the slow record
        first.kill9()
    finally:
        first.stop()
    offsets = await committed(kafka, f"postcall-{t.service}", t.input, 1)
    assert offsets[0] in (None, 0), "the commit passed a record that was still running"
    second = procs.start("tests.support.worker", worker_env(kafka, t))
    try:
        got = await wait_for_ids(kafka, t.output, fast | {"slow"}, timeout=60)
    finally:
        second.term()
    assert {g["id"] for g in got} == fast | {"slow"}, second.output()[-3000:]


async def test_fast_path_commits_never_pass_an_unacknowledged_output_under_kill_9(kafka: KafkaSettings) -> None:
    """Batches are acknowledged as a whole before their offsets are finished: at any kill, every record
    below the committed offset has its output on the output topic."""
    t = await make_topics(kafka, partitions=1)
    n = 300
    await produce(kafka, t.input, [(f"k{i % 7}", Job(id=f"j{i}", sleep=0.03)) for i in range(n)])
    env = worker_env(kafka, t, WORKER_RUNTIME__FAST_PATH="true")
    first = procs.start("tests.support.worker", env)
    try:
        await _wait_committed(kafka, f"postcall-{t.service}", t.input, first, at_least=40)
        first.kill9()  # mid-stream: commits have passed some records, most are still to come
    finally:
        first.stop()
    committed_at = (await committed(kafka, f"postcall-{t.service}", t.input, 1))[0] or 0
    done = {r.json()["id"] for r in await read_all(kafka, t.output)}
    assert 0 < committed_at < n, "the kill should land mid-stream"
    assert {f"j{i}" for i in range(committed_at)} <= done, "a commit passed a record whose output was not acked"
    second = procs.start("tests.support.worker", env)
    try:
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(n)}, timeout=60)
    finally:
        second.term()
    assert {g["id"] for g in got} == {f"j{i}" for i in range(n)}, second.output()[-3000:]


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_sigterm_drains_in_flight_records_and_nothing_repeats(kafka: KafkaSettings, fast_path: bool) -> None:
    t = await make_topics(kafka)
    await produce(kafka, t.input, jobs(30, sleep=2.0))
    fast = {"WORKER_RUNTIME__FAST_PATH": "true"} if fast_path else {}
    first = procs.start("tests.support.worker", worker_env(kafka, t, WORKER_RUNTIME__MAX_IN_FLIGHT="20", **fast))
    try:
        await _wait_started(kafka, t, first)
        assert first.term(timeout=60) == 0, first.output()[-3000:]
    finally:
        first.stop()
    before = {r.json()["id"] for r in await read_all(kafka, t.output)}
    assert before, "nothing finished before SIGTERM"
    second = procs.start("tests.support.worker", worker_env(kafka, t))
    try:
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(30)}, timeout=60)
    finally:
        second.term()
    counts = Counter(g["id"] for g in got)
    assert set(counts) == {f"j{i}" for i in range(30)}
    assert max(counts.values()) == 1, f"repeated after a clean stop: {[k for k, v in counts.items() if v > 1]}"


async def _wait_committed(kafka: KafkaSettings, group: str, topic: str, proc: procs.Proc, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while ((await committed(kafka, group, topic, 1))[0] or 0) < at_least:
        assert proc.alive() and time.monotonic() < deadline, proc.output()[-3000:]
        await asyncio.sleep(0.1)


async def _wait_started(kafka: KafkaSettings, t: Topics, proc: procs.Proc) -> None:
    deadline = time.monotonic() + 30
    while "partitions assigned" not in proc.output() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # records are now in flight (each sleeps 2 s)


async def test_two_instances_one_stopped_mid_stream_loses_nothing(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, partitions=6)
    n = 1500
    await produce(kafka, t.input, jobs(n, sleep=0.01))
    env = worker_env(kafka, t, WORKER_RUNTIME__MAX_IN_FLIGHT="40")
    a, b = procs.start("tests.support.worker", env), procs.start("tests.support.worker", env)
    try:
        deadline = time.monotonic() + 60
        while len(await read_all(kafka, t.output)) < n // 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert a.term(timeout=60) == 0, a.output()[-3000:]
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(n)}, timeout=90)
    finally:
        a.stop()
        b.term()
    counts = Counter(g["id"] for g in got)
    assert set(counts) == {f"j{i}" for i in range(n)}, b.output()[-3000:]
    repeats = sum(v - 1 for v in counts.values())
    # repeats only within the stopped instance's in-flight window
    assert repeats <= 40


async def test_records_arriving_while_the_assign_hook_runs_are_not_lost(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka)
    await produce(kafka, t.input, jobs(200))
    settings = worker_settings(kafka, t)

    async def slow_restore(partitions: list[tuple[str, int]]) -> None:
        await asyncio.sleep(2)  # e.g. the dispatcher reading its ledger

    service = Service(route(settings), JobHandler(settings).handle, on_assigned=slow_restore)
    runtime = Runtime(service, kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(200)})
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    assert {g["id"] for g in got} == {f"j{i}" for i in range(200)}


def test_more_retry_delays_than_the_route_declares_are_refused_at_start() -> None:
    async def handle(event: object, ctx: Context) -> list[Event]:
        return []

    with pytest.raises(ValueError, match="its route declares 3 retry tiers"):
        settings = RuntimeSettings(retry_delays_seconds=[1, 2, 3, 4])
        Runtime(Service(ROUTER, handle), kafka=KafkaSettings(), settings=settings)


async def test_forged_hop_headers_on_the_main_topic_are_ignored(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka)
    forged = {h.ATTEMPTS: "abc", h.ORIGINAL_PARTITION: "-9", h.RETRY_DUE_AT: "9999999999"}
    await produce(kafka, t.input, [("k", Job(id="forged"))], headers=forged)
    await produce(kafka, t.input, [("k", Job(id="after"))])
    async with running(worker_settings(kafka, t)):
        got = await wait_for_ids(kafka, t.output, {"forged", "after"})
    assert sorted((g["id"], g["attempt"]) for g in got) == [("after", 1), ("forged", 1)]
    offsets = await committed(kafka, f"postcall-{t.service}", t.input, 3)
    assert sum(o or 0 for o in offsets.values()) == 2, "the partition's commits must move past the forged record"


async def oversized(job: Job, ctx: Context) -> Sequence[Event]:
    """An output over the producer's 8 MiB request limit for ids starting with 'big'."""
    size = 9 * 1024 * 1024 if job.id.startswith("big") else 10
    return [Done(id=job.id, attempt=ctx.attempt, pid=0, event_id="x" * size)]


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_outputs_too_large_to_produce_dead_letter_the_input_instead_of_stalling(
    kafka: KafkaSettings, fast_path: bool
) -> None:
    t = await make_topics(kafka, partitions=1)
    await produce(kafka, t.input, [("k", Job(id="big-1")), ("k", Job(id="small"))])
    settings = worker_settings(kafka, t, fast_path=fast_path)
    runtime = Runtime(Service(route(settings), oversized), kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        got = await wait_for_ids(kafka, t.output, {"small"})
        dead = await read_all(kafka, t.dlq, expect=1, timeout=30)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    assert [g["id"] for g in got] == ["small"]
    assert dead and dead[0].json()["id"] == "big-1"
    assert "outputs cannot be produced" in dead[0].headers[h.EXCEPTION_MESSAGE]
    assert (await committed(kafka, f"postcall-{t.service}", t.input, 1))[0] == 2


async def test_a_deferred_record_waits_in_the_first_tier_without_using_an_attempt(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, tiers=2)
    await produce(kafka, t.input, [("k", Job(id="busy", defer=3))])
    async with running(worker_settings(kafka, t)):
        got = await wait_for_ids(kafka, t.output, {"busy"}, timeout=40)
    assert [(g["id"], g["attempt"]) for g in got] == [("busy", 1)]
    assert len(await read_all(kafka, retry_topic(t.service, 1))) == 3
    assert await read_all(kafka, retry_topic(t.service, 2)) == []
    assert await read_all(kafka, t.dlq) == []


async def test_a_long_retry_after_picks_a_longer_tier_and_counts_one_attempt(kafka: KafkaSettings) -> None:
    t = await make_topics(kafka, tiers=2)
    await produce(kafka, t.input, [("k", Job(id="slow-down", fail=1, retry_after=1.5))])
    settings = worker_settings(kafka, t)
    settings.runtime.retry_delays_seconds = [1.0, 2.0]
    async with running(settings):
        got = await wait_for_ids(kafka, t.output, {"slow-down"}, timeout=40)
    assert [(g["id"], g["attempt"]) for g in got] == [("slow-down", 2)]
    assert await read_all(kafka, retry_topic(t.service, 1)) == []
    assert len(await read_all(kafka, retry_topic(t.service, 2))) == 1


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_an_unavailable_dependency_is_waited_out_in_place_and_the_record_handled_once(
    kafka: KafkaSettings, fast_path: bool
) -> None:
    """DependencyUnavailable is not the record's fault: no retry tier, no dead letter, no attempt used;
    the record is handled again once the pause is over, its output produced once, its offset committed."""
    t = await make_topics(kafka, partitions=1)
    await produce(kafka, t.input, [("k", Job(id=f"j{i}")) for i in range(5)])
    outages: Counter[str] = Counter()

    async def flaky(job: Job, ctx: Context) -> Sequence[Event]:
        if job.id == "j2" and outages[job.id] < 2:
            outages[job.id] += 1
            raise DependencyUnavailable("the store is down", retry_after=0.2)
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]

    settings = worker_settings(kafka, t, fast_path=fast_path, unavailable_backoff_seconds=0.2)
    runtime = Runtime(Service(route(settings), flaky), kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        got = await wait_for_ids(kafka, t.output, {f"j{i}" for i in range(5)})
        await asyncio.sleep(1)  # a commit interval: the offsets of all five
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    assert outages["j2"] == 2
    assert Counter(g["id"] for g in got) == Counter({f"j{i}": 1 for i in range(5)})
    assert all(g["attempt"] == 1 for g in got)
    assert await read_all(kafka, t.dlq) == []
    assert (await committed(kafka, f"postcall-{t.service}", t.input, 1))[0] == 5


async def test_the_services_backpressure_stops_taking_records_until_it_is_off(kafka: KafkaSettings) -> None:
    """Service.capacity (the dispatcher's destination lines): no new records while it is 0, and the
    held ones are not lost or repeated once it is off."""
    t = await make_topics(kafka, partitions=1)
    settings = worker_settings(kafka, t, max_in_flight=100)
    handler, pressed, handled = JobHandler(settings), [False], []

    async def handle(job: Job, ctx: Context) -> Sequence[Event]:
        handled.append(job.id)
        pressed[0] = pressed[0] or job.id == "first"  # the first record turns it on
        return await handler.handle(job, ctx)

    service = Service(route(settings), handle, capacity=lambda: 0 if pressed[0] else 1000)
    runtime = Runtime(service, kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        await produce(kafka, t.input, [("k", Job(id="first"))])
        await wait_for_ids(kafka, t.output, {"first"})
        await produce(kafka, t.input, jobs(20, prefix="held"))
        await asyncio.sleep(3)  # well past the poll timeout: the runtime would have taken them by now
        assert handled == ["first"]
        pressed[0] = False
        got = await wait_for_ids(kafka, t.output, {f"held{i}" for i in range(20)})
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    assert Counter(g["id"] for g in got) == Counter({"first": 1, **{f"held{i}": 1 for i in range(20)}})


async def test_an_output_on_the_inputs_partition_with_fewer_partitions_is_refused_at_start(
    kafka: KafkaSettings,
) -> None:
    """The dispatcher writes its ledger on the action's partition number. With an action topic given more
    partitions than the output, a record of a higher partition could never be written: aiokafka asserts
    on the partition, the runtime stopped on it and met it again at every start. Now it does not start."""
    service, source, out = unique("svc"), unique("in"), unique("out")
    await create_topics(kafka, [source, dead_letter_topic(service), retry_topic(service, 1)], 3)
    await create_topics(kafka, [out], 2)
    settings = WorkerSettings(
        kafka=kafka,
        runtime=RuntimeSettings(metrics_port=0, retry_delays_seconds=[1.0]),
        service=service,
        input_topic=source,
        output_topic=out,
    )
    base = route(settings)
    on_input = dataclasses.replace(base, produces=(dataclasses.replace(base.produces[0], partition="input"),))
    runtime = Runtime(Service(on_input, JobHandler(settings).handle), kafka=kafka, settings=settings.runtime)
    with pytest.raises(RuntimeError) as refused:
        await asyncio.wait_for(runtime.run(), 60)
    assert str(refused.value) == (
        f"{service}: records are written on the partition number they arrived on, so each output needs at least "
        f"as many partitions as each input: {source} has 3 partitions, {out} 2 (add partitions to the output: "
        f"kafka-topics.sh --bootstrap-server {kafka.bootstrap_servers} --alter --topic {out} --partitions 3)"
    )


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_a_retry_copy_due_later_than_its_tier_could_choose_waits_no_longer_than_the_tier(
    kafka: KafkaSettings, fast_path: bool
) -> None:
    """A retry copy whose due time lies past anything its tier's delay could give (a producer clock years
    ahead, a header written by hand) waited until then with its partition paused: every copy behind it
    stalled for years. It waits at most the tier's longest delay from when it is read."""
    t = await make_topics(kafka, tiers=1, partitions=1)
    tier1 = retry_topic(t.service, 1)
    copy = {h.ORIGINAL_TOPIC: t.input, h.ORIGINAL_PARTITION: "0", h.ORIGINAL_OFFSET: "0", h.ATTEMPTS: "1"}
    far = copy | {h.RETRY_DUE_AT: f"{time.time() + 10 * 365 * 86400:.3f}"}
    await produce(kafka, tier1, [("k", Job(id="far"))], headers=far)
    await produce(kafka, tier1, [("k", Job(id="behind"))], headers=copy | {h.RETRY_DUE_AT: "0"})
    async with running(worker_settings(kafka, t, fast_path=fast_path)):  # tier delay 1 s, no jitter
        got = await wait_for_ids(kafka, t.output, {"far", "behind"}, timeout=30)
    assert sorted(g["id"] for g in got) == ["behind", "far"]


async def test_a_missing_topic_refuses_the_start_naming_it(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "TOPIC_WAIT_SECONDS", 1.0)
    t = Topics(unique("svc"), unique("in"), unique("out"), 1)  # none of them created
    settings = worker_settings(kafka, t)
    runtime = Runtime(Service(route(settings), JobHandler(settings).handle), kafka=kafka, settings=settings.runtime)
    with pytest.raises(RuntimeError, match=f"topics missing on the cluster: .*{t.input}"):
        await asyncio.wait_for(runtime.run(), 60)


async def test_told_to_stop_while_waiting_for_topics_is_a_clean_stop_not_a_missing_topic(kafka: KafkaSettings) -> None:
    """SIGTERM while topics are still being created (a rollout during `postcall topics create`) ended the
    process with "topics missing on the cluster", as if the cluster lacked them: a stop is a stop."""
    t = Topics(unique("svc"), unique("in"), unique("out"), 1)
    settings = worker_settings(kafka, t)
    runtime = Runtime(Service(route(settings), JobHandler(settings).handle), kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    await asyncio.sleep(3)  # connected and waiting for the topics
    assert not task.done()
    runtime.stop()
    await asyncio.wait_for(task, 30)  # returns; raised RuntimeError("... topics missing ...") before
    assert not runtime.started


@pytest.mark.parametrize("fast_path", [False, True], ids=["task-per-record", "fast-path"])
async def test_a_copy_in_a_retry_tier_the_settings_no_longer_use_is_still_handled(
    kafka: KafkaSettings, fast_path: bool
) -> None:
    """POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS may name fewer tiers than the route declares (the dispatcher's
    10 h tier cut during an incident). The runtime then read only the tiers it writes: a copy already
    waiting in a later tier was never read again, neither handled nor dead-lettered, until its topic's
    retention deleted it. Every tier the route declares is read; only the configured ones are written."""
    t = await make_topics(kafka, tiers=2, partitions=1)
    copy = {h.ORIGINAL_TOPIC: t.input, h.ORIGINAL_PARTITION: "0", h.ORIGINAL_OFFSET: "0", h.ATTEMPTS: "2"}
    copy[h.RETRY_DUE_AT] = "0"  # written by a run whose settings had two tiers
    await produce(kafka, retry_topic(t.service, 2), [("k", Job(id="waiting", fail=2))], headers=copy)
    settings = worker_settings(kafka, t, fast_path=fast_path)  # the route: two tiers
    service = Service(route(settings), JobHandler(settings).handle)
    settings.runtime.retry_delays_seconds = [1.0]  # the settings: one
    runtime = Runtime(service, kafka=kafka, settings=settings.runtime)
    task = asyncio.create_task(runtime.run())
    try:
        got = await wait_for_ids(kafka, t.output, {"waiting"}, timeout=30)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    assert [(g["id"], g["attempt"]) for g in got] == [("waiting", 3)]
