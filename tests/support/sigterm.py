"""SIGTERM ends a test session as Ctrl-C does: pytest stops where it is and tears the session's fixtures
down, so the Kafka broker and the PostgreSQL server it started are stopped.

Without this, a session ended by SIGTERM (CI's time limit, `timeout`, `kill`) died at once and left its
broker and PostgreSQL running for good: both outlive their parent (pg_ctl daemonizes it; the broker's
JVM is reparented to init). Later SIGTERMs are ignored while the session stops: `make test` killed as a
process group forwards the group's SIGTERM to pytest a second time, and that second one used to kill it
in the middle of its teardown. SIGKILL still ends it at once.

A test that runs a service in this process may install its own SIGTERM handler and, when it is done,
leave the default behind (asyncio's remove_signal_handler does), so the handler is put back before
each test.

Under pytest-xdist (`make test` runs two workers, each with its own broker and PostgreSQL) the controller
passes SIGTERM on to its workers and waits until each has torn its session down before it stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import pytest

terminated = False  # set once SIGTERM arrived: the broker fixture skips its schema sweep and just stops
_controller = False  # this process runs no test but hands them to pytest-xdist workers (`make test`: -n 2)
DONE = "POSTCALL_TEST_WORKERS_DONE"  # a folder where each worker leaves its pid once its session is torn down
WORKERS_STOP_SECONDS = 120.0  # each worker stops its own broker and PostgreSQL


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global terminated
    if terminated:
        return  # stopping already: let the teardown finish
    terminated = True
    if _controller:
        _stop_workers()
    raise KeyboardInterrupt("SIGTERM: stopping the test session and its servers")


def _stop_workers() -> None:
    """SIGTERM each worker and wait until each has torn its session down (its broker and PostgreSQL).

    A SIGTERM sent to the controller alone reached no worker, and xdist's controller, once stopping, ends
    its workers within 15 s whatever they are doing (execnet: SIGINT after 5 s, os._exit after 10 more):
    a worker stopping a broker was cut short and left it running."""
    workers = _children()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    done = Path(os.environ[DONE])
    deadline = time.monotonic() + WORKERS_STOP_SECONDS
    while time.monotonic() < deadline and any(_running(pid) and not (done / str(pid)).exists() for pid in workers):
        time.sleep(0.1)


def _children() -> list[int]:
    me = os.getpid()
    found: list[int] = []
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            found += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited: xdist reaps it


def _install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_configure(config: pytest.Config) -> None:
    global _controller
    _controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")
    if _controller:  # the workers, started after this, inherit the folder
        os.environ[DONE] = tempfile.mkdtemp(prefix="postcall-workers-")
    _install()


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") and DONE in os.environ:  # a worker, its session torn down
        (Path(os.environ[DONE]) / str(os.getpid())).write_text("")
    elif _controller:
        shutil.rmtree(os.environ.pop(DONE), ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        _install()
