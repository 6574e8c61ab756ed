"""`make demo` as a user runs it: its own broker, the services, the ingress, the query API, the sink, the
examples (published to Kafka, and one per vendor format sent as signed HTTP through the ingress); exit 0
once every expected action arrived and the store, asked through the API, has every example."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.devkit.demo import EXPECTED
from services.devkit.kafka import ROOT, free_port


def test_make_demo_delivers_every_expected_action_and_exits_0() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.devkit.demo",
            "once",
            "--kafka-port",
            str(free_port()),
            "--ingress-port",
            str(free_port()),
            "--api-port",
            str(free_port()),
            "--timeout",
            "150",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    expected = sum(len(v) for k, v in json.loads(EXPECTED.read_text()).items() if not k.startswith("_"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"demo: {expected}/{expected} expected actions arrived" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    # the recorder kept each example with its extraction, decisions and delivery attempts: the API says so
    conversations = len([k for k in json.loads(EXPECTED.read_text()) if not k.startswith("_")])
    stored = f"store: {conversations}/{conversations} conversations with their extraction, decisions and delivery"
    assert stored in done.stdout, done.stdout[-3000:]
    assert re.search(r"^api +http://127\.0\.0\.1:\d+/api/v1/conversations", done.stdout, re.M)
    assert re.search(r"^ingress http://127\.0\.0\.1:\d+  POST /webhooks/<vapi\|retell", done.stdout, re.M)
    # what operator commands need to be pointed at this broker and this store (their defaults differ)
    partitions = r"^kafka .* created with POSTCALL_TOPIC_PARTITIONS=3: set it for postcall topics create\)$"
    assert re.search(partitions, done.stdout, re.M), done.stdout[:1000]
    store = re.search(r"^store   (sqlite\+aiosqlite:///\S+/store\.db)  \(POSTCALL_DATABASE__URL", done.stdout, re.M)
    assert store, done.stdout[-3000:]
    made = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "api", "token", "create", "ci"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "POSTCALL_DATABASE__URL": store[1]},
    )
    assert made.returncode == 0 and made.stderr.endswith(f"stored in {store[1]}\n"), made.stderr
    for platform in ("vapi", "retell", "elevenlabs"):  # real HTTP -> ingress -> Kafka -> three services -> sink
        assert re.search(rf"^webhook {platform} +-> 200 published$", done.stdout, re.M), done.stdout[-3000:]


def test_ctrl_c_while_the_broker_starts_leaves_no_broker_running(tmp_path: Path) -> None:
    """The broker runs in its own session (Ctrl-C must reach only the driver), and it was started in a thread:
    a Ctrl-C before it was ready cancelled the demo, nobody stopped the broker, and it ran on (holding 9092)
    until the next run's reap_orphans()."""
    # Ctrl-C as a terminal delivers it: a shell without job control starts background jobs (a CI runner,
    # `make test &`) with SIGINT ignored, which every child inherits; the demo would never see the signal
    ctrl_c_default = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    ctrl_c_default += "runpy.run_module('services.devkit.demo', run_name='__main__')"
    demo = subprocess.Popen(
        [sys.executable, "-c", ctrl_c_default, "run", "--kafka-port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_files := list(tmp_path.glob("postcall-kafka-*/node-1/broker.pid"))):
            assert demo.poll() is None and time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.05)
        broker = int(pid_files[0].read_text())
        demo.send_signal(signal.SIGINT)
        output = demo.communicate(timeout=90)[0].decode()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _running(broker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(broker), output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
