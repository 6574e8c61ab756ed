"""The local broker does not outlive a killed driver: the next start stops what it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.devkit.kafka import ROOT, KafkaCluster, free_port, reap_orphans

ABANDON = """
import os
from services.devkit.kafka import KafkaCluster
cluster = KafkaCluster().start()
print(cluster.workdir, cluster.nodes[0].process.pid, flush=True)
os._exit(0)  # killed before it could stop its broker
"""


def test_a_broker_left_by_a_killed_driver_is_stopped_at_the_next_start() -> None:
    out = subprocess.run([sys.executable, "-c", ABANDON], capture_output=True, text=True, cwd=ROOT, timeout=120)
    workdir, pid = out.stdout.split()[-2], int(out.stdout.split()[-1])
    assert _alive(pid), "the abandoned broker should still be running before the reap"
    assert pid in reap_orphans()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid) and not Path(workdir).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts a job with `&`


@pytest.mark.parametrize(
    ("signum", "preexec"),
    [(signal.SIGTERM, None), (signal.SIGINT, _ignore_sigint)],
    ids=["sigterm", "sigint-inherited-ignored"],
)
def test_sigterm_or_sigint_to_the_launcher_stops_the_broker(
    signum: signal.Signals, preexec: Callable[[], None] | None
) -> None:
    """`python -m services.devkit.kafka start` died of SIGTERM and left the Java broker running; started in the
    background by a non-interactive shell (SIGINT inherited as ignored) it did nothing on SIGINT."""
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "services.devkit.kafka", "start", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        preexec_fn=preexec,  # only a signal disposition, set before exec
    )
    brokers: list[int] = []
    try:
        assert launcher.stdout is not None
        for line in launcher.stdout:
            if line.startswith("kafka ready"):
                break
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        brokers = [int(pid) for pid in children if "kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert brokers and all(_alive(pid) for pid in brokers)
        launcher.send_signal(signum)
        assert launcher.wait(60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in brokers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in brokers), "the broker outlived its launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        for pid in brokers:  # a launcher that did not stop them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_broker_not_ready_in_time_is_not_left_running() -> None:
    """A start that failed (here: not ready in time) left the broker running in its own session, its folder kept,
    after the test session that asked for it had ended."""
    cluster = KafkaCluster()
    try:
        with pytest.raises(TimeoutError):
            cluster.start(timeout=0.5)
        (node,) = cluster.nodes
        assert node.process is not None
        assert node.process.poll() is not None, "the broker outlived its failed start"
        assert cluster.workdir is not None and not cluster.workdir.exists()
    finally:
        cluster.stop()
