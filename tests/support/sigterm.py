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
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

terminated = False  # set once SIGTERM arrived: the broker fixture skips its schema sweep and just stops


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global terminated
    if terminated:
        return  # stopping already: let the teardown finish
    terminated = True
    raise KeyboardInterrupt("SIGTERM: stopping the test session and its servers")


def _install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_configure(config: pytest.Config) -> None:
    _install()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        _install()
