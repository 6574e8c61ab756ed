"""`postcall dlq` on the real broker: dead letters are listed, selected and replayed, then processed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence

from schemas import headers as h
from services.cli.dlq import DeadLetter, Filters, replay, replay_headers, select
from services.cli.dlq import _one as read_letter
from services.common.api import Context, Event, PermanentError, Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from tests.support.kafka import create_topics, produce, read_all, unique
from tests.support.worker import Done, Job, WorkerSettings, route


class FlakyDeploy:
    """Fails permanently for `broken` ids until the 'fix' is deployed (broken cleared)."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    async def handle(self, job: Job, ctx: Context) -> Sequence[Event]:
        if job.id in self.broken:
            raise PermanentError(f"bug: cannot handle {job.id}")
        return [Done(id=job.id, attempt=ctx.attempt, pid=0)]


def worker(kafka: KafkaSettings, service: str, main: str, out: str, handler: FlakyDeploy) -> Runtime:
    """`handler` on the product service's dead-letter and retry topics (the dlq CLI filters by service name)."""
    settings = WorkerSettings(
        kafka=kafka,
        runtime=RuntimeSettings(metrics_port=0, retry_delays_seconds=[1.0], idle_exit_seconds=1.5),
        service=service,
        input_topic=main,
        output_topic=out,
    )
    return Runtime(
        Service(route(settings), handler.handle), kafka=kafka, settings=settings.runtime, group_id=unique("g")
    )


async def test_replay_moves_selected_dead_letters_back_and_they_are_processed(kafka: KafkaSettings) -> None:
    service = "router"  # dlq CLI filters by the product's service names
    main, out = unique("in"), unique("out")
    dlq = f"postcall.{service}.dlq.v1"
    await create_topics(kafka, [main, out, dlq, f"postcall.{service}.retry-1.v1"])
    before = len(await read_all(kafka, dlq))
    handler = FlakyDeploy({"a", "b", "c"})
    runtime = worker(kafka, service, main, out, handler)
    await produce(kafka, main, [(f"k-{i}", Job(id=i)) for i in ("a", "b", "c", "d")])
    await runtime.run()
    assert {r.json()["id"] for r in await read_all(kafka, out)} == {"d"}

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "dlq",
            "list",
            "-b",
            kafka.bootstrap_servers,
            "-s",
            service,
            "--reason",
            "cannot handle",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cannot handle a" in listed.replace("\n", " ") or "k-a" in listed

    letters = [d for d in await select(kafka, Filters((service,), reason="cannot handle")) if d.offset >= 0]
    letters = [d for d in letters if d.headers[h.ORIGINAL_TOPIC] == main]
    assert len(await read_all(kafka, dlq)) - before == 3
    chosen = [d for d in letters if d.key in (b"k-a", b"k-b")]
    handler.broken.clear()  # the fix is deployed
    assert await replay(kafka, chosen, rate=20, progress=None, by="test@host") == 2

    await asyncio.wait_for(
        Runtime(runtime.hooks, kafka=kafka, settings=runtime.settings, group_id=runtime.group_id).run(), 60
    )
    processed = [r.json()["id"] for r in await read_all(kafka, out)]
    assert sorted(processed) == ["a", "b", "d"], "only the selected dead letters ran again; d did not repeat"
    replayed = [r for r in await read_all(kafka, main) if h.REPLAYED_FROM in r.headers]
    assert {r.key for r in replayed} == {"k-a", "k-b"}
    assert all(r.headers[h.REPLAY_COUNT] == "1" and h.EXCEPTION_MESSAGE not in r.headers for r in replayed)


async def test_replayed_dead_letters_are_no_longer_listed(kafka: KafkaSettings) -> None:
    service = "extractor"
    main, out = unique("in"), unique("out")
    await create_topics(kafka, [main, out, f"postcall.{service}.dlq.v1", f"postcall.{service}.retry-1.v1"])
    runtime = worker(kafka, service, main, out, FlakyDeploy({"a", "b"}))
    await produce(kafka, main, [(f"k-{i}", Job(id=i)) for i in ("a", "b")])
    await runtime.run()

    def ours(letters: list[DeadLetter]) -> list[DeadLetter]:
        return [d for d in letters if d.headers.get(h.ORIGINAL_TOPIC) == main]

    letters = ours(await select(kafka, Filters((service,))))
    assert await replay(kafka, [d for d in letters if d.key == b"k-a"], rate=0, progress=None, by="ops@box") == 1
    assert [d.key for d in ours(await select(kafka, Filters((service,))))] == [b"k-b"]
    everything = ours(await select(kafka, Filters((service,), replayed=True)))
    assert [(d.key, d.replayed_by) for d in everything] == [(b"k-a", "ops@box"), (b"k-b", None)]
    listed = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "dlq", "list", "-b", kafka.bootstrap_servers, "-s", service],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "60"},
    ).stdout
    coordinates = next(d.coordinates for d in letters if d.key == b"k-b")
    assert coordinates in listed, "the coordinates `dlq show` takes are printed whole, even 60 columns wide"
    assert next(d.coordinates for d in letters if d.key == b"k-a") not in listed


async def test_dlq_show_of_a_topic_or_partition_that_does_not_exist_finds_no_dead_letter(kafka: KafkaSettings) -> None:
    """Used to wait 40 s and then say Kafka could not be reached (end_offsets of an unknown partition)."""
    dlq = unique("dlq")
    await create_topics(kafka, [dlq])
    for coordinates in (f"{dlq}:7:0", f"{unique('nothing')}:0:0"):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "dlq", "show", coordinates, "-b", kafka.bootstrap_servers],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (done.returncode, done.stdout.strip(), done.stderr) == (1, f"no dead letter at {coordinates}", "")


async def test_dlq_show_hides_credential_headers_and_a_replay_sends_them_as_they_were(kafka: KafkaSettings) -> None:
    """A record an outside producer copied its HTTP request's headers onto keeps them when dead-lettered;
    `dlq show` printed their values to whoever ran it (the API and the console hide them, 1425055)."""
    dlq = unique("dlq")
    await create_topics(kafka, [dlq], partitions=1)
    secrets = {
        "authorization": "Bearer abc-secret-1",
        "x-api-key": "abc-secret-2",
        "x-hub-signature-256": "sha256=abc-secret-3",
        "x-forwarded-auth": "Basic abc-secret-4",
    }
    await produce(
        kafka, dlq, [("k-1", {"id": "1"})], headers={h.ORIGINAL_TOPIC: "in", "x-request-id": "r-7", **secrets}
    )
    shown = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "dlq", "show", f"{dlq}:0:0", "-b", kafka.bootstrap_servers],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "abc-secret" not in shown
    assert shown.count("[redacted]") == len(secrets)
    assert "x-request-id: r-7" in shown and "x-original-topic: in" in shown, "other headers are shown as they are"
    [letter] = await read_letter(kafka, dlq, 0, 0)
    assert replay_headers(letter, "ops@box").items() >= secrets.items(), "a replay sends the headers as they were"
