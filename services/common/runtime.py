"""The consumer runtime: a service is a typed handler; this module owns Kafka.

Many records in flight (key-ordered or unordered), commits only up to each partition's lowest
unfinished offset, backpressure by pausing partitions while polling goes on, retry tiers with due
times, dead letters, draining on revoke and on SIGTERM, metrics and health endpoints.

A record's offset is committed only once its outcome is durable: its outputs, its retry-tier copy or
its dead letter have been acknowledged by the brokers (acks=all, idempotent producer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from schemas import headers as h
from services.common import codec, observability, starting
from services.common.api import Context, Service
from services.common.codec import Outgoing
from services.common.errors import DependencyUnavailable, PermanentError, StartRefused, Stopped, Unproducible
from services.common.kafka import Batcher, PartitionState, Sender
from services.common.kafka import producer as make_producer
from services.common.observability import record_context
from services.common.process import Processor, Verdict, category, describe, due_time_of, wall_clock
from services.common.settings import KafkaSettings, RuntimeSettings

log = logging.getLogger("postcall.runtime")
# "dependency unavailable, pausing" once, then at most once a minute with the count of repeats: during an
# LLM or store outage every waiting record logged it, each time it waited (about 13 lines a second per pod)
pauses_log = logging.getLogger("postcall.runtime.pauses")
pauses_log.addFilter(observability.RepeatFilter())
TOPIC_WAIT_SECONDS = 30.0
# /readyz: a broker answered a metadata request within RuntimeSettings.kafka_ready_seconds (asked every
# third of it). /healthz never asks: a broker outage restarting every pod would bring nothing back.
# Under the service's backpressure the loop does not poll (a paused partition drops what the consumer
# prefetched); after this long without a poll it polls with every partition paused, to stay in the group.
PRESSURE_POLL_SECONDS = 10.0
PRESSURE_CHECK_SECONDS = 0.005  # how often a held loop asks the service for its capacity again
# A commit is given up (tried again at the next interval) after this long: aiokafka's commit waits for a
# group coordinator for as long as none answers (a broker outage), which held the poll loop (a SIGTERM was
# never acted on) and the last commit of a stop (the pod hung until killed).
COMMIT_TIMEOUT_SECONDS = 5.0
# A stop gives the clients this long each: the producer's stop waits for every buffered batch to be
# acknowledged, which while no broker answers is for ever (aiokafka expires a batch only once the metadata,
# which it can no longer refresh, names no leader for its partition). What is still buffered at the end of
# a stop belongs to records left uncommitted.
CLIENT_STOP_SECONDS = 10.0
Acks = Sequence[asyncio.Future[Any]]  # the acks of the record batches that hold one input's outputs
_FAILED: Acks = []  # a fast-path record whose failure was carried out: nothing to wait for
Queued = tuple[Any, Acks | None, tuple[str, ...]]  # a fast-path record, its outputs' acks, their topics
# shared tuples of output topics, one per combination (Runtime._topics_of); more combinations go uncached
TOPIC_COMBINATIONS = 256
LAG_REPORT_SECONDS = 5.0  # how often postcall_consumer_lag_records is set
# a partition no fetch has answered for this long (paused: held for a due time, an outage, backpressure; not
# read yet) has its end offset asked of a broker at the next report: its high watermark is that old
FETCHED_LATELY_MS = 2 * LAG_REPORT_SECONDS * 1000


class Runtime:
    """Runs one service (its route, handler and hooks) on a Kafka consumer group until stopped."""

    def __init__(
        self, service: Service[Any], *, kafka: KafkaSettings, settings: RuntimeSettings, group_id: str | None = None
    ) -> None:
        route = service.route
        self.service, self.route, self.kafka, self.settings = route.service, route, kafka, settings
        self.hooks = service
        self.group_id = group_id or route.group_id
        self.processor = Processor(service, settings, self.group_id)  # refuses a route it cannot carry out
        self.main_topics = list(route.input_topics)
        self.retry_topics = list(self.processor.retry_topics)  # the tiers read (all that exist: _wait_for_topics)
        self.replay_topics = list(route.replay_topics)  # its private replay topic (Route.private_replay), if any
        self.dead_letter_topic = route.dead_letter_topic
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.in_flight = 0
        self.paused: set[TopicPartition] = set()
        self.dependency_paused_until = 0.0
        self._dependency_since: float | None = None  # the outage's first pause, until a record goes through
        self._dependency_waiters = 0  # records that waited for it and are still trying (not through, failed or gone)
        self.started = False
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()  # set whenever an in-flight record finishes
        # per-record metrics, labelled once: .labels() takes a lock and validates on every call
        self._in_flight_gauge = observability.IN_FLIGHT.labels(self.service)
        self._processed_ok = observability.RECORDS_PROCESSED.labels(self.service, "ok")
        # every dead-letter series exists from the start at 0: the first dead letter is an increase
        for dead_letter_category in (h.CATEGORY_POISON, h.CATEGORY_PERMANENT, h.CATEGORY_RETRIES_EXHAUSTED):
            observability.DEAD_LETTERS.labels(self.service, dead_letter_category)
        self._dependency_gauge = observability.DEPENDENCY_PAUSED.labels(self.service)
        self._paused_gauge = observability.PAUSED_PARTITIONS.labels(self.service)
        self._consumed: dict[str, Any] = {}
        self._produced: dict[str, Any] = {}
        self._key_tails: dict[bytes, asyncio.Task[None]] = {}
        # by topic (one output) or by tuple of topics (several): the route's output topics
        self._topic_tuples: dict[str | tuple[str, ...], tuple[str, ...]] = {}
        self._last_activity = time.monotonic()
        self._kafka_answered = 0.0  # monotonic time a broker last answered (readiness)
        self._lag_tasks: set[asyncio.Task[None]] = set()  # asking brokers for offsets the lag needs
        self._in_group = False  # between a rebalance's assignment (its hook done) and the next revoke
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: Any = None
        self._batcher: Batcher
        self._sender: Sender

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────────

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Consume until stop(), SIGTERM (with install_signal_handlers) or idle_exit_seconds."""
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            client_id=f"{self.kafka.client_id}-{self.service}",
            group_id=self.group_id,
            group_instance_id=s.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            rebalance_timeout_ms=int(s.drain_timeout_seconds * 1000) + 30_000,
            max_partition_fetch_bytes=max(1024 * 1024, s.max_record_bytes + 1024),
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self._producer = make_producer(self.kafka, client_id=f"{self.kafka.client_id}-{self.service}")
        self._batcher = Batcher(self._producer)
        self._sender = Sender(self._producer)
        health = observability.HealthServer(s.metrics_host, s.metrics_port, self._ready, self._alive)
        await self._producer.start()
        checking: asyncio.Task[None] | None = None
        try:
            await self._consumer.start()
            await self._wait_for_topics()
            if self._stopping.is_set():
                log.info("stopped before starting", extra={"topics": self.main_topics})
                return
            await self._batcher.learn(self.route.output_topics)  # the fast path batches for these
            topics = [*self.main_topics, *self.retry_topics, *self.replay_topics]
            self._consumer.subscribe(topics, listener=_Listener(self))
            self._kafka_answered = time.monotonic()
            checking = asyncio.create_task(self._check_kafka(), name="kafka-check")
            if s.metrics_port:
                await health.start()
            self.started = True
            log.info("started", extra={"topics": self.main_topics, "group": self.group_id})
            await self._loop()
        finally:
            self.started = False
            if checking is not None:
                checking.cancel()
            await self._shutdown()
            await health.stop()

    async def _wait_for_topics(self) -> None:
        """A start-up check from the route: every topic it reads or writes exists. A topic created a moment
        ago may not be in every broker's metadata yet; subscribing before it is would leave it unassigned
        until the next metadata refresh (minutes), so wait for it, and refuse to start when it never comes.
        Of the route's retry tiers, those the settings write must exist; the others are read if they exist."""
        assert self._consumer is not None
        wanted = {*self.main_topics, *self.processor.retry_topics, self.dead_letter_topic, *self.route.output_topics}
        wanted.update(self.replay_topics)
        deadline = time.monotonic() + TOPIC_WAIT_SECONDS
        while missing := wanted - (existing := await self._consumer.topics()):
            if self._stopping.is_set():
                return  # told to stop while waiting: not a missing topic
            if time.monotonic() > deadline:
                raise StartRefused(
                    f"{self.service}: topics missing on the cluster: {', '.join(sorted(missing))} "
                    "(create them with `postcall topics create`)"
                )
            await asyncio.sleep(0.2)
        # a tier the settings no longer write (fewer delays than the route's tiers) may hold copies written
        # before: read, or they would wait there, neither handled nor dead-lettered, until deleted
        self.retry_topics = [topic for topic in self.processor.tier_topics if topic in existing]
        await self._check_partitions()

    async def _check_partitions(self) -> None:
        """A start-up check from the route: an output written on the input's partition number (partition
        "input": the dispatcher's ledger beside its actions) has at least as many partitions as each topic
        the route consumes. Otherwise a record of a higher partition could never be written (aiokafka
        refuses the partition) and the service would stop on it at every start; topics given more
        partitions on one side only are refused here, naming both counts."""
        problems, commands = [], []
        for output in self.route.produces:
            if output.partition != "input":
                continue
            have = len(await self._producer.partitions_for(output.stream.topic))
            most = have
            for topic in self.main_topics:
                need = len(await self._producer.partitions_for(topic))
                if need > have:
                    problems.append(f"{topic} has {need} partitions, {output.stream.topic} {have}")
                    most = max(most, need)
            if most > have:
                commands.append(f"--alter --topic {output.stream.topic} --partitions {most}")
        if problems:
            raise StartRefused(
                f"{self.service}: records are written on the partition number they arrived on, so each output "
                f"needs at least as many partitions as each input: {'; '.join(problems)} (add partitions to the "
                f"output: kafka-topics.sh --bootstrap-server {self.kafka.bootstrap_servers} {'; '.join(commands)})"
            )

    async def _shutdown(self) -> None:
        consumer = self._consumer
        for task in self._lag_tasks:
            task.cancel()
        try:
            if consumer is not None:
                await self._drain(list(self.partitions))
                with contextlib.suppress(Exception):
                    await self._commit(list(self.partitions))
                await _stopped(consumer)
        finally:
            with contextlib.suppress(Exception):
                await _bounded(self._producer.stop(), "producer")  # flushes whatever is still buffered
        log.info("stopped")

    def _ready(self) -> bool:
        kafka = time.monotonic() - self._kafka_answered < self.settings.kafka_ready_seconds
        return self.started and not self._stopping.is_set() and kafka

    async def _check_kafka(self) -> None:
        """Note when a broker answers a metadata request (the producer's connections; as the ingress's
        readiness): fetch_all_metadata raises when none of the known brokers answers."""
        every = self.settings.kafka_ready_seconds / 3
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), every)
                self._kafka_answered = time.monotonic()

    def _alive(self) -> bool:
        return not self._stopping.is_set() or self.in_flight > 0

    # ── the poll loop ──────────────────────────────────────────────────────────────────────────

    async def _loop(self) -> None:
        assert self._consumer is not None
        next_commit = time.monotonic() + self.settings.commit_interval_seconds
        next_lag = time.monotonic()
        polled = time.monotonic()
        while not self._stopping.is_set():
            if self._saturated():
                await self._wait_for_room(0.2)
            held = self._pressed() and time.monotonic() - polled < PRESSURE_POLL_SECONDS
            full = self.in_flight >= self.settings.max_in_flight or (self._pressed() and not held)
            self._update_pauses(full)
            room = self.settings.max_in_flight - self.in_flight
            batch: dict[TopicPartition, list[Any]] = {}
            if not held:
                # still full: every partition is paused; poll without waiting, only to stay in the group
                step = room if self.hooks.capacity is None else min(room, self.hooks.capacity())
                batch = await self._consumer.getmany(timeout_ms=0 if full else 200, max_records=max(1, step))
                polled = time.monotonic()
            for tp, records in batch.items():
                self._accept_batch(tp, records)
            if batch and self.hooks.capacity is not None:
                await asyncio.sleep(0)  # the handlers start (and count in the service's capacity) before the next poll
            now = time.monotonic()
            if now >= next_commit:
                await self._commit(list(self.partitions))
                next_commit = now + self.settings.commit_interval_seconds
            if now >= next_lag:
                self._learn_offsets(self._report_lag())
                next_lag = now + LAG_REPORT_SECONDS
            if self._idle_for_too_long(bool(batch)):
                log.info("idle, exiting")
                break

    def _pressed(self) -> bool:
        return self.hooks.capacity is not None and self.hooks.capacity() <= 0

    def _saturated(self) -> bool:
        return self.in_flight >= self.settings.max_in_flight or self._pressed()

    async def _wait_for_room(self, timeout: float) -> None:
        """Wake as soon as the window has room and the service's backpressure is off, not at the next
        poll timeout (a full window would otherwise idle for the whole timeout), and before pausing: a
        pause drops prefetched records."""
        deadline = time.monotonic() + timeout
        while self._saturated() and (left := deadline - time.monotonic()) > 0:
            if self.in_flight < self.settings.max_in_flight:  # held by the service: it says when it takes more
                left = min(left, PRESSURE_CHECK_SECONDS)
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._room.wait()

    def _idle_for_too_long(self, got_records: bool) -> bool:
        """idle_exit_seconds: nothing to do for that long. Idle time counts only while the consumer is in its
        group and every partition it holds has been fetched since its assignment: start-up, the group join,
        a rebalance and the first fetch are not idle, however long they take on a loaded machine (else a
        run could end before it read the records waiting for it)."""
        idle_exit = self.settings.idle_exit_seconds
        if idle_exit is None:
            return False
        now = time.monotonic()
        if (
            got_records
            or self.in_flight
            or not self._fetched_since_assignment()
            or any(p.waiting_for_due_time() for p in self.partitions.values())
        ):
            self._last_activity = now
            return False
        return now - self._last_activity > idle_exit

    def _fetched_since_assignment(self) -> bool:
        """In the group, and a fetch answered for each partition since it was assigned (aiokafka's highwater
        is per assignment: None until then). A partition whose hook failed is never read: it does not count."""
        consumer = self._consumer
        assert consumer is not None
        return self._in_group and all(
            consumer.highwater(tp) is not None for tp, state in self.partitions.items() if state.ready
        )

    def _update_pauses(self, full: bool | None = None) -> None:
        assert self._consumer is not None
        assignment = self._consumer.assignment()
        full = self.in_flight >= self.settings.max_in_flight if full is None else full
        dependency = self.dependency_paused_until > time.monotonic()
        self._dependency_gauge.set(1 if dependency else 0)
        want = set()
        for tp in assignment:
            state = self.partitions.get(tp)
            if full or dependency or state is None or not state.ready or state.revoked or state.waiting_for_due_time():
                want.add(tp)
        if want - self.paused:
            self._consumer.pause(*(want - self.paused))
        if self.paused - want:
            self._consumer.resume(*((self.paused - want) & assignment))
        self.paused = want
        self._paused_gauge.set(len(want))

    def _accept_batch(self, tp: TopicPartition, records: list[Any]) -> None:
        state = self.partitions.get(tp)
        if state is None or state.revoked or not state.ready:
            assert self._consumer is not None
            if tp in self._consumer.assignment():  # assigned but not set up yet: read them again later
                self._consumer.seek(tp, records[0].offset)
            return
        is_retry_tier = self.processor.is_retry_topic(tp.topic)
        accepted = records
        if is_retry_tier:
            for index, record in enumerate(records):
                due = self._due_time(state, record)
                if due > wall_clock():
                    # never early: rewind to this record and pause the partition until it is due
                    assert self._consumer is not None
                    self._consumer.seek(tp, record.offset)
                    state.due_at = due
                    self._update_pauses()
                    accepted = records[:index]
                    break
        if self.settings.fast_path:
            self._start_batch(state, accepted)
            return
        for record in accepted:
            self._start(state, record)

    def _due_time(self, state: PartitionState, record: Any) -> float:
        """When a retry copy may be handled: its due time, but no later than its tier's longest delay from
        when it was first read (a copy written by a producer whose clock runs ahead, or by hand, would
        otherwise hold its partition, and every copy behind it, paused until then)."""
        due = due_time_of(codec.header_dict(record.headers))
        if state.held is not None and state.held[0] == record.offset:
            return min(due, state.held[1])
        latest = wall_clock() + self.processor.tier_waits[record.topic]
        if due > latest:
            log.warning(
                "retry copy due later than its tier allows; waiting the tier's delay instead",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "due_at": due},
            )
            state.held = (record.offset, latest)
            return latest
        return due

    def _start_batch(self, state: PartitionState, records: list[Any]) -> None:
        """The fast path: one task for a partition's polled batch, after the partition's previous one."""
        if not records:
            return
        for record in records:
            state.accept(record.offset)
        self.in_flight += len(records)
        self._in_flight_gauge.set(self.in_flight)
        self._per_topic(self._consumed, observability.RECORDS_CONSUMED, records[0].topic).inc(len(records))
        handled = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run_batch(state, records, state.tail, handled))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        state.tail = handled

    def _start(self, state: PartitionState, record: Any) -> None:
        state.accept(record.offset)
        self.in_flight += 1
        self._in_flight_gauge.set(self.in_flight)
        self._per_topic(self._consumed, observability.RECORDS_CONSUMED, record.topic).inc()
        previous = None
        if self.settings.ordering == "key" and record.key is not None:
            previous = self._key_tails.get(record.key)
        task = asyncio.create_task(self._run_record(state, record, previous))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        if self.settings.ordering == "key" and record.key is not None:
            self._key_tails[record.key] = task
            task.add_done_callback(functools.partial(self._forget_key, record.key))

    def _per_topic(self, cache: dict[str, Any], metric: Any, topic: str) -> Any:
        """The metric's child for this service and topic, labelled once (labels() locks and validates)."""
        child = cache.get(topic)
        if child is None:
            child = cache[topic] = metric.labels(self.service, topic)
        return child

    def _forget_key(self, key: bytes, task: asyncio.Task[None]) -> None:
        if self._key_tails.get(key) is task:
            del self._key_tails[key]

    # ── one record ─────────────────────────────────────────────────────────────────────────────

    async def _run_record(self, state: PartitionState, record: Any, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                try:
                    with contextlib.suppress(Exception):  # the predecessor's failure is its own
                        await asyncio.shield(previous)
                except asyncio.CancelledError:  # the predecessor's cancellation, or this record's own (a drain)
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
            if state.revoked or (self._stopping.is_set() and previous is not None):
                return  # not started: left uncommitted, the next owner reads it again
            await self._process(state, record)
            if self._is_current(state):
                state.finish(record.offset)
        except Stopped:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the runtime itself: a hole would freeze the partition's commits
            log.exception("internal error; stopping so that the record is read again after a restart")
            observability.RECORDS_PROCESSED.labels(self.service, "internal_error").inc()
            self.stop()
        finally:
            self.in_flight -= 1
            self._room.set()
            self._in_flight_gauge.set(self.in_flight)

    async def _run_batch(
        self, state: PartitionState, records: list[Any], previous: asyncio.Future[None] | None,
        handled: asyncio.Future[None],
    ) -> None:  # fmt: skip
        """Records in offset order, after the partition's previous batch; their outputs are queued into
        record batches as they go (services.common.kafka.Batcher), and the records' offsets are
        finished (committable) only once every batch holding their outputs is acknowledged: the same
        guarantee as one record at a time. While this batch waits for acks, the next one is handled."""
        window = [len(records)]  # the batch's records still in the window (finished ones leave it early)
        try:
            if previous is not None:
                await asyncio.shield(previous)  # a cancelled wait must not cancel the previous batch's future
            done = await self._queue_batch(state, records)
            handled.set_result(None)
            await self._acknowledge(state, done, window)
        except Stopped:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the runtime itself: a hole would freeze the partition's commits
            log.exception("internal error; stopping so that the batch is read again after a restart")
            observability.RECORDS_PROCESSED.labels(self.service, "internal_error").inc()
            self.stop()
        finally:
            if not handled.done():
                handled.set_result(None)
            self.in_flight -= window[0]
            self._room.set()
            self._in_flight_gauge.set(self.in_flight)

    async def _queue_batch(self, state: PartitionState, records: list[Any]) -> list[Queued]:
        """Handle the records in order and hand their outputs to the producer: (record, its acks; None:
        not batched, redo it on the one-record path; its outputs' topics)."""
        done: list[Queued] = []
        p, add, stopping = self.processor, self._batcher.add_nowait, self._stopping
        for record in records:
            if state.revoked or stopping.is_set():
                break  # not started: left uncommitted, the next owner reads it again
            ctx = p.context(record, codec.header_dict(record.headers))
            event: Any = None
            try:
                event = p.decode(record, ctx)
                # no per-record timeout: a handler that never waits on I/O cannot be interrupted anyway
                outputs = p.outputs(await p.service.handle(event, ctx), ctx)
            except Exception as exc:
                failed = await self._handle_failed(state, record, ctx, event, exc)
                if failed is None:  # its retry copy or dead letter is acknowledged
                    done.append((record, _FAILED, ()))
                    continue
                outputs = failed
            done.append((record, add(outputs), self._topics_of(outputs)))
        self._batcher.flush()
        return done

    def _topics_of(self, outputs: Sequence[Outgoing]) -> tuple[str, ...]:
        """The outputs' topics (counted as produced once acknowledged), as a tuple shared by every record
        with the same ones. A record waits for its acks in `done` with these, not with its outputs: holding
        the outputs (each with its event, headers and their pairs) kept about fifteen objects per record
        alive across the window, so the cyclic GC's first generation filled every few hundred records
        instead of every few thousand (1 KB pass-through: 2 collections per 100,000 records became 40)."""
        if len(outputs) == 1:  # most records: one tuple per topic, not one per record
            topic = outputs[0].topic
            one = self._topic_tuples.get(topic)
            if one is None:
                one = self._topic_tuples[topic] = (topic,)
            return one
        topics = tuple([r.topic for r in outputs])
        shared = self._topic_tuples.get(topics)
        if shared is None:
            if len(self._topic_tuples) >= TOPIC_COMBINATIONS:
                return topics
            shared = self._topic_tuples[topics] = topics
        return shared

    async def _handle_failed(
        self, state: PartitionState, record: Any, ctx: Context, event: Any, exc: Exception
    ) -> list[Outgoing] | None:
        """A fast-path record whose decoding or handler failed: wait out an unavailable dependency and
        handle it again (its outputs), or carry out its failure at once (None: nothing left to wait for)."""
        p = self.processor
        waited = False
        try:
            while isinstance(exc, DependencyUnavailable):
                first, waited = not waited, True
                await self._wait_for_dependency(state, exc, first=first)
                event = None
                try:
                    event = p.decode(record, ctx)
                    outputs = p.outputs(await p.service.handle(event, ctx), ctx)
                except Exception as again:
                    exc = again
                else:
                    waited = False
                    self._dependency_back()
                    return outputs
        except BaseException:  # Stopped (revoked, stopping), a drain's cancellation: before the dependency answered it
            if waited:
                self._dependency_unseen()
            raise
        if waited:  # it waited, and the dependency answered: with an error of another kind
            self._dependency_back()
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        token = record_context.set({**where, "key": ctx.key, "attempt": ctx.attempt})
        try:
            await self._fail(state, record, ctx, event, exc)
        finally:
            record_context.reset(token)
        return None

    async def _acknowledge(self, state: PartitionState, done: list[Queued], window: list[int]) -> None:
        """Wait for the acks of the batch's outputs, record by record in offset order, and finish each
        record (committable, out of the window) once all of its outputs are acknowledged: the first
        records' batches are often acknowledged a request before the last ones', and the window takes
        new records meanwhile. A record whose outputs were not all acknowledged goes through the
        one-record path (its handler again, then retries or its dead letter). Its outputs then come
        after those of later records: under broker trouble, as after a retry, the order of a key's
        outputs is not kept."""
        ok = start = 0
        acknowledged: asyncio.Future[Any] | None = None  # the last ack seen to succeed (records share batches)
        produced: dict[tuple[str, ...], int] = {}  # records acknowledged, by their outputs' topics
        for i, (record, record_acks, topics) in enumerate(done):
            if record_acks is _FAILED:
                continue  # its failure was carried out (retry copy or dead letter acknowledged)
            acked = record_acks is not None
            for ack in record_acks or ():
                if ack is acknowledged:
                    continue  # the batch before this record's was the same, and it is acknowledged
                if not ack.done():
                    self._release(state, done[start:i], window)  # everything before it is durable
                    start = i
                    with contextlib.suppress(Exception):
                        # shielded: other partitions' records share the batch, and this wait may be cancelled
                        await asyncio.shield(ack)
                if ack.cancelled() or ack.exception() is not None:
                    acked = False
                else:
                    acknowledged = ack
            if acked:
                ok += 1
                produced[topics] = produced.get(topics, 0) + 1
            else:
                self._release(state, done[start:i], window)
                start = i
                await self._process(state, record)  # broker trouble with its outputs, or too big to batch
        self._release(state, done[start:], window)
        self._processed_ok.inc(ok)
        by_topic: Counter[str] = Counter()
        for topics, records in produced.items():
            for topic in topics:
                by_topic[topic] += records
        self._count_produced(by_topic)

    def _release(self, state: PartitionState, finished: list[Queued], window: list[int]) -> None:
        """These records' outcomes are durable: their offsets may be committed, their places in the window
        taken (`window` counts the batch's records still in it)."""
        if not finished:
            return
        if self._is_current(state):
            state.finish_all(record.offset for record, _, _ in finished)
        window[0] -= len(finished)
        self.in_flight -= len(finished)
        self._room.set()
        self._in_flight_gauge.set(self.in_flight)

    def _is_current(self, state: PartitionState) -> bool:
        return self.partitions.get(TopicPartition(state.topic, state.partition)) is state and not state.revoked

    async def _process(self, state: PartitionState, record: Any) -> None:
        p = self.processor
        ctx = p.context(record, codec.header_dict(record.headers))
        token = record_context.set(
            {"topic": record.topic, "partition": record.partition, "offset": record.offset, "key": ctx.key,
             "attempt": ctx.attempt}
        )  # fmt: skip
        event: Any = None
        waited = False  # from its first wait for a dependency until the dependency answers it
        try:
            while True:
                try:
                    event = p.decode(record, ctx)
                    outputs = p.outputs(await p.handle(event, ctx), ctx)
                except DependencyUnavailable as exc:
                    first, waited = not waited, True
                    await self._wait_for_dependency(state, exc, first=first)
                    continue
                except Exception as exc:
                    if waited:  # it waited, and the dependency answered: with an error of another kind
                        waited = False
                        self._dependency_back()
                    await self._fail(state, record, ctx, event, exc)
                    return
                if waited:
                    waited = False
                    self._dependency_back()
                try:
                    await self._produce(state, outputs)
                except Unproducible as exc:
                    await self._fail(state, record, ctx, event, PermanentError(f"outputs cannot be produced: {exc}"))
                    return
                self._processed_ok.inc()
                return
        finally:
            if waited:  # it left before the dependency answered it: revoked, stopping, cancelled by a drain
                self._dependency_unseen()
            record_context.reset(token)

    async def _wait_for_dependency(self, state: PartitionState, exc: DependencyUnavailable, *, first: bool) -> None:
        """Pause every partition and retry in place: an outage is not the record's fault. `first`: the
        record's first wait, the one it counts as `unavailable` by (a record, not each of its waits)."""
        delay = min(exc.retry_after or self.settings.unavailable_backoff_seconds, self.settings.retry_after_cap_seconds)
        self.dependency_paused_until = max(self.dependency_paused_until, time.monotonic() + delay)
        if first:
            observability.RECORDS_PROCESSED.labels(self.service, "unavailable").inc()
            self._dependency_waiters += 1
        if self._dependency_since is None:
            self._dependency_since = time.monotonic()
        pauses_log.warning("dependency unavailable, pausing", extra={"reason": str(exc), "pause_seconds": delay})
        while time.monotonic() < self.dependency_paused_until:
            if not self._is_current(state) or state.revoking or self._stopping.is_set():
                raise Stopped
            await asyncio.sleep(min(0.5, self.dependency_paused_until - time.monotonic()))

    def _dependency_back(self) -> None:
        """A record that waited for a dependency went through, or failed otherwise: the outage's end, logged once
        (its pauses were logged at most once a minute, and nothing said when they stopped)."""
        self._dependency_waiters -= 1
        if self._dependency_since is not None:
            paused = time.monotonic() - self._dependency_since
            self._dependency_since = None
            log.info("dependency available again, resuming", extra={"paused_seconds": round(paused, 1)})

    def _dependency_unseen(self) -> None:
        """A record that waited for a dependency left before it answered (its partition revoked, the service
        stopping). The last one to leave so ends the outage, its end not seen: kept open, the next outage's
        "resuming" line counted its pause from this one's start, however long ago (review24b). One that
        leaves while others still wait leaves the outage to them."""
        self._dependency_waiters -= 1
        if self._dependency_waiters == 0 and self._dependency_since is not None:
            paused = time.monotonic() - self._dependency_since
            self._dependency_since = None
            log.info(
                "no record waits for the dependency any more, its end not seen",
                extra={"paused_seconds": round(paused, 1), "stopping": self._stopping.is_set()},
            )

    async def _fail(self, state: PartitionState, record: Any, ctx: Context, event: Any, exc: Exception) -> None:
        """Carry out the failed record's fate; commit only after the retry copy or the dead letter is acknowledged."""
        p = self.processor
        verdict = p.fail(record, ctx, event, exc)
        if verdict.fate == "retry":
            try:
                await self._produce(state, verdict.records)
            except Unproducible as too_big:  # the retry copy cannot be written: dead-letter instead
                verdict = p.dead_letter(record, ctx, event, PermanentError(f"cannot schedule a retry: {too_big}"))
            else:
                observability.RETRIES.labels(self.service, str(verdict.tier)).inc()
                observability.RECORDS_PROCESSED.labels(self.service, "retried").inc()
                log.warning(
                    "retry scheduled",
                    extra={"tier": verdict.tier, "delay_s": round(verdict.delay, 3), "error": describe(exc)},
                )
                return
        await self._dead_letter(state, record, ctx, event, verdict)

    async def _dead_letter(
        self, state: PartitionState, record: Any, ctx: Context, event: Any, verdict: Verdict
    ) -> None:
        if not verdict.records:  # read from our own dead-letter topic: it stays there (Processor.dead_letter)
            observability.RECORDS_PROCESSED.labels(self.service, "dead_lettered").inc()
            log.error("failed on its own dead-letter topic, left there", extra={"error": describe(verdict.error)})
            return
        try:
            await self._produce(state, verdict.records)
        except Unproducible as too_big:
            dropped = self.processor.dead_letter(
                record, ctx, event, verdict.error, value_dropped=describe(too_big.cause)
            )
            await self._produce(state, dropped.records)
        exc = verdict.error
        observability.DEAD_LETTERS.labels(self.service, category(exc)).inc()
        observability.RECORDS_PROCESSED.labels(self.service, "dead_lettered").inc()
        log.error("dead-lettered", extra={"category": category(exc), "error": describe(exc)})

    # ── producing ──────────────────────────────────────────────────────────────────────────────

    async def _produce(self, state: PartitionState, records: Sequence[Outgoing]) -> None:
        """Send every record and wait for acks=all; on broker trouble keep trying while we own the input.

        Outputs to the route's topics go into the Batcher's open batches, as the fast path's do: no send()
        coroutine, partitioner call and future per output (1 KB pass-through at the dispatcher's window of
        1024: 374 K -> 323 K instructions per record). The record waits for the acks of the batches holding
        them. What it does not batch (retry copies, dead letters, a record too big for a batch) goes through
        the Sender, one aiokafka send() per record."""
        delay = 0.5
        while True:
            try:
                futures = self._batcher.add_nowait(records)
                if futures is None:  # a topic it does not batch for, or a record too big for a batch
                    futures = [await self._send(r) for r in records]
                else:
                    self._batcher.flush()
                if futures:
                    await (futures[0] if len(futures) == 1 else asyncio.gather(*futures))
                # outputs, not retry copies or dead letters
                self._count_produced(Counter(r.topic for r in records if r.event is not None))
                return
            except KafkaError as exc:
                # KafkaTimeoutError (not marked retriable by aiokafka): a partition's buffer did not drain
                # within request_timeout_ms, its leader away: broker trouble, not the record's
                retriable = getattr(exc, "retriable", True) or isinstance(exc, KafkaTimeoutError)
                if not retriable or isinstance(exc, MessageSizeTooLargeError):
                    raise Unproducible(exc) from exc
                if not self._is_current(state) or state.revoking or self._stopping.is_set():
                    raise Stopped from exc
                log.warning("produce failed, retrying", extra={"error": describe(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _send(self, r: Outgoing) -> Any:
        """Queue one record; returns the future of its ack (one sender at a time: services.common.kafka.Sender)."""
        return await self._sender.send(r)

    def _count_produced(self, produced: Counter[str]) -> None:
        """Outputs acknowledged by the brokers, by topic (counted once, however often they were sent)."""
        for topic, count in produced.items():
            self._per_topic(self._produced, observability.RECORDS_PRODUCED, topic).inc(count)

    # ── commits and rebalances ─────────────────────────────────────────────────────────────────

    async def _commit(self, tps: list[TopicPartition]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp in tps:
            state = self.partitions.get(tp)
            offset = state.committable() if state is not None else None
            if offset is not None:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            # bookkeeping moves only on success: a failed commit is simply tried again later
            observability.COMMITS.labels(self.service, "failed").inc()
            error = describe(exc) if not isinstance(exc, TimeoutError) else "no group coordinator answered in time"
            log.warning("commit failed", extra={"error": error})
            return
        observability.COMMITS.labels(self.service, "ok").inc()
        for tp, offset in offsets.items():
            state = self.partitions.get(tp)
            if state is not None:
                state.committed = offset

    async def _drain(self, tps: list[TopicPartition]) -> None:
        """Wait (bounded) for the in-flight records of these partitions; cancel what is left."""
        tasks = {t for tp in tps if (s := self.partitions.get(tp)) for t in s.tasks}
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("drain timed out, records left uncommitted", extra={"left": len(pending)})
            await asyncio.wait(pending, timeout=5)
        del done

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._in_group = False
        observability.REBALANCES.labels(self.service, "revoked").inc(len(revoked))
        tps = [tp for tp in revoked if tp in self.partitions]
        for tp in tps:
            self.partitions[tp].revoking = True  # outage waits and produce retries give up at once
        await self._drain(tps)
        await self._commit(tps)
        for tp in tps:
            self.partitions.pop(tp).revoked = True
            with contextlib.suppress(KeyError):  # another owner reports this partition's lag now
                observability.CONSUMER_LAG.remove(self.service, tp.topic, str(tp.partition))
        self.paused -= set(revoked)
        if self.hooks.on_revoked is not None and tps:
            await self.hooks.on_revoked([(tp.topic, tp.partition) for tp in tps])
        log.info("partitions revoked", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in tps)})

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        observability.REBALANCES.labels(self.service, "assigned").inc(len(assigned))
        fresh = [tp for tp in assigned if tp not in self.partitions]
        # states exist (not ready: paused, records seen meanwhile are read again) before the hook runs
        for tp in fresh:
            self.partitions[tp] = PartitionState(tp.topic, tp.partition, ready=False)
        if self.hooks.on_assigned is not None and fresh:
            await self.hooks.on_assigned([(tp.topic, tp.partition) for tp in fresh])
        for tp in fresh:
            self.partitions[tp].ready = True
        self.paused &= set(assigned)
        self._in_group = True
        self._learn_offsets(fresh, assigned=True)
        log.info("partitions assigned", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in fresh)})

    def _report_lag(self) -> list[TopicPartition]:
        """Each partition's lag: its end offset (the high watermark of its last fetch, or what a broker said
        since, the larger) minus the next offset to commit, or the position it was assigned at while no
        record was read. While no broker answers (what /readyz says) the end is old and the lag unknown: its
        series are removed, not left at their last value, and come back at the first report after a broker
        answers. Returns the partitions no fetch has answered for lately (their end offsets to ask for)."""
        consumer = self._consumer
        assert consumer is not None
        if time.monotonic() - self._kafka_answered >= self.settings.kafka_ready_seconds:
            for tp in self.partitions:
                with contextlib.suppress(KeyError):  # not reported yet, or removed at an earlier report
                    observability.CONSUMER_LAG.remove(self.service, tp.topic, str(tp.partition))
            return []
        stale, now_ms, assignment = [], time.time() * 1000, consumer.assignment()
        for tp, state in self.partitions.items():
            if tp not in assignment:  # a rebalance under way (the consumer's accessors assert it)
                continue
            high, fetched = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            position = _position(state)
            if high is None or fetched is None or now_ms - fetched > FETCHED_LATELY_MS or position is None:
                stale.append(tp)
            if state.log_end is not None and (high is None or state.log_end > high):
                high = state.log_end
            if high is not None and position is not None:
                observability.CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(
                    max(0, high - position)
                )
        return stale

    def _learn_offsets(self, tps: list[TopicPartition], *, assigned: bool = False) -> None:
        """Ask a broker, in the background, for these partitions' end offsets (and the positions of those
        with none known yet: the committed offset, or where the reset policy put it), then report the lag.
        A partition no fetch answered for yet (just assigned, held by the service, stuck) had no lag series,
        and one paused since (a due time, an outage) a lag frozen at its last fetch while its backlog grew.
        The reports' requests one at a time; an assignment's (`assigned`) at once."""
        if not tps or (not assigned and any(not t.done() for t in self._lag_tasks)):
            return
        task = asyncio.create_task(self._ask_offsets(tps), name="lag-offsets")
        self._lag_tasks.add(task)
        task.add_done_callback(self._lag_tasks.discard)

    async def _ask_offsets(self, tps: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        unplaced = [tp for tp in tps if (state := self.partitions.get(tp)) is not None and _position(state) is None]
        try:
            async with asyncio.timeout(LAG_REPORT_SECONDS * 2):
                starts = {tp: await consumer.position(tp) for tp in unplaced}
                ends = await consumer.end_offsets(tps)
        except (KafkaError, OSError, TimeoutError):  # revoked meanwhile, no broker answered: the next report asks
            return
        except Exception:  # a metric's: never the service's problem, nor a traceback at exit
            log.exception("asking a broker for the offsets the lag needs failed")
            return
        for tp, end in ends.items():
            state = self.partitions.get(tp)
            if state is None or state.revoked:
                continue
            state.log_end = end
            if tp in starts:
                state.start = starts[tp]
        self._report_lag()


def _position(state: PartitionState) -> int | None:
    """The next offset to commit, or the one it would restart from: what the lag counts from."""
    for offset in (state.committable(), state.committed, state.next_offset, state.start):
        if offset is not None:
            return offset
    return None


async def _stopped(consumer: AIOKafkaConsumer) -> None:
    """consumer.stop(). During a broker outage aiokafka's fetcher, closing, cancels a fetch task that sleeps
    out a connection error's backoff and awaits it, so stop() raises that task's CancelledError
    (aiokafka 0.14, Fetcher.close: `x.cancel(); await x`): not addressed to us, it must not end a clean
    stop with a traceback and exit status 1. A cancellation of this task itself still propagates."""
    try:
        await _bounded(consumer.stop(), "consumer")
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("the Kafka consumer stopped with its fetcher's cancellation (a broker was unreachable)")


async def _bounded(stop: Coroutine[Any, Any, None], client: str) -> None:
    """A client's stop, given up after CLIENT_STOP_SECONDS (a broker outage) so that the process exits."""
    try:
        async with asyncio.timeout(CLIENT_STOP_SECONDS):
            await stop
    except TimeoutError:
        log.warning(f"the Kafka {client} did not stop within {CLIENT_STOP_SECONDS:.0f} s (no broker answered)")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runtime.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.runtime.on_assigned(assigned)


GC_THRESHOLDS = (10_000, 20, 50)


def tune_gc() -> None:
    """Handling one record allocates a few hundred short-lived objects (decoded events, traces,
    rendered text), all freed by reference counting. With the default generation-0 threshold (700)
    the cyclic collector ran every few records and took about a third of the router's CPU in
    bench/router.py; at 10,000 it runs every few dozen records. Objects alive at start are frozen."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


async def serve(runtime: Runtime) -> None:
    """Run a service in the foreground: SIGTERM/SIGINT drain in-flight work, commit and exit. Kafka is
    waited for first while no broker answers (services.common.starting), not crashed on."""
    tune_gc()
    s = runtime.settings
    if not await starting.kafka_or_stop(runtime.kafka, host=s.metrics_host, port=s.metrics_port):
        return
    runtime.install_signal_handlers()
    await runtime.run()
