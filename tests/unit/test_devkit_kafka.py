"""The local broker's helpers that need no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.devkit import kafka
from services.devkit.kafka import _cluster_id, kafka_version


def test_cluster_ids_never_start_with_a_dash_the_storage_tool_would_read_as_an_option() -> None:
    ids = [_cluster_id() for _ in range(5000)]
    assert all(i[0].isalnum() and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_broker_version_is_pinned_in_the_pom() -> None:
    major, minor, _patch = kafka_version().split(".")
    assert int(major) >= 4 and minor.isdigit()


def test_the_broker_jars_are_refused_when_their_checksum_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Maven's default checksum policy is `warn`: a jar whose .sha1 differs is kept, and -q hides the warning."""
    commands: list[list[str]] = []

    def run(cmd: list[str], **_: object) -> None:
        commands.append(cmd)
        Path(next(a for a in cmd if a.startswith("-DoutputDirectory=")).split("=", 1)[1]).mkdir(parents=True)

    monkeypatch.setattr(kafka, "CACHE", tmp_path)
    monkeypatch.setattr(kafka.shutil, "which", lambda _: "/usr/bin/mvn")
    monkeypatch.setattr(kafka.subprocess, "run", run)
    assert kafka.fetch() == tmp_path / kafka_version() / "libs"
    assert len(commands) == 1 and "--strict-checksums" in commands[0]
