"""The local broker's helpers that need no broker."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.devkit import kafka
from services.devkit.kafka import _cluster_id, kafka_version

ROOT = Path(__file__).resolve().parents[2]


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
    assert kafka.fetch() == kafka.libs_dir() and kafka.libs_dir().is_relative_to(tmp_path / kafka_version())
    assert len(commands) == 1 and "--strict-checksums" in commands[0]


def test_a_free_port_is_never_one_an_outgoing_connection_can_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port() bound port 0, so it answered from the ephemeral range, where any outgoing connection on the
    machine gets its local port: between the choice and the broker's bind seconds later, a connection could
    take the port and the broker (or a service, a test server) failed with "Address already in use"."""
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [kafka.free_port() for _ in range(200)]
    assert not [p for p in ports if low <= p <= high]
    for port in ports[:20]:  # and each is free to bind
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    try:  # a port something holds is never answered: the next pick is
        held = taken.getsockname()[1]
        picks = iter([held - kafka.LOWEST_PORT, held - kafka.LOWEST_PORT])
        randbelow = kafka.secrets.randbelow
        monkeypatch.setattr(kafka, "_ephemeral_low", lambda: 65536)
        monkeypatch.setattr(kafka.secrets, "randbelow", lambda n: next(picks, None) or randbelow(n))
        assert kafka.free_port() not in (held, 0)
        assert next(picks, None) is None, "the held port was not tried (twice) before another"
    finally:
        taken.close()


def test_two_processes_are_never_handed_the_same_port_before_a_server_binds_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two pytest-xdist workers (`make test`) each picked a random free port; when both picked the same one
    before either server bound it, the second server failed with "Address already in use" (seen: an ingress
    in tests/integration/test_metrics_names.py). Now the ports handed out lately are shared on the machine."""
    monkeypatch.setattr(kafka, "PORTS_HANDED", tmp_path / "handed")
    monkeypatch.setattr(kafka, "_ephemeral_low", lambda: kafka.LOWEST_PORT + 200)  # room for 200 ports
    script = (
        "import json, sys; from pathlib import Path; from services.devkit import kafka; "
        f"kafka.PORTS_HANDED = Path({str(tmp_path / 'handed')!r}); "
        f"kafka._ephemeral_low = lambda: kafka.LOWEST_PORT + 200; "
        "print(json.dumps([kafka.free_port() for _ in range(60)]))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    mine = [kafka.free_port() for _ in range(60)]  # none is bound: each stays free to pick again
    theirs = json.loads(other.stdout)
    assert len(set(mine) | set(theirs)) == 120, "a port was handed to two processes"


def test_the_broker_jars_are_fetched_again_when_the_pom_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The cache folder is named by the Kafka version only: a pom that bumped log4j (or added a jar) and kept the
    Kafka version went on running the jars of the old pom in every clone that had fetched them."""
    fetched: list[list[str]] = []

    def run(cmd: list[str], **_: object) -> None:
        fetched.append(cmd)
        Path(next(a for a in cmd if a.startswith("-DoutputDirectory=")).split("=", 1)[1]).mkdir(parents=True)

    pom = tmp_path / "pom.xml"
    pom.write_text(kafka.POM.read_text())
    monkeypatch.setattr(kafka, "POM", pom)
    monkeypatch.setattr(kafka, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(kafka.shutil, "which", lambda _: "/usr/bin/mvn")
    monkeypatch.setattr(kafka.subprocess, "run", run)
    before = kafka.fetch()
    assert kafka.fetch() == before and len(fetched) == 1, "the cached jars are used while the pom is the same"
    pom.write_text(pom.read_text().replace("<log4j.version>", "<log4j.version>9"))
    after = kafka.fetch()
    assert len(fetched) == 2, "a changed pom is fetched again"
    assert after != before and (before / ".complete").exists(), "into its own folder, the old one kept"


def test_the_kernels_port_is_shared_too_when_there_is_no_room_below_its_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no room below the ephemeral range free_port() fell back to binding port 0 and recorded nothing, so
    another process could be handed the same port before a server bound it."""
    monkeypatch.setattr(kafka, "PORTS_HANDED", tmp_path / "handed")
    monkeypatch.setattr(kafka, "_ephemeral_low", lambda: kafka.LOWEST_PORT)
    port = kafka.free_port()
    with kafka._ports_handed() as handed:
        assert port in handed


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_the_shared_ports_file_is_never_followed_to_another_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, link: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """/tmp/postcall-ports-handed-<uid> is in a folder every local user writes: one could make it first as a
    link to a file of the developer's, which free_port() then truncated and wrote ports into."""
    precious = tmp_path / "precious"
    precious.write_text("a file of the developer's\n")
    handed = tmp_path / "handed"
    handed.symlink_to(precious) if link == "symbolic" else handed.hardlink_to(precious)
    _shared_file(monkeypatch, handed)
    port = kafka.free_port()
    assert precious.read_text() == "a file of the developer's\n"
    assert port in kafka._HANDED_HERE, "this process's own ports are still never handed twice"
    kafka.free_port()
    assert capsys.readouterr().err.count(f"{handed} ") == 1, "said once why ports are not shared"


def _shared_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setattr(kafka, "PORTS_HANDED", path)
    monkeypatch.setattr(kafka, "_ephemeral_low", lambda: kafka.LOWEST_PORT + 200)  # room for 200 ports
    monkeypatch.setattr(kafka, "_HANDED_HERE", {})
    kafka._not_ours.cache_clear()


def test_the_shared_ports_file_of_another_user_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another user's file would let them choose which ports are never handed out (all of them)."""
    handed = tmp_path / "handed"
    handed.write_text("".join(f"{p} 9e99\n" for p in range(kafka.LOWEST_PORT, kafka.LOWEST_PORT + 200)))
    _shared_file(monkeypatch, handed)
    uid = os.getuid()
    monkeypatch.setattr(kafka.os, "getuid", lambda: uid + 1)
    assert kafka.LOWEST_PORT <= kafka.free_port() < kafka.LOWEST_PORT + 200


def test_the_shared_ports_file_is_the_users_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _shared_file(monkeypatch, tmp_path / "handed")
    port = kafka.free_port()
    assert stat.S_IMODE((tmp_path / "handed").stat().st_mode) == 0o600
    (tmp_path / "handed").chmod(0o644)  # as an earlier version made it
    kafka.free_port()
    assert stat.S_IMODE((tmp_path / "handed").stat().st_mode) == 0o600
    assert str(port) in (tmp_path / "handed").read_text()
