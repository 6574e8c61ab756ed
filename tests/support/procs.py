"""Start and stop service processes for tests (kill -9, SIGTERM), with their logs kept for failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def term(self, timeout: float = 60) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)


def start(module: str, env: dict[str, str]) -> Proc:
    log = Path(tempfile.mkstemp(prefix=f"{module.replace('.', '-')}-", suffix=".log")[1])
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    handle = log.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", module], env=full_env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT
    )
    return Proc(popen, log)
