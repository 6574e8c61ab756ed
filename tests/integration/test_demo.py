"""`make demo` as a user runs it: its own broker, the three services, the sink, the examples; exit 0."""

from __future__ import annotations

import json
import subprocess
import sys

from services.devkit.demo import EXPECTED
from services.devkit.kafka import ROOT, free_port


def test_make_demo_delivers_every_expected_action_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.devkit.demo", "once", "--kafka-port", str(free_port()), "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    expected = sum(len(v) for k, v in json.loads(EXPECTED.read_text()).items() if not k.startswith("_"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"demo: {expected}/{expected} expected actions arrived" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
