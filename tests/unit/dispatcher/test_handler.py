"""The handler: once per action_id, results on the ledger partition, failed and dead-lettered outcomes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from schemas import headers as h
from schemas.content import content_digest
from schemas.events import ActionCompleted, TaskRequested, WebhookRequested
from schemas.routes import DISPATCHER
from schemas.topics import ACTION_RESULTS
from services.common.api import Context, Deferred, Failure, PermanentError, RetryableError
from services.common.codec import Outgoing, cloudevent_headers
from services.common.harness import Harness
from services.dispatcher.delivery import HttpSender
from services.dispatcher.executors import Executors
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from services.dispatcher.ledger_index import DoneIndex
from services.dispatcher.registry import Registry
from tests.unit.dispatcher.conftest import CRM, CRM_ENV, registry, webhook

Sender = Callable[[Callable[[httpx.Request], httpx.Response], Registry], HttpSender]


async def no_results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
    for _ in ():
        yield


def dispatcher(
    mock_sender: Sender, answer: Callable[[httpx.Request], httpx.Response], *, burst: bool = True
) -> tuple[Harness[Any], list[str]]:
    """The dispatcher on the in-memory runtime; `calls` lists the webhook-id of every request sent."""
    calls: list[str] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("webhook-id", ""))
        return answer(request)

    reg = registry(CRM, CRM_ENV)
    executors = Executors.build(reg, mock_sender(counting, reg), {}, None)
    return Harness(Dispatcher(executors, Ledger(no_results)).service(), burst=burst), calls


def completed(record: Outgoing) -> ActionCompleted:
    assert record.topic == ACTION_RESULTS
    assert isinstance(record.event, ActionCompleted)
    return record.event


def answers(*statuses: int) -> Callable[[httpx.Request], httpx.Response]:
    """Answers with these statuses in turn (the last one again when they run out)."""
    left = list(statuses)
    return lambda r: httpx.Response(left.pop(0) if len(left) > 1 else left[0], text="maintenance")


async def test_delivered_action_is_recorded_on_the_input_partition(mock_sender: Sender) -> None:
    run, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    [record] = (await run.send(webhook("act_1"), partition=2)).outputs
    result = completed(record)
    assert (record.partition, record.key) == (2, b"act_1")
    assert (result.outcome, result.status_code, result.destination, result.attempts) == ("delivered", 200, "crm", 1)
    assert calls == ["act_1"]


async def test_a_repeat_of_a_done_action_is_skipped_and_the_skip_recorded(mock_sender: Sender) -> None:
    run, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    await run.send(webhook("act_1"), partition=1)
    [record] = (await run.send(webhook("act_1"), partition=1)).outputs
    assert (completed(record).outcome, record.key) == ("skipped_duplicate", b"act_1")
    assert calls == ["act_1"]


async def test_a_retry_tier_copy_is_recorded_on_the_partition_the_action_first_arrived_on(mock_sender: Sender) -> None:
    run, calls = dispatcher(mock_sender, answers(503, 503, 200))
    out = await run.send(webhook("act_1"), partition=2)
    assert [r.topic for r in out.retries] == list(DISPATCHER.retry_topics[:2])
    assert [(completed(r).outcome, completed(r).attempts, r.partition) for r in out.outputs] == [
        ("failed", 1, 2),
        ("failed", 2, 2),
        ("delivered", 3, 2),
    ]
    [again] = (await run.send(webhook("act_1"), partition=2)).outputs
    assert completed(again).outcome == "skipped_duplicate" and calls == ["act_1"] * 3


async def test_each_result_of_one_action_is_its_own_cloudevent(mock_sender: Sender) -> None:
    """CloudEvents: source + id identify an event, and a consumer may drop a repeat of them as a duplicate.
    The results of one action's attempts (failed, failed, delivered; a skipped duplicate later) are
    different events: each has its own ce_id, while the action command itself keeps its action_id."""
    run, _ = dispatcher(mock_sender, answers(503, 503, 200))
    out = await run.send(webhook("act_1"), partition=2)
    again = await run.send(webhook("act_1"), partition=2)
    results = [*out.outputs, *again.outputs]
    assert [completed(r).outcome for r in results] == ["failed", "failed", "delivered", "skipped_duplicate"]
    ids = [r.headers[h.CE_ID] for r in results]
    assert len(set(ids)) == 4 and all(r.headers[h.CE_SOURCE] == "/postcall/dispatcher" for r in results)
    assert cloudevent_headers(webhook("act_1"), "t", "router", "c-1")[h.CE_ID] == "act_1"


async def test_a_retryable_failure_records_the_failed_attempt(mock_sender: Sender) -> None:
    run, _ = dispatcher(mock_sender, lambda r: httpx.Response(503, text="maintenance"), burst=False)
    out = await run.send(webhook("act_1"), partition=1)
    assert out.status == "retrying" and isinstance(out.error, RetryableError)
    [record] = out.outputs
    result = completed(record)
    assert (result.outcome, result.status_code, record.partition) == ("failed", 503, 1)
    assert result.error is not None and "maintenance" in result.error


async def test_a_permanent_failure_is_dead_lettered_and_recorded(mock_sender: Sender) -> None:
    run, _ = dispatcher(mock_sender, lambda r: httpx.Response(400))
    out = await run.send(webhook("act_1"), partition=1)
    assert (out.status, out.attempts, out.retries) == ("dead_lettered", 1, [])
    assert isinstance(out.error, PermanentError)
    [record] = out.outputs
    result = completed(record)
    assert (result.outcome, result.status_code, result.destination, record.partition) == (
        "dead_lettered",
        400,
        "crm",
        1,
    )
    [letter] = out.dead_letters
    assert letter.topic == DISPATCHER.dead_letter_topic and letter.headers["x-original-partition"] == "1"


async def test_unknown_destination_is_permanent(mock_sender: Sender) -> None:
    run, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    out = await run.send(webhook("act_1", destination="nowhere"))
    assert out.status == "dead_lettered" and "unknown destination 'nowhere'" in str(out.error)
    assert calls == []


async def test_a_destination_name_not_in_the_file_is_no_metric_label(mock_sender: Sender) -> None:
    """postcall_deliveries_total took the destination label from the record: each record naming a new
    destination (a forged stream, a producer's bug) added label children that are never dropped, the
    exposition and the process growing with every name ('Labels stay few: ... destination (as many as
    the destinations file)', services/dispatcher/metrics.py). Such names count as '(unknown)'."""
    run, _ = dispatcher(mock_sender, lambda r: httpx.Response(200))
    for i in range(3):
        out = await run.send(webhook(f"act_{i}", destination=f"forged-{i}"))
        assert out.status == "dead_lettered"
        result = [completed(r) for r in out.outputs if r.topic == ACTION_RESULTS][-1]
        assert result.destination == f"forged-{i}"  # the result still says what the record named
    families = {
        s.labels["destination"] for m in REGISTRY.collect() if m.name == "postcall_deliveries" for s in m.samples
    }
    assert not any(name.startswith("forged-") for name in families)
    assert "(unknown)" in families


async def test_task_without_destination_is_published(mock_sender: Sender) -> None:
    run, calls = dispatcher(mock_sender, lambda r: httpx.Response(200))
    task = TaskRequested(
        action_id="act_t",
        conversation_id="c",
        agent_id="a",
        flow_id="f",
        action_index=1,
        config_revision="r",
        requested_at=datetime.now(UTC),
        source_event_id="e",
        title="Call back",
    )
    [record] = (await run.send(task)).outputs
    assert completed(record).outcome == "published" and calls == []


async def test_failures_never_share_the_compaction_key_of_a_done_result(mock_sender: Sender) -> None:
    # results are compacted by key: a failure keyed by action_id could erase an earlier `delivered`
    run, _ = dispatcher(mock_sender, lambda r: httpx.Response(503))
    out = await run.send(webhook("act_1"), partition=1)
    keys = [(completed(r).outcome, r.key) for r in out.outputs]
    tiers = DISPATCHER.tiers
    assert keys == [*(("failed", f"act_1/attempt-{n}".encode()) for n in range(1, tiers + 1)),
                    ("dead_lettered", f"act_1/attempt-{tiers + 1}".encode())]  # fmt: skip
    # ce_subject is the record's key, as schemas/asyncapi.yaml says: not the bare action_id on a failure
    assert [r.headers[h.CE_SUBJECT].encode() for r in out.outputs] == [r.key for r in out.outputs]


@pytest.mark.parametrize("status", [400, 503, 200])
async def test_each_attempt_is_counted_once_with_its_results_outcome(mock_sender: Sender, status: int) -> None:
    """postcall_deliveries_total counts action attempts by the outcome their ActionCompleted says. A
    permanent failure (a 400: one attempt, one `dead_lettered` result) was counted twice, `failed` and
    `dead_lettered`, so the dashboard showed two attempts and a failure rate too high for it."""
    outcomes = ("delivered", "failed", "dead_lettered")

    def counts() -> dict[str, float]:
        labels = {"type": "webhook", "destination": "crm"}
        return {
            o: REGISTRY.get_sample_value("postcall_deliveries_total", {**labels, "outcome": o}) or 0.0 for o in outcomes
        }

    run, _ = dispatcher(mock_sender, lambda r: httpx.Response(status))
    before = counts()
    out = await run.send(webhook(f"act_count_{status}"))
    results = Counter[str](completed(r).outcome for r in out.outputs if r.topic == ACTION_RESULTS)
    after = counts()
    assert {o: after[o] - before[o] for o in outcomes} == {o: float(results[o]) for o in outcomes}


async def test_a_redelivery_goes_out_only_when_its_content_changed_and_says_what_it_supersedes(
    mock_sender: Sender,
) -> None:
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["webhook-id"], request.headers.get("postcall-supersedes")))
        return httpx.Response(200)

    run, _ = dispatcher(mock_sender, answer)
    await run.send(webhook("act_1", content_digest="aaaa"), partition=0)
    same = webhook("act_1-aaaa", content_digest="aaaa", supersedes="act_1")
    changed = webhook("act_1-bbbb", content_digest="bbbb", supersedes="act_1", body={"status": "reopened"})
    reverted = webhook("act_1-aaaa", content_digest="aaaa", supersedes="act_1")
    outcomes = []
    for action in (same, changed, changed, reverted, webhook("act_1", content_digest="aaaa")):
        [record] = (await run.send(action, partition=0)).outputs
        outcomes.append(completed(record).outcome)
    assert outcomes == ["skipped_duplicate", "delivered", "skipped_duplicate", "delivered", "skipped_duplicate"]
    # A, then B superseding it, then A again (the receiver holds B): each sent once, naming what it replaces
    assert seen == [("act_1", None), ("act_1-bbbb", "act_1"), ("act_1-aaaa", "act_1")]


