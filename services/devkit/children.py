"""Processes the devkit and the tests start (llama-server, the stack's services, test workers) end with
the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """Linux (a subprocess's preexec_fn): the child gets SIGTERM when the process that started it dies (a
    killed test session leaves no llama-server or service behind). The kernel signals when the starting
    *thread* ends, so start such children from a thread that lives as long as they should (the main one)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
