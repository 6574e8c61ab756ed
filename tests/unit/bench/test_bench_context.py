"""bench/context.py's reading helpers against fake clients: a topic the reader's metadata has not seen yet.
No broker."""

from __future__ import annotations

from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.context import BenchContext
from services.common.settings import KafkaSettings


class FakeClient:
    def __init__(self, reader: FakeReader) -> None:
        self.reader = reader

    async def force_metadata_update(self) -> None:
        self.reader.known = set(self.reader.topics)


class FakeReader:
    """A reader whose metadata knows a topic only after a refresh (as for one made by another client)."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics, self.known = topics, set[str]()
        self._client = FakeClient(self)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.topics[topic])) if topic in self.known else None

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 10 for tp in tps}


class FakeAdmin:
    async def list_consumer_group_offsets(self, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
        return {TopicPartition("in", 0): OffsetAndMetadata(7, ""), TopicPartition("in", 2): OffsetAndMetadata(3, "")}


def context(tmp_path: Path) -> BenchContext:
    ctx = BenchContext(KafkaSettings(bootstrap_servers="fake:9092"), tmp_path, tmp_path)
    ctx._reader, ctx._admin = FakeReader({"in": 3}), FakeAdmin()  # type: ignore[assignment]
    return ctx


async def test_committed_offsets_of_a_topic_the_reader_has_not_seen_yet_are_not_lost(tmp_path: Path) -> None:
    """A topic only produced to (a bench's source) is not in the reader's metadata: committed() answered
    {} for it, as if the group had no partitions there, where count() refreshes the metadata first."""
    assert await context(tmp_path).committed("g", "in") == {0: 7, 1: None, 2: 3}


async def test_count_of_a_topic_the_reader_has_not_seen_yet(tmp_path: Path) -> None:
    assert await context(tmp_path).count("in") == 30