async def test_a_superseding_record_without_a_content_digest_is_delivered_once(mock_sender: Sender) -> None:
    """A record from another producer or a hand-made replay may carry no digest. Its missing digest once
    equalled the missing last content of an action never delivered (None == None), so it was skipped as
    'content unchanged' and never sent. Its digest is computed here: it goes out, and a copy of it is then
    'content unchanged'."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["webhook-id"])
        return httpx.Response(200)

    run, _ = dispatcher(mock_sender, answer)
    forged = webhook("act_9-x", supersedes="act_9")
    assert forged.content_digest is None
    outcomes = [completed(r).outcome for _ in range(2) for r in (await run.send(forged, partition=0)).outputs]
    assert outcomes == ["delivered", "skipped_duplicate"]
    assert seen == ["act_9-x"]


async def test_actions_without_a_digest_are_compared_by_the_content_computed_here(mock_sender: Sender) -> None:
    """The router writes a content digest only on a re-delivery: the dispatcher computes the digest of an
    action that has none (schemas.content), records it as the content delivered, writes it in the result,
    and a re-delivery without one is compared with it as with a digest the router wrote."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["webhook-id"])
        return httpx.Response(200)

    run, _ = dispatcher(mock_sender, answer)
    first = webhook("act_1")
    assert first.content_digest is None
    [record] = (await run.send(first, partition=0)).outputs
    assert (completed(record).outcome, completed(record).content_digest) == ("delivered", content_digest(first))
    same = webhook("act_1-x", supersedes="act_1")
    changed = webhook("act_1-y", supersedes="act_1", body={"status": "reopened"})
    digested = webhook("act_1-x", supersedes="act_1", content_digest=content_digest(first))  # as the router writes it
    outcomes = []
    for action in (same, digested, changed, same):
        [record] = (await run.send(action, partition=0)).outputs
        outcomes.append((completed(record).outcome, completed(record).content_digest))
    assert outcomes == [
        ("skipped_duplicate", content_digest(first)),
        ("skipped_duplicate", content_digest(first)),
        ("delivered", content_digest(changed)),
        ("delivered", content_digest(first)),  # the receiver holds the changed content: the first goes again
    ]
    assert seen == ["act_1", "act_1-y", "act_1-x"]


