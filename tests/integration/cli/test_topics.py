"""`postcall topics create` on the real broker, as an operator re-runs it on a cluster whose topics exist:
idempotent, and an existing topic that lacks what the registry declares (created by hand, by an older
version, or by a broker's auto-creation on a first write) is named, not silently counted as existing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner

from schemas.topics import DAY_MS, HOUR_MS, Topic
from services.cli import topics as cli
from services.common.kafka import TopicsRefused, ensure_topics
from services.common.settings import KafkaSettings


def declared(tag: str) -> list[Topic]:
    return [
        Topic(f"t-{tag}.main.v1", "main", 3, 7 * DAY_MS),
        Topic(f"t-{tag}.retry-6.v1", "a retry tier whose delay is 10 h", 3, 7 * DAY_MS),
        Topic(f"t-{tag}.results.v1", "compacted", 3, 30 * DAY_MS, "compact,delete"),
    ]


async def create_as_a_broker_default_would(kafka: KafkaSettings, name: str, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()


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


def test_existing_topics_that_lack_their_declaration_are_named_and_the_command_fails(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    main, retry, results = topics = declared(uuid.uuid4().hex[:8])
    # a first write with auto-creation on: 1 partition and the broker's defaults (1 MB records, delete)
    asyncio.run(create_as_a_broker_default_would(kafka, main.name))
    # by hand, with the retention someone thought enough: a 10 h retry delay outlives its copies
    asyncio.run(create_as_a_broker_default_would(kafka, retry.name, **{**retry.config(), "retention.ms": str(HOUR_MS)}))
    # longer retention and more partitions than declared are no difference
    asyncio.run(ensure_topics(kafka, [Topic(results.name, "", 5, 60 * DAY_MS, "delete,compact")], replication=1))

    code, out = create(kafka, topics, monkeypatch)

    assert code == 1, out
    lines = out.splitlines()
    assert f"differs  {main.name}: 1 partitions (declared 3); max.message.bytes=1048588 (declared 8388608)" in lines
    assert f"differs  {retry.name}: 1 partitions (declared 3); retention.ms=3600000 (declared 604800000)" in lines
    assert not any(results.name in line for line in lines)
    assert "0 created, 3 already existed" in lines
    assert "2 existing topic(s) differ from the registry" in out


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
