"""Each service's route, declared once: what it consumes, what it produces and where, how it retries.

    Route(service, consumes=(stream, ...), produces=(Output(stream, partition), ...),
          retry_delays_seconds, ordering, max_in_flight, forwards_headers, reads, private_replay)

A handler returns events; the route decides where each goes: the output whose stream's model is the
event's class gives the topic, the stream gives the key and `ce_type`, the output gives the partition
("key": Kafka's partitioner over the key; "input": the partition number the input first arrived on,
for state co-partitioned with the input such as the dispatcher's ledger) and may key by the input's
key instead of the event's.

Derived from these declarations, and nowhere else: the topic registry below (what `postcall topics
create`, the Strimzi KafkaTopic manifests and the AsyncAPI document are made of), each service's retry,
dead-letter and replay topics, its runtime settings' defaults (services.common.settings.ServiceSettings) and
the runtime's start-up checks (`Route.check`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from schemas import headers as h
from schemas import topics as t
from schemas.topics import Stream, Topic

Partitioning = Literal["key", "input"]
RETRY_RETENTION_MS = 7 * t.DAY_MS  # every retry tier's topic: far longer than any tier's delay
Keying = Literal["event", "input"]
Ordering = Literal["key", "unordered"]


@dataclass(frozen=True)
class Output:
    """Where a route sends the events of one model. key "event": the stream's key of the event;
    "input": the input record's key. partition "key": Kafka's partitioner over the key; "input": the
    partition number the input first arrived on."""

    stream: Stream[Any]
    partition: Partitioning = "key"
    key: Keying = "event"


def _same(name: str) -> str:
    return name


@dataclass(frozen=True)
class Route:
    service: str
    description: str
    consumes: tuple[Stream[Any], ...]
    produces: tuple[Output, ...]
    #: the delay of each retry tier; the tier topics exist for exactly this many (settings may use fewer)
    retry_delays_seconds: tuple[float, ...]
    ordering: Ordering = "key"
    max_in_flight: int = 64
    #: the longest wait a remote's Retry-After may ask for (a longer one is cut to this)
    retry_after_cap_seconds: float = 3600.0
    #: input headers copied onto every output (e.g. x-reextract-of, so a re-extraction is traceable)
    forwards_headers: tuple[str, ...] = ()
    #: topics the service reads outside the runtime (state restored at assignment)
    reads: tuple[str, ...] = ()
    #: the handler only computes (no I/O): the runtime's fast path (a task per partition batch) fits it
    compute_only: bool = False
    #: larger input records are poison; None: the runtime's default
    max_record_bytes: int | None = None
    #: its dead letters are replayed to a topic of its own (replay_topics) that only it reads, each copy
    #: handled as if read where it first arrived (its x-original-* headers, as a retry tier's copy): for a
    #: service whose inputs other services consume too, which a replay to the original topic would reach
    private_replay: bool = False
    #: applied to the retry, dead-letter and replay topic names (see renamed)
    rename: Callable[[str], str] = _same

    @property
    def tiers(self) -> int:
        return len(self.retry_delays_seconds)

    @property
    def retry_topics(self) -> tuple[str, ...]:
        return tuple(self.rename(t.retry_topic(self.service, i + 1)) for i in range(self.tiers))

    @property
    def dead_letter_topic(self) -> str:
        return self.rename(t.dead_letter_topic(self.service))

    @property
    def replay_topics(self) -> tuple[str, ...]:
        """Its private replay topic (private_replay), or none: its dead letters go back to their original topics."""
        return (self.rename(t.replay_topic(self.service)),) if self.private_replay else ()

    @property
    def group_id(self) -> str:
        return f"postcall-{self.service}"

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(s.topic for s in self.consumes)

    @property
    def output_topics(self) -> tuple[str, ...]:
        return tuple(o.stream.topic for o in self.produces)

    def topics(self) -> list[str]:
        """Every topic the route touches: inputs, outputs, retry tiers, its dead-letter and replay topics."""
        hops = [*self.retry_topics, self.dead_letter_topic, *self.replay_topics]
        return list(dict.fromkeys([*self.input_topics, *self.output_topics, *hops]))

    @functools.cached_property
    def outputs_by_model(self) -> Mapping[type, Output]:
        return {o.stream.model: o for o in self.produces}

    @functools.cached_property
    def streams_by_topic(self) -> Mapping[str, Stream[Any]]:
        return {s.topic: s for s in self.consumes}

    def output_for(self, event: object) -> Output | None:
        return self.outputs_by_model.get(type(event))

    def renamed(self, rename: Callable[[str], str], *, service: str | None = None) -> Route:
        """The same route on other topic names (and optionally another service name): tests and
        benchmarks run a real service's route on topics of their own."""
        return dataclasses.replace(
            self,
            service=service or self.service,
            consumes=tuple(s.renamed(rename) for s in self.consumes),
            produces=tuple(dataclasses.replace(o, stream=o.stream.renamed(rename)) for o in self.produces),
            reads=tuple(rename(name) for name in self.reads),
            rename=rename,
        )

    def consuming(self, *topics: str) -> Route:
        """The same route consuming only these of its input topics (a test feeding one action type)."""
        unknown = set(topics) - set(self.input_topics)
        if unknown:
            raise ValueError(f"{self.service} does not consume {sorted(unknown)}")
        return dataclasses.replace(self, consumes=tuple(s for s in self.consumes if s.topic in topics))

    def check(self, retry_delays_seconds: Sequence[float], jitter: float = 0.0) -> None:
        """Start-up checks: refuse a configuration the route cannot carry out (raises ValueError)."""
        if len(retry_delays_seconds) > self.tiers:
            # a tier without a topic would leave a failed record with nowhere to go
            raise ValueError(
                f"{self.service}: {len(retry_delays_seconds)} retry delays configured "
                f"({list(retry_delays_seconds)}) but its route declares {self.tiers} retry tiers"
            )
        too_long = [d for d in retry_delays_seconds if d * (1 + jitter) * 1000 >= RETRY_RETENTION_MS]
        if too_long:
            # the tier's topic would delete the copy before it is due: the record would be skipped, never retried
            raise ValueError(
                f"{self.service}: retry delays {too_long} (with {jitter:.0%} jitter) reach the retry topics' "
                f"retention of {RETRY_RETENTION_MS // t.DAY_MS} days: a copy would be deleted before it is due"
            )
        models = [o.stream.model for o in self.produces]
        if len(set(models)) != len(models):
            raise ValueError(f"{self.service}: two outputs for one model; each event class has one destination")
        if len(set(self.input_topics)) != len(self.input_topics):
            raise ValueError(f"{self.service}: a topic is consumed twice")

    def runtime_defaults(self) -> dict[str, Any]:
        """The runtime settings this route implies (environment variables override them)."""
        return {
            "retry_delays_seconds": list(self.retry_delays_seconds),
            "ordering": self.ordering,
            "max_in_flight": self.max_in_flight,
            "retry_after_cap_seconds": self.retry_after_cap_seconds,
            "fast_path": self.compute_only,
        } | ({} if self.max_record_bytes is None else {"max_record_bytes": self.max_record_bytes})


