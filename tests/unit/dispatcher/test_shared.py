"""The shared destination state without a broker: a fake producer and consumer stand in for Kafka."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pydantic
import pytest

from schemas.events import DestinationState
from services.common import codec
from services.common.settings import KafkaSettings
from services.dispatcher import shared
from services.dispatcher.shared import SharedState, fact

from .conftest import CRM, CRM_ENV, registry


class Listener:
    def __init__(self) -> None:
        self.disabled: list[tuple[str, str | None]] = []

    def apply_disabled(self, destination: str, reason: str | None, enabled_at: float | None = None) -> None:
        self.disabled.append((destination, reason))

    def apply_circuit(self, destination: str, open_until: float | None) -> None:
        pass

    def apply_peers(self, peers: list[frozenset[str] | None]) -> None:
        self.peers = peers

    def wanted(self) -> list[str]:
        return self.wants

    peers: list[frozenset[str] | None] = []
    wants: list[str] = []


class Producer:
    """Acknowledges a write unless `failures` says to fail it; `delay` holds each write that long."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures, self.delay = failures, delay
        self.sent: list[tuple[bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None, key: bytes, headers: Any = None) -> asyncio.Future[None]:
        await asyncio.sleep(self.delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            future.set_exception(RuntimeError("broker unavailable"))
        else:
            self.sent.append((key, value))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        pass

    def written(self) -> list[str]:
        return [key.decode() for key, value in self.sent if value is not None]


def state(fake: Producer, listener: Listener | None = None, **kw: Any) -> SharedState:
    with mock.patch.object(shared, "producer", lambda kafka: fake):
        return SharedState(KafkaSettings(), listener or Listener(), "replica-a", **kw)


async def settle(s: SharedState) -> None:
    while s._writes:
        await asyncio.gather(*s._writes, return_exceptions=True)


async def test_a_decision_whose_write_failed_is_written_again_with_the_next_heartbeat() -> None:
    fake = Producer(failures=1)
    s = state(fake, heartbeat_seconds=0.01)
    s.disabled("crm", "destination disabled (410 Gone)")
    await settle(s)
    assert fake.written() == []  # the first write failed
    beat = asyncio.create_task(s._beat())
    for _ in range(100):
        if "disabled/crm" in fake.written():
            break
        await asyncio.sleep(0.01)
    beat.cancel()
    assert "disabled/crm" in fake.written()
    assert s._unsent == {}
    sent = [DestinationState.model_validate_json(v) for k, v in fake.sent if k == b"disabled/crm" and v]
    assert sent[0].disabled is True


async def test_a_clean_stop_waits_for_a_decision_still_being_written() -> None:
    fake = Producer(delay=0.2)
    s = state(fake)
    s.disabled("crm", "destination disabled (410 Gone)")
    await s.__aexit__(None, None, None)
    assert "disabled/crm" in fake.written()


async def test_a_clean_stop_writes_a_decision_whose_first_write_failed() -> None:
    fake = Producer(failures=1)
    s = state(fake)
    s.disabled("crm", "destination disabled (410 Gone)")
    await s.__aexit__(None, None, None)
    assert "disabled/crm" in fake.written()


class Consumer:
    """Fails its first `failures` reads, then hands out `records` once."""

    def __init__(self, failures: int, records: list[Any]) -> None:
        self.failures, self.records = failures, records

    async def getmany(self, timeout_ms: int = 0) -> dict[str, list[Any]]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("TopicAuthorizationFailedError")
        records, self.records = self.records, []
        await asyncio.sleep(0 if records else 0.01)
        return {"tp": records}


def record(value: DestinationState, key: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(key=(key or value.key).encode(), value=codec.encode(value))


async def test_following_the_topic_goes_on_after_an_error_and_logs_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shared, "FOLLOW_BACKOFF", (0.01, 0.02))
    listener = Listener()
    s = state(Producer(), listener)
    other = fact("disabled", "replica-b", destination="crm", disabled=True, reason="gone")
    s._consumer = Consumer(failures=3, records=[record(other)])  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, "postcall.dispatcher.shared"):
        follow = asyncio.create_task(s._follow())
        for _ in range(100):
            if listener.disabled:
                break
            await asyncio.sleep(0.01)
        assert not follow.done()
        follow.cancel()
    assert listener.disabled == [("crm", "gone")]
    assert "TopicAuthorizationFailedError" in caplog.text


def test_a_record_under_another_key_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> Listener:
        listener = Listener()
        s = state(Producer(), listener)
        enabled = fact("disabled", "replica-b", destination="crm", disabled=False, reason="x")
        with caplog.at_level(logging.WARNING, "postcall.dispatcher.shared"):
            s._apply(b"disabled/sheets", codec.encode(enabled))
        return listener

    assert asyncio.run(run()).disabled == []
    assert "skipped" in caplog.text


def test_a_disabled_fact_without_disabled_is_refused() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(pydantic.ValidationError, match="needs `disabled`"):
        DestinationState.model_validate({"kind": "disabled", "destination": "crm", "replica": "r", "at": at})
    with pytest.raises(pydantic.ValidationError, match="needs a destination"):
        DestinationState.model_validate({"kind": "circuit", "circuit": "open", "replica": "r", "at": at})


async def test_a_disabled_record_without_its_field_does_not_enable_the_destination() -> None:
    listener = Listener()
    s = state(Producer(), listener)
    s._apply(b"disabled/crm", b'{"kind":"disabled","destination":"crm","replica":"r","at":"2026-01-01T00:00:00Z"}')
    assert listener.disabled == []


async def test_an_enable_read_before_our_unwritten_disable_was_written_drops_it() -> None:
    """The case `postcall destinations enable` writes for even when the topic says nothing: a replica
    holds a 410 whose write failed. Its heartbeat wrote that decision again once the broker answered,
    after the operator's enable: every replica was disabled again, and compaction kept it for restarts."""
    fake = Producer(failures=1)
    s = state(fake, heartbeat_seconds=0.01)
    s.disabled("crm", "destination disabled (410 Gone)")
    await settle(s)
    assert fake.written() == []  # the write failed: kept for the next heartbeat
    enabled = fact("disabled", shared.OPERATOR, destination="crm", disabled=False, reason="enabled by ops")
    s._apply(enabled.key.encode(), codec.encode(enabled))
    await s._resend()
    assert fake.written() == [] and s._unsent == {}
    s.disabled("crm", "destination disabled (410 Gone)")  # a 410 decided after the enable is written
    await settle(s)
    assert fake.written() == ["disabled/crm"]


def test_a_410_to_a_request_begun_before_the_latest_enable_is_ignored() -> None:
    reg = registry(CRM, CRM_ENV)
    reg.apply_disabled("crm", None, enabled_at=1000.0)  # an operator enabled crm at t=1000
    reg.disable("crm", "destination disabled (410 Gone)", started=999.0)  # a request in flight since 999
    assert "crm" not in reg.disabled
    reg.disable("crm", "destination disabled (410 Gone)", started=1001.0)  # a request after the enable
    assert reg.disabled["crm"] == "destination disabled (410 Gone)"


def test_shared_state_passes_the_enable_time_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    listener: Any = SimpleNamespace(apply_disabled=lambda *a: calls.append(a))

    async def run() -> None:
        s = state(Producer(), listener)
        enabled = fact("disabled", "postcall destinations", destination="crm", disabled=False, reason="ops")
        s._apply(enabled.key.encode(), codec.encode(enabled))
        assert calls == [("crm", None, enabled.at.timestamp())]

    asyncio.run(run())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def heartbeat(replica: str, at: datetime, wants: list[str] | None = None) -> tuple[bytes, bytes]:
    beat = DestinationState(kind="replica", replica=replica, at=at, wants=wants)
    return beat.key.encode(), codec.encode(beat)


LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


async def test_a_peer_whose_clock_is_behind_counts_as_alive_while_its_heartbeats_arrive() -> None:
    clock = Clock()
    clock.now = datetime.now(UTC).timestamp()
    s = state(Producer(), heartbeat_seconds=2.0, clock=clock)
    s._apply(*heartbeat("replica-b", LONG_AGO))  # its clock says 2020; we read it now
    s._count_live()
    assert s.live_replicas == 2


async def test_the_others_do_not_count_as_gone_while_our_own_heartbeat_is_not_read_back() -> None:
    clock = Clock()
    s = state(Producer(), heartbeat_seconds=2.0, clock=clock)
    now = datetime.now(UTC)
    for replica in ("replica-a", "replica-b", "replica-c"):
        s._apply(*heartbeat(replica, now))
    s._count_live()
    assert s.live_replicas == 3
    clock.now = 10.0  # nothing read for 10 s: the broker stalled, or this loop was blocked
    s._count_live()
    assert s.live_replicas == 3  # taking their shares now could send the group over the limit
    clock.now = 11.0
    s._apply(*heartbeat("replica-a", now))  # our own heartbeat comes back, replica-c's does not
    s._apply(*heartbeat("replica-b", now))
    s._count_live()
    assert s.live_replicas == 2


async def test_heartbeats_read_at_start_are_aged_against_the_newest_one_on_the_topic() -> None:
    clock = Clock()
    clock.now = 100.0
    s = state(Producer(), heartbeat_seconds=2.0, clock=clock)
    s._catching_up = True
    newest = datetime(2020, 1, 1, 0, 0, 10, tzinfo=UTC)  # every clock behind ours: still the newest
    s._apply(*heartbeat("replica-b", newest))
    s._apply(*heartbeat("replica-c", datetime(2020, 1, 1, 0, 0, 9, tzinfo=UTC)))  # 1 s before it: alive
    s._apply(*heartbeat("replica-d", datetime(2020, 1, 1, 0, 0, 1, tzinfo=UTC)))  # 9 s before it: gone
    s._catching_up = False
    s._aged()
    s._count_live()
    assert s.live_replicas == 3


LIMITED = """
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    signing_secrets: [{secret_env: CRM}]
    rate_limit_per_second: 12
    rate_limit_burst: 6
  - name: sheets
    kind: http
    url: https://sheets.example.com/hook
    signing_secrets: [{secret_env: CRM}]
    rate_limit_per_second: 4
  - name: ops-slack
    kind: slack
    url_secret: {secret_env: SLACK_URL}
"""


def test_a_destinations_limit_is_shared_among_the_replicas_that_want_it() -> None:
    reg = registry(LIMITED, CRM_ENV)
    crm, sheets = reg.gate("crm").bucket, reg.gate("sheets").bucket
    assert crm is not None and sheets is not None
    reg.apply_peers([frozenset({"crm"}), frozenset()])  # one other wants crm, one wants nothing
    assert (crm.rate, crm.burst, sheets.rate, sheets.burst) == (6.0, 3, 4.0, 4)
    reg.apply_peers([frozenset(), frozenset()])  # nobody else wants anything: the whole limit here
    assert (crm.rate, sheets.rate) == (12.0, 4.0)
    reg.apply_peers([None, frozenset({"sheets"})])  # a replica from before `wants` counts for every one
    assert (crm.rate, sheets.rate) == (6.0, 4.0 / 3)
    assert reg.wanted() == []
    assert reg.gate("crm").bucket is crm and crm.take(max_wait=1)[0]
    assert reg.wanted() == ["crm"]


async def test_the_heartbeat_says_what_this_replica_wants_and_a_wake_writes_it_at_once() -> None:
    fake, listener = Producer(), Listener()
    listener.wants = ["crm"]
    s = state(fake, listener, heartbeat_seconds=60.0)
    s.wake()
    s.wake()  # one write under way: not a second
    await asyncio.gather(*s._tasks)
    beats = [DestinationState.model_validate_json(v) for k, v in fake.sent if k == b"replica/replica-a" and v]
    assert [b.wants for b in beats] == [["crm"]]


async def test_a_wake_from_a_rate_limited_send_reaches_the_shared_state() -> None:
    reg = registry(LIMITED, CRM_ENV)
    fake = Producer()
    s = state(fake, reg, heartbeat_seconds=60.0)  # type: ignore[arg-type]
    reg.attach(s)
    gate = reg.gate("crm")
    async with gate.slot():
        pass
    await asyncio.gather(*s._tasks)
    beats = [DestinationState.model_validate_json(v) for k, v in fake.sent if k == b"replica/replica-a" and v]
    assert [b.wants for b in beats] == [["crm"]]


async def test_a_second_destination_waking_before_or_while_the_wake_is_written_is_written_too() -> None:
    """A batch's records for two idle destinations woke both; the heartbeat written named only the first
    (built when it woke, and a wake while that write was under way was dropped), so the others went on
    sending the second at their larger share until the next beat."""
    reg = registry(LIMITED, CRM_ENV)
    fake = Producer(delay=0.05)
    s = state(fake, reg, heartbeat_seconds=60.0)  # type: ignore[arg-type]
    reg.attach(s)
    async with reg.gate("crm").slot(), reg.gate("sheets").slot():  # both before the wake's write starts
        pass
    await asyncio.gather(*s._tasks)
    beats = [DestinationState.model_validate_json(v) for k, v in fake.sent if k == b"replica/replica-a" and v]
    assert [b.wants for b in beats] == [["crm", "sheets"]]

    fake.sent.clear()
    for bucket in (reg.gate("crm").bucket, reg.gate("sheets").bucket):
        assert bucket is not None
        bucket._asked -= 60  # both idle again
    async with reg.gate("crm").slot():
        pass
    await asyncio.sleep(0.01)  # the wake's write under way
    async with reg.gate("sheets").slot():
        pass
    await asyncio.gather(*s._tasks)
    beats = [DestinationState.model_validate_json(v) for k, v in fake.sent if k == b"replica/replica-a" and v]
    assert [b.wants for b in beats] == [["crm"], ["crm", "sheets"]]


async def test_the_others_wants_are_applied_and_a_share_grows_only_while_our_own_heartbeat_comes_back() -> None:
    clock, listener = Clock(), Listener()
    s = state(Producer(), listener, heartbeat_seconds=2.0, clock=clock)
    now = datetime.now(UTC)
    s._apply(*heartbeat("replica-a", now, []))
    s._apply(*heartbeat("replica-b", now, ["crm"]))
    s._apply(*heartbeat("replica-c", now))  # from before `wants`
    s._count_live()
    assert listener.peers == [frozenset({"crm"}), None] and s.live_replicas == 3
    clock.now = 10.0  # nothing read for 10 s; then replica-b says it wants nothing more
    s._apply(*heartbeat("replica-b", now, []))
    s._apply(*heartbeat("replica-c", now, ["crm", "sheets"]))
    s._count_live()
    assert listener.peers == [frozenset({"crm"}), None]  # our own heartbeat is late: no share grows
    s._apply(*heartbeat("replica-a", now, []))
    s._count_live()
    assert listener.peers == [frozenset(), frozenset({"crm", "sheets"})]
    s._apply(*heartbeat("replica-b", now, ["sheets"]))  # wanting more shrinks our share: applied at once
    clock.now = 20.0
    s._apply(*heartbeat("replica-b", now, ["sheets", "crm"]))
    s._apply(*heartbeat("replica-c", now, ["crm", "sheets"]))
    s._count_live()
    assert listener.peers == [frozenset({"crm", "sheets"}), frozenset({"crm", "sheets"})]
