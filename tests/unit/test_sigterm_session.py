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
import os
import time
from pathlib import Path
import pytest

HERE = Path(__file__).parent

@pytest.fixture(scope="session")
def server():
    yield
    (HERE / "stopping").write_text("")
    time.sleep({teardown})  # a teardown takes time (stopping a broker): a second SIGTERM arrives meanwhile
    (HERE / f"stopped-{{os.getpid()}}").write_text("torn down")

@pytest.mark.parametrize("n", range({tests}))
def test_long(server, n):
    (HERE / f"running-{{n}}").write_text("")
    time.sleep(60)
"""


@pytest.mark.parametrize(
    ("workers", "teardown"),
    [
        (0, 1.0),
        # xdist's controller ends its workers 5 s into its own stop (execnet's SIGINT): a teardown of 7 s
        # is cut short unless the controller waits for it; and a SIGTERM to the controller alone used to
        # reach no worker at all
        (2, 7.0),
    ],
    ids=["one-process", "xdist-workers"],
)
def test_sigterm_tears_the_session_down(tmp_path: Path, workers: int, teardown: float) -> None:
    tests = max(workers, 1)
    (tmp_path / "test_long.py").write_text(SESSION.format(teardown=teardown, tests=tests))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)  # this suite may itself run in a worker
    plugin = ["-p", "tests.support.sigterm"]
    parallel = ["-n", str(workers), "--dist", "load"] if workers else ["-p", "no:xdist"]
    args = ["-q", "-p", "no:cacheprovider", "--noconftest", *plugin, *parallel, "--rootdir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "test_long.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("running-*"))) < tests:
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the tests never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # to pytest alone, as `timeout` and `kill` send it
        while not (tmp_path / "stopping").exists() and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # make, killed with its process group, forwards SIGTERM to pytest again
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = [path.read_text() for path in tmp_path.glob("stopped-*")]
    assert stopped == ["torn down"] * tests, out  # each process that ran a test tore its session down
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert not _processes_in(tmp_path), "a worker outlived the session"


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is `folder` (the session's workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == folder:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_the_suite_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("tests.support.sigterm")