async def test_a_restarted_dispatcher_compares_with_the_digest_it_computed_before(mock_sender: Sender) -> None:
    """The digest computed for a delivery is the one on the results topic: a new process (a restart, another
    replica) reads it back from there, and a re-delivery of unchanged content is still not sent."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["webhook-id"])
        return httpx.Response(200)

    before, _ = dispatcher(mock_sender, answer)
    await before.send(webhook("act_1"), partition=0)
    written = [r.value for r in before.produced[ACTION_RESULTS]]

    async def results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        for offset, value in enumerate(written):
            if partition == 0 and (from_offset is None or offset >= from_offset):
                yield SimpleNamespace(offset=offset, value=value, timestamp=None)

    reg = registry(CRM, CRM_ENV)
    after = Harness(Dispatcher(Executors.build(reg, mock_sender(answer, reg), {}, None), Ledger(results)).service())
    outcomes = []
    for action in (webhook("act_1-x", supersedes="act_1"), webhook("act_1-y", supersedes="act_1", body={"s": 1})):
        outcomes += [completed(r).outcome for r in (await after.send(action, partition=0)).outputs]
    assert outcomes == ["skipped_duplicate", "delivered"]
    assert seen == ["act_1", "act_1-y"]


async def test_a_correction_whose_delivery_compaction_replaced_by_its_skip_is_still_the_last_content(
    mock_sender: Sender,
) -> None:
    """The results topic is compacted by key, and a skip is keyed by the action's id as its delivery is: a
    correction (act_1-y) delivered, then skipped as unchanged, leaves only the skip. A restarted ledger read
    the first action's delivered digest as the last content, so a re-delivery of that first content was
    skipped ('unchanged') while the receiver held the correction. A re-delivery's skip says the content
    last delivered was its digest: the ledger reads it as such."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["webhook-id"])
        return httpx.Response(200)

    before, _ = dispatcher(mock_sender, answer)
    corrected = webhook("act_1-y", supersedes="act_1", body={"status": "reopened"})
    for action in (webhook("act_1"), corrected, corrected):
        await before.send(action, partition=0)
    compacted = {r.key: r.value for r in before.produced[ACTION_RESULTS]}  # the last record of each key
    assert [completed(r).outcome for r in before.produced[ACTION_RESULTS]][-1] == "skipped_duplicate"

    async def results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        for offset, value in enumerate(compacted.values()):
            if partition == 0 and (from_offset is None or offset >= from_offset):
                yield SimpleNamespace(offset=offset, value=value, timestamp=None)

    async def after_a_restart(action: Any) -> str:
        reg = registry(CRM, CRM_ENV)
        service = Dispatcher(Executors.build(reg, mock_sender(answer, reg), {}, None), Ledger(results)).service()
        [record] = (await Harness(service).send(action, partition=0)).outputs
        return completed(record).outcome

    assert await after_a_restart(corrected) == "skipped_duplicate"  # unchanged since its delivery
    # the first content again: the receiver holds the correction, so it goes out (it was skipped)
    assert await after_a_restart(webhook("act_1-x", supersedes="act_1")) == "delivered"
    assert seen == ["act_1", "act_1-y", "act_1-x"]