EXTRACTOR = Route(
    "extractor",
    "Fills each agent's extraction spec from the conversation (LLM or heuristic).",
    consumes=(t.CONVERSATIONS_ENDED,),
    produces=(Output(t.CONVERSATIONS_EXTRACTED),),
    retry_delays_seconds=(5.0, 60.0, 600.0, 3600.0),
    max_in_flight=64,
    # one header from the LLM endpoint must not pause extraction for a day (the circuit's cool-down still applies)
    retry_after_cap_seconds=300.0,
    forwards_headers=(h.REEXTRACT_OF, h.REDELIVER),
)

ROUTER = Route(
    "router",
    "Evaluates the agent's flows; one decision trace and one command per fired action.",
    consumes=(t.CONVERSATIONS_EXTRACTED,),
    produces=(Output(t.DECISION_TRACES), *(Output(s) for s in t.ACTION_STREAMS.values())),
    # a configuration file being fixed is the usual reason to retry
    retry_delays_seconds=(5.0, 60.0, 600.0),
    # the router only computes: a record in flight only waits for its outputs' acks, and the producer sends one
    # batch per partition per request, so the window must hold a few full batches (256 KB each) per partition.
    # A window turns over once per produce round trip or two: at 1024 (1 KB records, 3 partitions) requests
    # went out a third full (295 per 100,000 records, against 147 for a bare loop) and a loaded broker's round
    # trip bounded the rate; at 2048, 179 requests and ~1 us less CPU per record (bench/runtime.py, 2026-12-05)
    max_in_flight=2048,
    compute_only=True,
)

