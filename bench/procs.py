"""Benchmark subprocesses (service instances, the faust worker): the tests' process helper, reused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import ROOT, Proc, start

__all__ = ["ROOT", "Proc", "start_process"]


def start_process(module: str, env: dict[str, str], args: Sequence[str], work_dir: Path) -> Proc:
    return start(module, env, args, work_dir)