async def test_a_delivery_stays_delivered_when_the_ledger_file_cannot_be_written(
    mock_sender: Sender, tmp_path: Path
) -> None:
    """The ledger's file is a cache of the results topic: when it cannot take our own result (its volume
    is full), the request has still gone out, so the result says delivered and no retry sends it again."""
    calls: list[str] = []

    def ok(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["webhook-id"])
        return httpx.Response(200)

    index = DoneIndex(tmp_path)
    index._db.execute("CREATE TABLE filler (x)")  # the file has pages (an empty one cannot be limited)
    pages = index._db.execute("PRAGMA page_count").fetchone()[0]
    index._db.execute(f"PRAGMA max_page_count = {pages}")  # full: the next table or row finds no room
    reg = registry(CRM, CRM_ENV)
    executors = Executors.build(reg, mock_sender(ok, reg), {}, None)
    run = Harness(Dispatcher(executors, Ledger(no_results, index=index)).service())
    out = await run.send(webhook("act_1"), partition=1)
    assert [(completed(r).outcome, completed(r).attempts) for r in out.outputs] == [("delivered", 1)]
    assert (out.retries, calls) == ([], ["act_1"])


def test_a_deferred_record_is_counted_deferred_not_failed(mock_sender: Sender) -> None:
    """A record not attempted because its destination's rate limit or room was full (Deferred) was counted
    in postcall_deliveries_total{outcome="failed"}: a healthy destination under its rate limit showed a
    rising failure count on the dashboard, once per deferral (every few seconds per record of a backlog).
    Its result record still says `failed` with the Deferred reason (the contract's outcomes, and the
    console's "rate limited" evidence); the counter says `deferred`."""
    reg = registry(CRM, CRM_ENV)
    dispatcher = Dispatcher(
        Executors.build(reg, mock_sender(lambda r: httpx.Response(200), reg), {}, None), Ledger(no_results)
    )
    action = webhook("act_deferred", destination="crm")
    ctx = Context(service="dispatcher", topic="postcall.actions.webhook.v1")

    def count(outcome: str) -> float:
        labels = {"type": "webhook", "destination": "crm", "outcome": outcome}
        return REGISTRY.get_sample_value("postcall_deliveries_total", labels) or 0.0

    before = count("deferred"), count("failed")
    deferred = Deferred("rate limit of destination crm reached", retry_after=1)
    [record] = dispatcher.on_failure(action, ctx, Failure(deferred, "retry", "retry"))
    assert isinstance(record, ActionCompleted) and record.outcome == "failed"
    assert record.error is not None and record.error.startswith("Deferred: rate limit of destination crm")
    [_] = dispatcher.on_failure(action, ctx, Failure(RetryableError("HTTP 503"), "retry", "retry"))
    assert (count("deferred"), count("failed")) == (before[0] + 1, before[1] + 1)


