"""The recorder's handler on the in-memory harness: which rows each topic's records become, and fates."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from schemas import headers as h
from schemas.routes import RECORDER
from schemas.topics import ACTION_RESULTS, CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS, MAX_MESSAGE_BYTES
from services.cli.dlq import DeadLetter, replay_records
from services.common import codec
from services.common.errors import DependencyUnavailable, PermanentError
from services.common.harness import Harness, Incoming
from services.common.settings import RuntimeSettings
from services.recorder.batcher import Batcher, max_wait
from services.recorder.handler import Recorder
from services.store.rows import Rows
from tests.support.calls import T0, ended, extracted, story

MS = int(T0.timestamp() * 1000)


class Collecting:
    """Stands in for the batcher: keeps what it is given (or fails like an unreachable store)."""

    def __init__(self, down: bool = False, refusing: bool = False) -> None:
        self.rows: list[Rows] = []
        self.down = down
        self.refusing = refusing

    async def add(self, rows: Rows) -> None:
        if self.down:
            raise DependencyUnavailable("the store is unavailable")
        if self.refusing:  # as the batcher fails a record the store refused
            raise PermanentError("the store refused this record: DataError: value out of range")
        self.rows.append(rows)

    def capacity(self) -> int:
        return 64


def harness(batcher: Collecting, retention_days: float = 100_000) -> Harness[Any]:
    return Harness(Recorder(batcher, retention_days).service())  # type: ignore[arg-type]


async def test_each_main_topic_becomes_its_rows() -> None:
    batcher = Collecting()
    recorder = harness(batcher)
    for _, value in story("c1"):
        assert (await recorder.send(value, timestamp_ms=MS)).status == "ok"
    ended_rows, extracted_rows, decided_rows, webhook, email = batcher.rows
    assert ended_rows.conversations[0]["conversation_id"] == "c1"
    assert extracted_rows.extractions[0]["kafka_topic"] == CONVERSATION_EXTRACTED
    assert {a["flow_id"] for a in decided_rows.actions} == {"crm-sync"}
    assert (webhook.attempts[0]["outcome"], email.attempts[0]["outcome"]) == ("delivered", "published")
    assert {t for t, _ in story("c1")} == {CONVERSATION_ENDED, CONVERSATION_EXTRACTED, DECISIONS, ACTION_RESULTS}


async def test_a_record_that_does_not_fit_its_schema_is_dead_lettered() -> None:
    batcher = Collecting()
    done = await harness(batcher).send(b"{nope", topic=CONVERSATION_ENDED, key="c1", timestamp_ms=MS)
    assert done.status == "dead_lettered" and not batcher.rows
    assert done.dead_letters[0].topic == RECORDER.dead_letter_topic


async def test_a_dead_letter_is_stored_whatever_its_value_with_its_headers() -> None:
    batcher = Collecting()
    recorder = harness(batcher)
    headers = {h.EXCEPTION_MESSAGE: "InvalidRecord: not valid JSON", h.ATTEMPTS: "4"}
    for value in (b"\xff\xfe", None, ended("c9").model_dump_json().encode()):
        done = await recorder.send(value, topic="postcall.extractor.dlq.v1", key="c9", headers=headers, timestamp_ms=MS)
        assert done.status == "ok"
    for rows, value in zip(batcher.rows, (b"\xff\xfe", None, ended("c9").model_dump_json().encode()), strict=True):
        (row,) = rows.dead_letters
        assert (row["service"], row["value"], row["attempts"]) == ("extractor", value, 4)
        assert row["reason"] == "InvalidRecord: not valid JSON" and row["conversation_id"] == "c9"


async def test_a_replay_marker_marks_instead_of_adding_a_dead_letter() -> None:
    batcher = Collecting()
    marker = {h.DLQ_REPLAYED: "postcall.router.dlq.v1:1:3", h.REPLAYED_BY: "ops@box"}
    await harness(batcher).send(b"{}", topic="postcall.router.dlq.v1", headers=marker, timestamp_ms=MS)
    (rows,) = batcher.rows
    assert not rows.dead_letters and rows.replays[0]["kafka_offset"] == 3


async def test_a_conversation_republished_by_the_command_line_is_audited() -> None:
    batcher = Collecting()
    event = ended("c-re")
    copy = {"ce_id": "ce-2", h.REEXTRACT_OF: event.event_id, h.REEXTRACTED_BY: "ops@box"}
    await harness(batcher).send(event, headers=copy, timestamp_ms=MS)
    (rows,) = batcher.rows
    assert rows.conversations and [(a["actor"], a["action"]) for a in rows.audits] == [("ops@box", "reextract")]


async def test_a_dispatcher_retry_copy_says_when_the_next_attempt_is_due() -> None:
    batcher = Collecting()
    action = {"action_id": "a1", "conversation_id": "c1", "type": "webhook"}
    headers = {h.ATTEMPTS: "2", h.RETRY_DUE_AT: f"{T0.timestamp() + 60:.3f}"}
    await harness(batcher).send(orjson.dumps(action), topic="postcall.dispatcher.retry-2.v1", headers=headers)
    (row,) = batcher.rows[0].retries
    assert (row["action_id"], row["attempt"], (row["due_at"] - T0).total_seconds()) == ("a1", 3, 60)


async def test_records_older_than_the_retention_are_skipped() -> None:
    batcher = Collecting()
    done = await harness(batcher, retention_days=1).send(ended("c1"), timestamp_ms=MS)
    assert done.status == "ok" and not batcher.rows


async def test_an_unreachable_store_pauses_instead_of_dead_lettering() -> None:
    done = await harness(Collecting(down=True)).send(ended("c1"), timestamp_ms=MS)
    assert done.status == "unavailable" and not done.dead_letters


async def test_a_store_slower_than_the_handler_timeout_pauses_instead_of_dead_lettering() -> None:
    """A write the store does not finish within the handler timeout (a migration's table lock in a rolling
    upgrade, a connection left hanging by a failover, records queued behind such a batch) ran into the
    runtime's handler timeout: a RetryableError, and with no retry tiers every record in flight was
    dead-lettered, its rows stored only as a recorder dead letter to replay. The store is not ready: the
    records wait, as for an unreachable one, and nothing piles up in the batcher meanwhile."""
    writes: list[list[str]] = []
    stuck = asyncio.Event()

    async def write(rows: Rows) -> None:
        writes.append([r["conversation_id"] for r in rows.conversations])
        await stuck.wait()

    settings = RuntimeSettings(**RECORDER.runtime_defaults(), metrics_port=0, handler_timeout_seconds=0.5)
    async with Batcher(write, max_delay_seconds=0.0, max_wait_seconds=max_wait(settings)) as batcher:
        harness = Harness(Recorder(batcher, 100_000).service(), settings)
        first, second = await asyncio.gather(
            harness.send(ended("c1"), timestamp_ms=MS), harness.send(ended("c2"), timestamp_ms=MS)
        )
        assert (first.status, second.status) == ("unavailable", "unavailable"), (first.error, second.error)
        assert not first.dead_letters and "the store" in str(first.error)
        again = await harness.send(ended("c2"), timestamp_ms=MS)  # retried in place while the write still hangs
        assert again.status == "unavailable"
        stuck.set()
        await asyncio.sleep(0.05)
    assert len(writes) == 1, writes  # the rows of the attempts given up on were not written again


async def test_an_action_record_keeps_its_payload_and_a_task_or_team_alert_for_the_console() -> None:
    from schemas.events import TaskRequested, TeamAlertRequested, WebhookRequested

    base = {
        "conversation_id": "c1",
        "agent_id": "support-line",
        "flow_id": "callback",
        "config_revision": "rev",
        "requested_at": T0,
        "source_event_id": "x",
    }
    batcher = Collecting()
    recorder = harness(batcher)
    for action in (
        TaskRequested(**base, action_id="a0", action_index=0, title="Call back", priority="High"),
        TeamAlertRequested(**base, action_id="a1", action_index=1, message="Complaint", teammates=["dana"]),
        WebhookRequested(**base, action_id="a2", action_index=2, destination="crm", body={"n": 1}),
    ):
        assert (await recorder.send(action, timestamp_ms=MS)).status == "ok"
    task, alert, webhook = batcher.rows
    assert [r["action_id"] for r in (*task.requests, *alert.requests, *webhook.requests)] == ["a0", "a1", "a2"]
    assert orjson.loads(webhook.requests[0]["payload"])["body"] == {"n": 1}
    assert (task.tasks[0]["title"], task.tasks[0]["priority"], task.tasks[0]["done_at"]) == ("Call back", "High", None)
    assert orjson.loads(alert.alerts[0]["teammates"]) == ["dana"] and not webhook.tasks and not webhook.alerts


async def test_a_record_of_its_own_dead_letter_topic_that_fails_is_not_dead_lettered_again() -> None:
    """The recorder reads its own dead-letter topic: a dead letter of one of them would land on the topic
    it came from, be read and fail again, forever (an oversized dead letter did, 5 MB a turn)."""
    settings = RuntimeSettings(
        **{**RECORDER.runtime_defaults(), "max_record_bytes": 64}, retry_jitter=0, metrics_port=0
    )
    recorder = Harness(Recorder(Collecting(), 100_000).service(), settings)  # type: ignore[arg-type]
    big = b"x" * 100
    first = await recorder.send(big, topic="postcall.extractor.dlq.v1", key="c1", timestamp_ms=MS)
    (letter,) = first.dead_letters  # once, onto its own dead-letter topic
    assert letter.topic == RECORDER.dead_letter_topic
    again = await recorder.send(letter.value, topic=letter.topic, key="c1", headers=letter.headers, timestamp_ms=MS)
    assert again.status == "dead_lettered" and not again.dead_letters
    assert not recorder.produced[RECORDER.dead_letter_topic][1:]


async def test_a_dead_letter_as_large_as_its_topic_allows_is_stored() -> None:
    """A record over the runtime's default max_record_bytes (4 MB) is dead-lettered as poison, whole: its
    dead letter is as large, up to the topics' 8 MB. The recorder refused it as poison in turn, so the dead
    letter never reached the store (nor the console's dead-letter list)."""
    batcher = Collecting()
    value = b"x" * (MAX_MESSAGE_BYTES - 1024)
    done = await harness(batcher).send(value, topic="postcall.extractor.dlq.v1", key="c1", timestamp_ms=MS)
    assert done.status == "ok", done.error
    assert batcher.rows[0].dead_letters[0]["value"] == value


def replayed(letter: Any, offset: int, by: str = "ops@box") -> tuple[str, Incoming]:
    """`postcall dlq replay` (and the console's redrive: one function) of a dead letter the harness wrote:
    the topic its copy goes to, and the copy as the recorder then reads it."""
    stored = DeadLetter(RECORDER.dead_letter_topic, 0, offset, MS + 5000, letter.key, letter.value, letter.headers)
    (copy,) = replay_records([stored], by)
    headers = tuple(codec.header_list(copy.headers))
    return copy.topic, Incoming(copy.topic, 0, 0, MS + 9000, copy.key, copy.value, headers)


async def test_a_replayed_recorder_dead_letter_comes_back_to_the_recorder_alone_as_the_original() -> None:
    """The store refused a conversation and an extraction (dead-lettered at once: no retry tiers). Replayed to
    their original topics, the extractor would have extracted the conversation again (a flow firing only now
    sends its actions) and the extraction been stored at the copy's offset; replayed now, they go to the
    recorder's own replay topic, which it reads as if from the original topic, partition and offset: the
    same rows the original records make, keyed by the same coordinates (a second read of the original adds
    nothing), and the same record time."""
    event = ended("c-refused")
    originals = [(CONVERSATION_ENDED, event, 4, MS), (CONVERSATION_EXTRACTED, extracted(event), 7, MS + 1000)]
    for number, (topic, value, partition, ts) in enumerate(originals):
        refused = harness(Collecting(refusing=True))
        original = refused.record(value, topic=topic, partition=partition, ts=ts)
        original = Incoming(topic, partition, 41, ts, original.key, original.value, original.headers)
        failed = await refused.run(original)
        assert failed.status == "dead_lettered" and failed.error is not None
        (letter,) = failed.dead_letters

        target, copy = replayed(letter, number)
        assert target == RECORDER.replay_topics[0] == "postcall.recorder.replay.v1"
        replaying, first_time = Collecting(), Collecting()
        assert (await harness(replaying).run(copy)).status == "ok"
        assert (await harness(first_time).run(original)).status == "ok"
        assert replaying.rows == first_time.rows and len(replaying.rows[0])


async def test_a_replay_the_store_refuses_again_is_dead_lettered_naming_its_original_topic() -> None:
    """Its new dead letter says where the record first arrived (not the replay topic), so it can be replayed
    again, and counts the replay."""
    refused = harness(Collecting(refusing=True))
    first = await refused.send(ended("c-twice"), partition=2, timestamp_ms=MS)
    _, copy = replayed(first.dead_letters[0], 0)
    again = await refused.run(copy)
    (letter,) = again.dead_letters
    assert letter.topic == RECORDER.dead_letter_topic
    assert (letter.headers[h.ORIGINAL_TOPIC], letter.headers[h.ORIGINAL_PARTITION]) == (CONVERSATION_ENDED, "2")
    assert (letter.headers[h.ATTEMPTS], letter.headers[h.REPLAY_COUNT]) == ("1", "1")
    assert replayed(letter, 1)[0] == RECORDER.replay_topics[0]


async def test_a_replayed_dead_letter_of_another_service_is_stored_at_its_own_coordinates() -> None:
    """A dead letter the recorder took from the router's dead-letter topic and the store refused: replayed,
    it is stored as the router's letter at its place there, not written back to the router's topic (where
    `dlq list` showed it pending again, a second letter). Its own hop headers were replaced by the
    recorder's when it was dead-lettered: the row does not claim the replay's as its own."""
    refused = harness(Collecting(refusing=True))
    router_headers = {h.EXCEPTION_MESSAGE: "PermanentError: bad flow", h.ORIGINAL_TOPIC: CONVERSATION_EXTRACTED}
    dlq = "postcall.router.dlq.v1"
    failed = await refused.send(b"{}", topic=dlq, key="c-r", partition=1, headers=router_headers, timestamp_ms=MS)
    target, copy = replayed(failed.dead_letters[0], 0)
    assert target == RECORDER.replay_topics[0]
    batcher = Collecting()
    assert (await harness(batcher).run(copy)).status == "ok"
    (row,) = batcher.rows[0].dead_letters
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (dlq, 1, 0)
    assert (row["service"], row["original_topic"], row["dead_lettered_at"].timestamp() * 1000) == ("router", None, MS)
