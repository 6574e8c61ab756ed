"""Deliveries to real HTTP receivers on 127.0.0.1: failures, stalls, redirects, 429, 410, SSRF,
and one stalled destination not holding back another."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from prometheus_client import REGISTRY

from services.common.errors import PermanentError, RetryableError
from services.devkit.sink import Reply, Sink
from tests.integration.dispatcher.conftest import Stack, http_destination, webhook


def destinations(*entries: str) -> str:
    return "destinations:\n" + "".join(entries)


async def test_webhook_is_delivered_signed_and_verified_by_the_receiver(sink: Sink, stack: Stack) -> None:
    async with stack(destinations(http_destination("crm", sink.url("/crm")))) as (executors, _):
        delivery = await executors.run(webhook("act_1", "crm", {"status": "closed"}))
    assert (delivery.outcome, delivery.status_code) == ("delivered", 200)
    [got] = sink.received
    assert (got["webhook_id"], got["verified"], got["body"]) == ("act_1", True, {"status": "closed"})


async def test_failing_receiver_is_retryable_then_delivered(sink: Sink, stack: Stack) -> None:
    sink.script("/crm", Reply(503), Reply(500))
    async with stack(destinations(http_destination("crm", sink.url("/crm")))) as (executors, _):
        for _ in range(2):
            with pytest.raises(RetryableError, match="HTTP 50"):
                await executors.run(webhook("act_1", "crm"))
        assert (await executors.run(webhook("act_1", "crm"))).outcome == "delivered"
    assert sink.counts["act_1"] == 3  # the same webhook-id on every attempt


async def test_receiver_stalling_past_the_timeout_is_retryable(sink: Sink, stack: Stack) -> None:
    sink.script("/slow", then=Reply(delay=5))
    async with stack(destinations(http_destination("slow", sink.url("/slow"), timeout_seconds=0.3))) as (ex, _):
        with pytest.raises(RetryableError, match=r"no answer within 0.3s"):
            await ex.run(webhook("act_1", "slow"))


async def test_redirect_is_a_failure_and_is_never_followed(sink: Sink, stack: Stack) -> None:
    sink.script("/moved", then=Reply(302, {"Location": sink.url("/new-home")}))
    async with stack(destinations(http_destination("crm", sink.url("/moved")))) as (executors, _):
        with pytest.raises(PermanentError, match=r"302.*Location: http://127.0.0.1:\d+/new-home"):
            await executors.run(webhook("act_1", "crm"))
    assert [r["path"] for r in sink.received] == ["/moved"]


async def test_429_retry_after_is_honoured(sink: Sink, stack: Stack) -> None:
    sink.script("/busy", then=Reply(429, {"Retry-After": "120"}))
    async with stack(destinations(http_destination("crm", sink.url("/busy")))) as (executors, _):
        with pytest.raises(RetryableError) as caught:
            await executors.run(webhook("act_1", "crm"))
    assert caught.value.retry_after == 120.0


async def test_410_disables_the_destination_and_nothing_more_is_sent(sink: Sink, stack: Stack) -> None:
    sink.script("/gone", then=Reply(410))
    async with stack(destinations(http_destination("gone", sink.url("/gone")))) as (executors, _):
        with pytest.raises(PermanentError, match="410"):
            await executors.run(webhook("act_1", "gone"))
        with pytest.raises(PermanentError, match=r"destination disabled \(410 Gone\)"):
            await executors.run(webhook("act_2", "gone"))
    assert sink.ids() == ["act_1"]
    assert REGISTRY.get_sample_value("postcall_destination_disabled", {"destination": "gone"}) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_ssrf_guard_refuses_loopback_without_allow_private(sink: Sink, stack: Stack, host: str) -> None:
    url = sink.url("/crm").replace("127.0.0.1", host)
    entry = http_destination("internal", url, allow_private="false")
    async with stack(destinations(entry)) as (executors, _):
        with pytest.raises(PermanentError, match="SSRF guard: refusing to connect") as caught:
            await executors.run(webhook("act_1", "internal"))
    assert "loopback" in str(caught.value)
    assert sink.received == []


async def test_a_stalled_destination_does_not_hold_back_another(sink: Sink, stack: Stack) -> None:
    sink.script("/slow", then=Reply(delay=2))
    slow = http_destination("slow", sink.url("/slow"), max_concurrency=2, max_waiting=2)
    fast = http_destination("fast", sink.url("/fast"), max_concurrency=8, max_waiting=100)
    finished: list[str] = []

    async def deliver(action_id: str, destination: str) -> str:
        try:
            await executors.run(webhook(action_id, destination))
            outcome = "delivered"
        except RetryableError as exc:
            outcome = f"retry: {exc}"
        finished.append(f"{destination}:{outcome}")
        return outcome

    async with stack(destinations(slow, fast), max_wait=1.0) as (executors, _):
        slow_tasks = [asyncio.create_task(deliver(f"s{i}", "slow")) for i in range(6)]
        await asyncio.sleep(0.05)  # the slow destination's slots and queue are taken
        fast_outcomes = await asyncio.gather(*(deliver(f"f{i}", "fast") for i in range(100)))
        slow_pending_when_fast_done = sum(not t.done() for t in slow_tasks)
        slow_outcomes = await asyncio.gather(*slow_tasks)

    assert fast_outcomes == ["delivered"] * 100
    assert slow_pending_when_fast_done >= 2  # the two in flight were still stalled
    # beyond its 2 slots and 2 waiters the slow destination refused (a retry tier) within max_wait, never blocked
    assert sum(o.startswith("retry: destination slow busy") for o in slow_outcomes) >= 2
    last_fast = max(i for i, f in enumerate(finished) if f == "fast:delivered")
    assert last_fast < finished.index("slow:delivered")


@pytest.mark.parametrize("value", ["²", "9" * 400], ids=["superscript-two", "400-digits"])
async def test_a_hostile_retry_after_on_a_200_is_ignored_and_the_webhook_is_sent_once(
    sink: Sink, stack: Stack, value: str
) -> None:
    """A 200 with `Retry-After: ²` crashed the parser after the delivery: re-sent on every tier."""
    sink.script("/crm", then=Reply(200, {"Retry-After": value}))
    async with stack(destinations(http_destination("crm", sink.url("/crm")))) as (executors, _):
        delivery = await executors.run(webhook("act_1", "crm"))
    assert (delivery.outcome, delivery.status_code) == ("delivered", 200)
    assert sink.counts["act_1"] == 1


@pytest.mark.timeout(30)
async def test_a_receiver_trickling_its_answer_is_cut_at_one_deadline_per_attempt(sink: Sink, stack: Stack) -> None:
    """Every byte arrives before any read timeout; only the attempt's own deadline ends it."""
    sink.script("/drip", then=Reply(200, trickle=0.1))
    async with stack(destinations(http_destination("drip", sink.url("/drip"), timeout_seconds=1))) as (ex, _):
        with pytest.raises(RetryableError, match=r"no answer within 1s"):
            await ex.run(webhook("act_1", "drip"))


