"""`postcall topics create` on the real broker, as an operator runs it: idempotent, and a topic the cluster
refuses to create is named, never reported created."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from typer.testing import CliRunner

from schemas.topics import DAY_MS, Topic
from services.cli import topics as cli
from services.common.kafka import TopicsRefused, ensure_topics
from services.common.settings import KafkaSettings


def declared(tag: str) -> list[Topic]:
    return [
        Topic(f"t-{tag}.main.v1", "main", 3, 7 * DAY_MS),
        Topic(f"t-{tag}.retry-6.v1", "a retry tier whose delay is 10 h", 3, 7 * DAY_MS),
        Topic(f"t-{tag}.results.v1", "compacted", 3, 30 * DAY_MS, "compact,delete"),
    ]


def create(kafka: KafkaSettings, topics: list[Topic], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(cli, "registry", lambda: topics)
    result = CliRunner().invoke(cli.app, ["create", "-b", kafka.bootstrap_servers, "--replication", "1"])
    return result.exit_code, result.output


def test_a_rerun_over_topics_as_declared_is_idempotent_and_quiet(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = declared(uuid.uuid4().hex[:8])
    code, out = create(kafka, topics, monkeypatch)
    assert code == 0, out
    assert out.count("created  ") == 3
    code, out = create(kafka, topics, monkeypatch)
    assert code == 0, out
    assert out.splitlines() == ["0 created, 3 already existed"]


def test_a_topic_the_cluster_refuses_is_named_not_reported_created(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's create_topics raises nothing: the refusal is in its response. It was counted as created,
    and the services then refused to start on a topic `topics create` said it had made."""
    tag = uuid.uuid4().hex[:8]
    good = Topic(f"t-{tag}.good.v1", "", 3, 7 * DAY_MS)
    # a policy or a managed cluster's limits refuse a config the same way (INVALID_CONFIG)
    bad = Topic(f"t-{tag}.bad.v1", "", 3, 7 * DAY_MS, configs={"max.message.bytes": "-5"})

    code, out = create(kafka, [good, bad], monkeypatch)

    assert code == 1, out
    lines = out.splitlines()
    assert f"created  {good.name}" in lines
    assert not any(line.startswith(f"created  {bad.name}") for line in lines)
    assert any(line.startswith(f"refused  {bad.name}: ") and "max.message.bytes" in line for line in lines), out
    assert "1 created, 1 refused by the cluster" in lines
    with pytest.raises(TopicsRefused) as refused:
        asyncio.run(ensure_topics(kafka, [bad], replication=1))
    assert list(refused.value.refused) == [bad.name]
