"""A test session ended by SIGTERM stops the servers it started (tests/support/sigterm.py).

Proven on a pytest subprocess with the plugin and a session fixture standing in for the broker: SIGTERM
arrives while a test runs, a second one while the fixture tears down (as `make test` killed with its
process group forwards it), and the teardown must still finish. Without the plugin the process died at
once and the teardown never ran, which is how killed sessions left a broker and PostgreSQL behind; with
its first version the second SIGTERM killed it mid-teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SESSION = """
import time
from pathlib import Path
import pytest

HERE = Path(__file__).parent

@pytest.fixture(scope="session")
def server():
    yield
    (HERE / "stopping").write_text("")
    time.sleep(1)  # a teardown takes time (stopping a broker): a second SIGTERM arrives meanwhile
    (HERE / "stopped").write_text("torn down")

def test_long(server):
    (HERE / "running").write_text("")
    time.sleep(60)
"""


def test_sigterm_tears_the_session_down(tmp_path: Path) -> None:
    (tmp_path / "test_long.py").write_text(SESSION)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plugin = ["-p", "tests.support.sigterm"]
    args = ["-q", "-p", "no:cacheprovider", "--noconftest", *plugin, "--rootdir", str(tmp_path), "test_long.py"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "running").exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        while not (tmp_path / "stopping").exists() and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # make, killed with its process group, forwards SIGTERM to pytest again
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "stopped").read_text() == "torn down", out
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out


def test_the_suite_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("tests.support.sigterm")
