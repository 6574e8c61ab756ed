"""The local broker's helpers that need no broker."""

from __future__ import annotations

from services.devkit.kafka import _cluster_id, kafka_version


def test_cluster_ids_never_start_with_a_dash_the_storage_tool_would_read_as_an_option() -> None:
    ids = [_cluster_id() for _ in range(5000)]
    assert all(i[0].isalnum() and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_broker_version_is_pinned_in_the_pom() -> None:
    major, minor, _patch = kafka_version().split(".")
    assert int(major) >= 4 and minor.isdigit()