DISPATCHER = Route(
    "dispatcher",
    "Performs each action once and records its outcome (the ledger).",
    consumes=tuple(t.ACTION_STREAMS.values()),
    # on the action's own partition number: the ledger of a partition is read by its owner only
    produces=(Output(t.ACTION_RESULT_STREAM, partition="input"),),
    # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (the Standard Webhooks / Svix schedule)
    retry_delays_seconds=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0),
    # a conversation's actions are independent side effects: in key order a slow destination would
    # hold back the same conversation's actions to fast ones
    ordering="unordered",
    max_in_flight=1024,
    reads=(t.ACTION_RESULTS, t.DESTINATION_STATE),
)

RECORDER = Route(
    "recorder",
    "Keeps every conversation, extraction, decision trace, action (payload, tasks, team alerts), action "
    "attempt and dead letter in SQL.",
    consumes=(
        t.CONVERSATIONS_ENDED,
        t.CONVERSATIONS_EXTRACTED,
        t.DECISION_TRACES,
        # every action record as the router produced it: the rendered payload, the tasks and team alerts
        *t.ACTION_STREAMS.values(),
        t.ACTION_RESULT_STREAM,
        # raw: a dead letter is stored whatever its value holds, its context read from its headers
        *(Stream.plain(r.dead_letter_topic, bytes) for r in (EXTRACTOR, ROUTER, DISPATCHER)),
        Stream.plain(t.dead_letter_topic("recorder"), bytes),
        # a failed action's next attempt: when its copy in the dispatcher's retry tier is due
        *(Stream.plain(name, bytes) for name in DISPATCHER.retry_topics),
    ),
    produces=(),
    # a store outage pauses consumption (DependencyUnavailable) and retries in place; a record the store
    # refuses is dead-lettered at once: no retry tiers
    retry_delays_seconds=(),
    # it shares every input: replayed to its original topic, a conversation would be extracted again, and
    # another service's dead letter listed as pending again; only the recorder needs it
    private_replay=True,
    # rows are keyed by ids and offsets and summaries recomputed from what is stored: order does not matter,
    # and records in flight together are written in one transaction (group commit)
    ordering="unordered",
    max_in_flight=2000,
    # a dead letter is as large as the record that failed (4 MB is poison elsewhere): take all a topic holds
    max_record_bytes=t.MAX_MESSAGE_BYTES,
)

ROUTES: tuple[Route, ...] = (EXTRACTOR, ROUTER, DISPATCHER, RECORDER)
SERVICES: tuple[str, ...] = tuple(r.service for r in ROUTES)


def route_of(service: str) -> Route:
    for route in ROUTES:
        if route.service == service:
            return route
    raise KeyError(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")


def registry() -> list[Topic]:
    """Every topic: the main streams, then each service's retry tiers, dead-letter and replay topics."""
    p = t.default_partitions()
    topics = []
    for stream in t.STREAMS:
        producers = [r.service for r in ROUTES if stream.topic in r.output_topics]
        consumers = [r.service for r in ROUTES if stream.topic in (*r.input_topics, *r.reads)]
        topics.append(
            Topic(
                stream.topic,
                stream.description,
                stream.partitions or p,
                stream.retention_ms,
                stream.cleanup_policy,
                producers=(*stream.external_producers, *producers),
                consumers=(*dict.fromkeys([*consumers, *stream.external_consumers]),),
            )
        )
    for route in ROUTES:
        own = (route.service,)
        for tier, name in enumerate(route.retry_topics, start=1):
            topics.append(
                Topic(
                    name,
                    f"{route.service} retry tier {tier} (delay topic).",
                    p,
                    RETRY_RETENTION_MS,
                    producers=own,
                    consumers=(*own, *(r for r in _readers(name) if r != route.service)),
                )
            )
        topics.append(
            Topic(
                route.dead_letter_topic,
                f"{route.service} dead letters, with their reason in headers.",
                p,
                30 * t.DAY_MS,
                producers=own,
                consumers=("postcall dlq", *_readers(route.dead_letter_topic)),
            )
        )
        topics.extend(
            Topic(
                name,
                f"{route.service} dead letters replayed to it alone, each handled as if read from its original "
                "topic (x-original-*).",
                p,
                RETRY_RETENTION_MS,
                producers=REPLAYERS,
                consumers=own,
            )
            for name in route.replay_topics
        )
    return topics


#: who replays dead letters: the command line, and the query API (the console's redrive)
REPLAYERS = ("postcall dlq", "query API")


def _readers(topic: str) -> tuple[str, ...]:
    """Services consuming a retry or dead-letter topic as an input (the recorder reads them all)."""
    return tuple(r.service for r in ROUTES if topic in r.input_topics)


def by_name() -> dict[str, Topic]:
    return {topic.name: topic for topic in registry()}
