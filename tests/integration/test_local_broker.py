"""The local broker does not outlive a killed driver: the next start stops what it left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from services.devkit.kafka import ROOT, reap_orphans

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
