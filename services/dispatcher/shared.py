"""Destination state every dispatcher replica shares, kept in Kafka: postcall.destination-state.v1
(compacted, one partition, declared in schemas/topics.py).

    disabled/<destination>   410 Gone disabled it (or `postcall destinations enable` enabled it again)
    circuit/<destination>    a replica's circuit breaker opened (until when) or its probe closed it
    replica/<id>             a replica's heartbeat; a clean stop writes a tombstone

Every replica reads the topic from the beginning before it consumes a single action, so a restarted
replica stays stopped for a destination disabled before, then follows it. What one replica decides
(410, a circuit opening or closing) it writes, and every replica applies it. Rate limits are shared out
among the replicas that want the destination: each heartbeat names the rate-limited destinations its
replica has had work for lately (`wants`), and a replica sends to a destination at `limit / n`, n = itself
+ the live replicas that want it (heartbeats read within three intervals, on our own clock). So the group
as a whole keeps about the limit however many replicas run, and one replica with all of a destination's
work sends at the whole limit. A replica that wants a destination again after a pause writes its heartbeat
at once (the others shrink their share within about a read), and a replica that vanished without its
tombstone counts for three intervals (the group sends a little under the limit meanwhile). Where the group
can go over it is listed in docs/operations.md (a starting or waking replica, failed heartbeat writes,
bursts).

Decisions are written in the background (the delivery that saw the 410 does not wait for the broker); a
write that fails is logged and kept: the latest undelivered decision per destination is written again with
every heartbeat until the broker acknowledges it (a 410 is dropped once an operator's later enable is
read), and a clean stop waits (a few seconds at most) for the writes still under way before it leaves.
A restarted replica applies its own earlier decisions too (a static
group.instance.id keeps its replica id); while running it skips them (it applied them when made).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schemas.events import DestinationState
from schemas.topics import DESTINATION_STATE, DESTINATION_STATES
from services.common import codec
from services.common.kafka import partitions_of, producer
from services.common.settings import KafkaSettings

log = logging.getLogger("postcall.dispatcher.shared")

HEARTBEAT_SECONDS = 2.0
FOLLOW_BACKOFF = (0.5, 30.0)  # seconds: first and longest wait before reading the topic again after an error
STOP_WAIT = 5.0  # seconds a clean stop waits for decisions still being written
ALIVE_FOR = 3  # heartbeats: a replica silent for longer is gone
OPERATOR = "postcall destinations"


class Listener(Protocol):
    """What the shared state tells the registry (services/dispatcher/registry.py)."""

    def apply_disabled(  # reason None: enabled again, at `enabled_at` (epoch seconds)
        self, destination: str, reason: str | None, enabled_at: float | None = None
    ) -> None: ...
    def apply_circuit(self, destination: str, open_until: float | None) -> None: ...  # None: closed
    def apply_peers(self, peers: list[frozenset[str] | None]) -> None: ...  # the others' wants (None: all)
    def wanted(self) -> list[str]: ...  # the rate-limited destinations this replica has had work for lately


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def fact(kind: str, replica: str, **fields: object) -> DestinationState:
    return DestinationState.model_validate({"kind": kind, "replica": replica, "at": datetime.now(UTC), **fields})


class SharedState:
    def __init__(
        self,
        kafka: KafkaSettings,
        listener: Listener,
        replica: str | None = None,
        *,
        topic: str = DESTINATION_STATE,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.time,
        source: str = "dispatcher",
    ) -> None:
        self.replica = replica or replica_id()
        self._source = source
        self._kafka, self._listener, self._topic = kafka, listener, topic
        self._heartbeat = heartbeat_seconds
        self._clock = clock
        self._producer = producer(kafka)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # replica -> when this replica READ its last heartbeat (self._clock, monotonic): ages measured on our
        # own clock, so a peer whose clock is off is not counted gone for it
        self._seen: dict[str, float] = {}
        self._stamped: dict[str, float] = {}  # while catching up: replica -> its last heartbeat's own time
        self._catching_up = False
        self._wants: dict[str, frozenset[str] | None] = {}  # replica -> what its latest heartbeat wants
        self._peers: dict[str, frozenset[str] | None] = {}  # the live others as applied (apply_peers)
        self._waking: asyncio.Task[None] | None = None
        self._rewake = False  # woken since the wake's heartbeat was built: write it again
        self._unsent: dict[str, DestinationState] = {}  # key -> the latest decision not yet acknowledged
        self._writes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SharedState:
        if not await partitions_of(self._kafka, self._topic):
            raise SystemExit(f"dispatcher: topic {self._topic} does not exist (create it: postcall topics create)")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in await partitions_of(self._kafka, self._topic)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        read = await self._catch_up(tps)
        await self.publish_now(self._heartbeat_fact())
        log.info("destination state read: %d records, %d replicas alive", read, self.live_replicas)
        self._spawn(self._follow())
        self._spawn(self._beat())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writes:  # decisions under way reach the topic before we stop (a restart would lose them)
            await asyncio.wait(list(self._writes), timeout=STOP_WAIT)
        if self._unsent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resend(), STOP_WAIT)
        for name in self._unsent:
            log.error("destination state not written before stopping (%s): other replicas will not see it", name)
        for task in list(self._tasks | self._writes):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._writes, return_exceptions=True)
        with contextlib.suppress(Exception):  # a clean stop: the others share the limits without us at once
            await (await self._producer.send(self._topic, None, key=f"replica/{self.replica}".encode()))
        await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()

    # ── writes ──────────────────────────────────────────────────────────────────────────────────────

    async def publish_now(self, state: DestinationState) -> None:
        """Write one fact and wait for the broker's acknowledgement (acks=all)."""
        headers = codec.cloudevent_headers(state, DESTINATION_STATES.ce_type, self._source, state.key)
        value = codec.encode(state)
        future = await self._producer.send(
            self._topic, value, key=state.key.encode(), headers=codec.header_list(headers)
        )
        await future

    def publish(self, state: DestinationState) -> None:
        """Write one decision in the background; until the broker acknowledges it, it is kept and written
        again with every heartbeat (a newer decision for the same key replaces it)."""
        self._unsent[state.key] = state
        task = asyncio.create_task(self._deliver(state))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _deliver(self, state: DestinationState) -> None:
        try:
            await self.publish_now(state)
        except Exception as exc:  # kept in _unsent: the next heartbeat writes it again
            log.warning("destination state not written (%s), will retry: %s", state.key, exc)
            return
        if self._unsent.get(state.key) is state:
            del self._unsent[state.key]

    async def _resend(self) -> None:
        for state in list(self._unsent.values()):
            await self._deliver(state)

    def disabled(self, destination: str, reason: str) -> None:
        self.publish(fact("disabled", self.replica, destination=destination, disabled=True, reason=reason))

    def circuit(self, destination: str, open_until: float | None) -> None:
        if open_until is None:
            self.publish(fact("circuit", self.replica, destination=destination, circuit="closed"))
        else:
            until = datetime.fromtimestamp(open_until, UTC)
            self.publish(fact("circuit", self.replica, destination=destination, circuit="open", open_until=until))

    def wake(self) -> None:
        """This replica wants a destination again: its heartbeat now rather than at the next beat, so the
        others take their share down within about a read (until then the group may send over the limit).
        One write at a time; a destination woken while it is under way is written again after it."""
        self._rewake = True
        if self._waking is None or self._waking.done():
            self._waking = asyncio.create_task(self._wake_beats())
            self._tasks.add(self._waking)
            self._waking.add_done_callback(self._tasks.discard)

    async def _wake_beats(self) -> None:
        while self._rewake:
            self._rewake = False
            # built when written, not when woken: every destination woken until then is in it
            await self._safely(self._heartbeat_fact())

    def _heartbeat_fact(self) -> DestinationState:
        return fact("replica", self.replica, wants=self._listener.wanted())

    @property
    def live_replicas(self) -> int:
        return 1 + len(self._peers)

    # ── reads ───────────────────────────────────────────────────────────────────────────────────────

    async def _catch_up(self, tps: list[TopicPartition]) -> int:
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(tps)
        read = 0
        self._catching_up = True
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                read += len(records)
                for record in records:
                    self._apply(record.key, record.value, own=True)
        self._catching_up = False
        self._aged()
        self._count_live()
        return read

    async def _follow(self) -> None:
        """Read the others' decisions for as long as we run: an error (authorization, a broker gone) is
        logged and the read tried again after a growing pause, never a silent stop."""
        assert self._consumer is not None
        first, longest = FOLLOW_BACKOFF
        wait = first
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except Exception as exc:
                log.error("destination state: reading %s failed, again in %.1f s: %s", self._topic, wait, exc)
                await asyncio.sleep(wait)
                wait = min(longest, wait * 2)
                continue
            wait = first
            for records in batch.values():
                for record in records:
                    self._apply(record.key, record.value)
            self._count_live()

    def _apply(self, key: bytes | None, value: bytes | None, own: bool = False) -> None:
        """One record; `own`: apply this replica's decisions too (read at start, from before a restart)."""
        name = key.decode("utf-8", "replace") if key else ""
        if value is None:
            if name.startswith("replica/"):
                self._seen.pop(name.removeprefix("replica/"), None)
                self._stamped.pop(name.removeprefix("replica/"), None)
                self._wants.pop(name.removeprefix("replica/"), None)
            return
        try:
            state = DestinationState.model_validate_json(value)
        except ValidationError as exc:
            log.warning("destination state: an unreadable record skipped: %s", codec.summarize(exc))
            return
        if state.key != name:  # a record filed under another key would change the wrong state
            log.warning("destination state: a record under key %r says it is %r; skipped", name, state.key)
            return
        if state.kind == "replica":
            self._wants[state.replica] = None if state.wants is None else frozenset(state.wants)
            if self._catching_up:
                self._stamped[state.replica] = state.at.timestamp()
            else:
                self._seen[state.replica] = self._clock()
        elif state.destination is None or (state.replica == self.replica and not own):
            return  # our own decisions are applied when made
        elif state.kind == "disabled":
            unsent = self._unsent.get(state.key)
            if not state.disabled and unsent is not None and unsent.at < state.at:
                del self._unsent[state.key]  # enabled after our 410: writing it again would disable it anew
            enabled_at = None if state.disabled else state.at.timestamp()
            self._listener.apply_disabled(state.destination, state.reason if state.disabled else None, enabled_at)
        elif state.circuit == "open" and state.open_until is not None:
            self._listener.apply_circuit(state.destination, state.open_until.timestamp())
        elif state.circuit == "closed":
            self._listener.apply_circuit(state.destination, None)

    def _aged(self) -> None:
        """The history's heartbeats aged against the newest one in it, not against this machine's clock."""
        newest, now = max(self._stamped.values(), default=0.0), self._clock()
        self._seen = {r: now - (newest - at) for r, at in self._stamped.items() if r != self.replica}
        self._stamped.clear()

    def _count_live(self) -> None:
        """The other replicas whose heartbeat we read within three intervals, with what each wants. A
        share only grows (a replica gone, or wanting less) while our own heartbeats come back to us in
        time: when they do not (the broker stalls, this loop was blocked, our reads fail) the others'
        silence says nothing about them, and taking their share would send the group over the limit."""
        horizon = self._clock() - ALIVE_FOR * self._heartbeat
        peers = {r: self._wants.get(r) for r, at in self._seen.items() if r != self.replica and at >= horizon}
        if peers == self._peers:
            return
        if not _covers(peers, self._peers) and self._seen.get(self.replica, horizon - 1) < horizon:
            return
        if len(peers) != len(self._peers):
            log.info("dispatcher replicas alive: %d (rate limits shared out among them)", 1 + len(peers))
        self._peers = peers
        self._listener.apply_peers(list(peers.values()))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await self._safely(self._heartbeat_fact())
            await self._resend()
            self._count_live()

    async def _safely(self, state: DestinationState) -> None:
        try:
            await self.publish_now(state)
        except Exception as exc:  # the next decision or heartbeat writes again
            log.warning("destination state not written (%s): %s", state.key, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _covers(new: dict[str, frozenset[str] | None], old: dict[str, frozenset[str] | None]) -> bool:
    """Every replica in `old` is in `new` and wants there at least what it wanted (None: everything): no
    share of ours grows from old to new."""
    for replica, wanted in old.items():
        if replica not in new:
            return False
        wants = new[replica]
        if wants is not None and (wanted is None or not wanted <= wants):
            return False
    return True
