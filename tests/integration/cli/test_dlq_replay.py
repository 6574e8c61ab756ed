"""`postcall dlq` on the real broker: dead letters are listed, selected and replayed, then processed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select as sql

from schemas import headers as h
from services.cli.dlq import DeadLetter, Filters, replay, replay_headers, select
from services.cli.dlq import _one as read_letter
from services.common.api import Context, Event, PermanentError, Service
from services.common.runtime import Runtime
from services.common.settings import KafkaSettings, RuntimeSettings
from services.store import claims, writer
from services.store import rows as r
from services.store.db import Store
from services.store.models import DeadLetter as StoredLetter
from services.store.settings import DatabaseSettings
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


async def test_a_command_line_replay_with_a_store_skips_a_letter_another_replay_is_sending(
    kafka: KafkaSettings, database_url: str
) -> None:
    """`dlq replay` took no claim: while the console's replay of a letter held it (claimed, sending), the
    command line sent it too, and it reached its topic twice. With a store it claims each letter first,
    as the API does: the held one is skipped and said so, the other is sent and marked replayed."""
    service, main, token = "router", unique("in"), unique("bug")
    dlq = f"postcall.{service}.dlq.v1"
    await create_topics(kafka, [main, dlq])
    headers = {h.ORIGINAL_TOPIC: main, h.EXCEPTION_MESSAGE: f"PermanentError: {token}"}
    await produce(kafka, dlq, [("k-held", {"id": "1"}), ("k-free", {"id": "2"})], headers=headers)
    letters = {d.key: d for d in await select(kafka, Filters((service,), reason=token))}
    async with Store.open(DatabaseSettings.model_validate({"url": database_url}), writer=True) as store:
        for d in letters.values():
            source = r.Source(d.topic, d.partition, d.offset, d.timestamp_ms)
            await writer.write(store, r.dead_letter(source, service, d.key, d.value, d.headers))
        async with store.read() as conn:
            ids = {row.key: row.id for row in await conn.execute(sql(StoredLetter.key, StoredLetter.id))}
        console, got = await claims.claim(store, [(ids["k-held"], None)], timedelta(minutes=5))
        assert got == {ids["k-held"]}
        cli = [sys.executable, "-m", "services.cli.main", "dlq", "replay", "-b", kafka.bootstrap_servers]
        done = subprocess.run(
            [*cli, "-s", service, "--reason", token, "--rate", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200", "POSTCALL_DATABASE__URL": database_url},
        )
        assert done.returncode == 0, done.stderr
        dry = subprocess.run(
            [*cli, "-s", service, "--reason", token, "--dry-run", "--database-url", database_url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
        async with store.read() as conn:
            rows = {row.key: row for row in await conn.execute(sql(StoredLetter))}
    assert f"skipped {letters[b'k-held'].coordinates}: another replay is sending it" in done.stdout
    assert "replayed 1 dead letter(s)" in done.stdout
    assert f"would skip {letters[b'k-held'].coordinates}" in dry.stdout, "a dry run says what a replay would skip"
    assert "0 dead letter(s) would be replayed" in dry.stdout, dry.stdout
    assert [c.key for c in await read_all(kafka, main)] == ["k-free"], "the held letter is left to its replay"
    assert rows["k-free"].replayed_at is not None and rows["k-free"].replay_claim is None
    assert (rows["k-held"].replayed_at, rows["k-held"].replay_claim) == (None, console)