def correction(name: str, digest: str, minutes: int) -> WebhookRequested:
    """A correction of act_1 written `minutes` after the first of the year."""
    written = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    action = webhook(f"act_1-{name}", content_digest=digest, supersedes="act_1")
    return action.model_copy(update={"requested_at": written})


async def test_a_correction_retried_after_a_newer_one_was_delivered_is_not_sent_over_it(
    mock_sender: Sender,
) -> None:
    """Walked by downstream25 on the live stack: high delivered; redeliver low (503 Retry-After 9, to a retry
    tier); redeliver medium, delivered; then low's retry was delivered last, so the receiver's upsert held
    low. The ledger kept the content last delivered, not which correction was newer; it now keeps when the
    correction that delivered it was written, and an older correction's retry is skipped (its result
    carries no digest: never read as content sent). A newer one still goes out."""
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["webhook-id"])
        return httpx.Response(503 if sent == ["act_1", "act_1-low"] else 200)

    run, _ = dispatcher(mock_sender, answer, burst=False)
    low, medium, high = correction("low", "bbbb", 5), correction("medium", "cccc", 9), correction("high", "dddd", 60)
    first, failed, later = [
        await run.send(a, partition=0) for a in (webhook("act_1", content_digest="aaaa"), low, medium)
    ]
    [copy] = failed.retries
    retried = await run.send(low, partition=0, headers=copy.headers)  # low's retry copy, due after medium went out
    last = await run.send(high, partition=0)
    results = [completed(o.outputs[0]) for o in (first, failed, later, retried, last)]
    assert [r.outcome for r in results] == ["delivered", "failed", "delivered", "skipped_duplicate", "delivered"]
    assert sent == ["act_1", "act_1-low", "act_1-medium", "act_1-high"]
    assert results[3].error == "a newer correction of act_1 was delivered" and results[3].content_digest is None
    # what a topic consumer reads about the skip's error (schemas/json, generated from it) names it
    assert "'a newer correction of ... was delivered'" in (ActionCompleted.model_fields["error"].description or "")
    assert [r.requested_at for r in results[2:]] == [medium.requested_at, low.requested_at, high.requested_at]
    doc = " ".join((Path(__file__).parents[3] / "docs" / "downstream.md").read_text().split())
    assert "is still in the retry tiers as a later one is delivered: its retry is then not sent" in doc


