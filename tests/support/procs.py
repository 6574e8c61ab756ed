"""Start and stop service processes for tests and benchmarks (kill -9, SIGTERM), logs kept for failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.devkit.children import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def term(self, timeout: float = 60) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Kill if still running (end of a test or benchmark, or after a failure)."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)


def start(module: str, env: dict[str, str], args: Sequence[str] = (), work_dir: Path | None = None) -> Proc:
    """`python -m module *args` with `env` added to this environment; stdout and stderr go to a log file."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{module.replace('.', '-')}-", suffix=".log", dir=work_dir)
    os.close(fd)
    log = Path(name)
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # a killed test session or benchmark leaves none running
        )
    return Proc(popen, log)


def until(check: Callable[[], bool], proc: Proc, what: str, seconds: float = 60) -> None:
    """Wait for `check` while `proc` runs; fail with its output if it ends first or the time runs out."""
    deadline = time.monotonic() + seconds
    while not check():
        assert proc.alive(), f"{what}: the process ended\n{proc.output()}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s\n{proc.output()}"
        time.sleep(0.2)