@pytest.mark.timeout(30)
async def test_an_endless_response_body_is_read_only_up_to_the_cap(sink: Sink, stack: Stack) -> None:
    sink.script("/flood", then=Reply(422, body=b"A" * 65536, endless=True))
    async with stack(destinations(http_destination("flood", sink.url("/flood")))) as (ex, _):
        with pytest.raises(PermanentError, match="HTTP 422") as caught:
            await ex.run(webhook("act_1", "flood"))
    assert len(str(caught.value)) < 400  # the start of the body, not 64 KiB of it


async def test_a_compressed_body_is_never_decompressed(sink: Sink, stack: Stack) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    sink.script("/bomb", then=Reply(400, {"Content-Encoding": "gzip"}, body=bomb))
    async with stack(destinations(http_destination("bomb", sink.url("/bomb")))) as (ex, _):
        with pytest.raises(PermanentError, match="HTTP 400") as caught:
            await ex.run(webhook("act_1", "bomb"))
    assert len(str(caught.value)) < 400
    assert sink.received[0]["accept_encoding"] == "identity"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reply", [Reply(200, hang_up=True), Reply(202, body_delay=3)], ids=["hang-up", "slow-body"])
async def test_a_2xx_whose_body_is_lost_or_late_is_delivered_and_not_sent_again(
    sink: Sink, stack: Stack, reply: Reply
) -> None:
    """The receiver took the webhook and said so; what becomes of the rest of its answer (the connection
    dropped, the body past the deadline) is no reason to send it again."""
    sink.script("/crm", reply)
    async with stack(destinations(http_destination("crm", sink.url("/crm"), timeout_seconds=1))) as (ex, _):
        delivery = await ex.run(webhook("act_1", "crm"))
    assert (delivery.outcome, delivery.status_code) == ("delivered", reply.status)
    assert sink.counts["act_1"] == 1
