"""Service processes a driver started (Stack, tests.support.procs) do not outlive it when it is killed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from schemas.routes import registry
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from services.devkit.kafka import ROOT

DRIVER = """
import os, sys
from pathlib import Path
from services.devkit.stack import Stack
from services.devkit.kafka import free_port
from tests.support import procs
stack = Stack(sys.argv[1], Path(sys.argv[2])).start(services=("router",))
worker = procs.start("http.server", {}, ["--bind", "127.0.0.1", str(free_port())], work_dir=Path(sys.argv[2]))
print(stack.processes[0].popen.pid, worker.pid, flush=True)
os._exit(0)  # killed before it could stop them (SIGKILL, or SIGTERM, which runs no finally)
"""


async def test_services_do_not_outlive_a_killed_driver(kafka: KafkaSettings, tmp_path: Path) -> None:
    """Before: the router (own session) and the worker kept running, reparented to init, after the test session
    or benchmark that started them was killed; the router went on retrying its broker once it was reaped."""
    await ensure_topics(kafka, registry(), replication=1)
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, kafka.bootstrap_servers, str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    pids = [int(p) for p in out.stdout.split()[-2:]]
    try:
        deadline = time.monotonic() + 40
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not [pid for pid in pids if _alive(pid)], "a process outlived the driver that started it"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