async def test_an_older_correction_skipped_as_unchanged_never_makes_an_even_older_one_look_newest(
    mock_sender: Sender,
) -> None:
    """Three redeliver runs while the receiver answered 503: high (t5) and low (t7) to the retry tiers, then
    high again (t9) delivered. high's retry is skipped as content unchanged, and its result, read back as
    the ledger reads every result, carries t5: the ledger kept the last time read, t5, so low's retry (t7)
    looked newer than anything delivered and went out last, over t9's content. The time kept for an action
    is now the newest of those read."""
    topic: list[bytes] = []

    async def results(name: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
        for offset in range(from_offset or 0, len(topic)):
            yield SimpleNamespace(offset=offset, timestamp=None, value=topic[offset])

    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["webhook-id"])
        return httpx.Response(503 if sent in (["act_1", "act_1-high"], ["act_1", "act_1-high", "act_1-low"]) else 200)

    reg = registry(CRM, CRM_ENV)
    executors = Executors.build(reg, mock_sender(answer, reg), {}, None)
    run = Harness(Dispatcher(executors, Ledger(results)).service(), burst=False)
    high, low, again = correction("high", "dddd", 5), correction("low", "bbbb", 7), correction("again", "dddd", 9)
    outcomes = []

    async def send(action: WebhookRequested, headers: Any = None) -> Any:
        done = await run.send(action, partition=0, headers=headers)
        result = completed(done.outputs[0])
        topic.append(result.model_dump_json().encode())
        outcomes.append((action.action_id, result.outcome))
        return done

    await send(webhook("act_1", content_digest="aaaa"))
    [high_copy] = (await send(high)).retries
    [low_copy] = (await send(low)).retries
    await send(again)
    await send(high, high_copy.headers)
    await send(low, low_copy.headers)
    assert sent == ["act_1", "act_1-high", "act_1-low", "act_1-again"]
    assert outcomes[-2:] == [("act_1-high", "skipped_duplicate"), ("act_1-low", "skipped_duplicate")]


async def test_a_correction_arriving_while_its_action_is_in_flight_goes_out_after_it(mock_sender: Sender) -> None:
    """The dispatcher reads its topics unordered, 1024 records in flight: a correction that arrived while the
    action it corrects was still being sent (a slow receiver) passed its check (nothing delivered yet) and
    was sent beside it, so whichever answer came last decided the ledger's content, and the receiver's
    upsert could keep the older one. One action's deliveries now take turns, as copies of one id did."""
    gate = asyncio.Event()
    sent: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["webhook-id"])
        if len(sent) == 1:
            await gate.wait()  # the original's receiver is slow
        return httpx.Response(200)

    reg = registry(CRM, CRM_ENV)
    slow: Any = answer  # httpx.MockTransport awaits what an async handler returns
    run = Harness(Dispatcher(Executors.build(reg, mock_sender(slow, reg), {}, None), Ledger(no_results)).service())
    fixed, same = correction("fixed", "bbbb", 5), correction("same", "bbbb", 9)
    original = asyncio.create_task(run.send(webhook("act_1", content_digest="aaaa"), partition=0))
    while not sent:
        await asyncio.sleep(0)
    corrected = asyncio.create_task(run.send(fixed, partition=0))
    for _ in range(50):
        await asyncio.sleep(0)
    assert sent == ["act_1"]  # the correction waits for the original's answer
    gate.set()
    outcomes = [completed((await task).outputs[0]).outcome for task in (original, corrected)]
    assert (outcomes, sent) == (["delivered", "delivered"], ["act_1", "act_1-fixed"])
    again = completed((await run.send(same, partition=0)).outputs[0])  # the ledger holds the correction's content
    assert (again.outcome, again.error) == ("skipped_duplicate", "content unchanged since the last delivery for act_1")


async def test_a_restarted_dispatcher_skips_a_correction_older_than_the_one_its_results_say_was_delivered(
    mock_sender: Sender,
) -> None:
    """The ledger reads when a correction was written from its result (requested_at), so a restart or a
    rebalance between the newer delivery and the older one's retry changes nothing; a result from before
    that field (None) compares by content alone, as before."""
    medium, low = correction("medium", "cccc", 9), correction("low", "bbbb", 5)
    delivered = ActionCompleted(
        action_id=medium.action_id, conversation_id="conv-1", type="webhook", destination="crm",
        outcome="delivered", attempts=1, supersedes="act_1", content_digest="cccc", completed_at=datetime.now(UTC),
    )  # fmt: skip
    outcomes = []
    for result in (delivered.model_copy(update={"requested_at": medium.requested_at}), delivered):
        value = result.model_dump_json().encode()

        async def results(
            topic: str, partition: int, from_offset: int | None, value: bytes = value
        ) -> AsyncIterator[Any]:
            if from_offset is None:
                yield SimpleNamespace(offset=0, timestamp=None, value=value)

        calls: list[str] = []
        reg = registry(CRM, CRM_ENV)

        def answer(request: httpx.Request, calls: list[str] = calls) -> httpx.Response:
            calls.append(request.headers["webhook-id"])
            return httpx.Response(200)

        run = Harness(Dispatcher(Executors.build(reg, mock_sender(answer, reg), {}, None), Ledger(results)).service())
        outcomes.append((completed((await run.send(low, partition=0)).outputs[0]).outcome, calls))
    assert outcomes == [("skipped_duplicate", []), ("delivered", ["act_1-low"])]
