"""A service's store at its start (the recorder, the API): waited for while it cannot be reached yet.

A rollout or a restart during a database outage (PostgreSQL restarting, a failover, a network policy being
applied) exited 2 at start ("cannot migrate the store at ...") and crash-looped with the kubelet's back-off
(up to five minutes between tries) long after the database answered again. A PostgreSQL store that cannot
be reached or used for now (services.store.db.unreachable: a connection refused or timed out, a name that
does not resolve, a server starting up or shutting down, too many connections, a read-only standby) is
tried again after 1 s, then twice as long each time up to 30 s, one log line a try. Meanwhile the
service's port answers /healthz ok (alive: a restart would not help), /readyz 503 saying what it waits
for, /metrics, and anything else 503. Every other problem is refused at once as before, one line and
exit 2 (services.store.db.StoreError): a URL that is not one, a driver this version cannot use or a
parameter it refuses, a password or database the server refuses, a schema too old (migrate_on_start off)
or too new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator

from services.common.observability import HealthServer
from services.store.db import Store, StoreUnavailable
from services.store.settings import DatabaseSettings

log = logging.getLogger("postcall.store")
FIRST_WAIT_SECONDS = 1.0
MOST_WAIT_SECONDS = 30.0
NOT_READY = "503 Service Unavailable"


class StoppedWaiting(Exception):
    """Raised when SIGTERM or SIGINT arrives while the service waits for its store: nothing started, exit 0."""


@contextlib.asynccontextmanager
async def opened(settings: DatabaseSettings, *, host: str, port: int, writer: bool = False) -> AsyncIterator[Store]:
    """`Store.open(settings)`, waiting while the store cannot be reached yet, with `host:port` (the service's
    own port, 0: none) answering probes until it can; the port is free again before the store is yielded."""
    waiting = _Waiting(host, port)
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(Store.open(settings, writer=writer, wait=waiting))
        finally:
            await waiting.end()
        if waiting.stopped:  # during the last try, which then succeeded: the stop still stands
            raise StoppedWaiting
        yield store


class _Waiting:
    """Store.open's `wait`: the stand-in server and signal handlers from the first try that fails, a pause
    growing to MOST_WAIT_SECONDS between tries; `end()` when the store answered, or waiting stopped."""

    def __init__(self, host: str, port: int) -> None:
        self.server = _StandIn(host, port, self) if port else None
        self.tries = 0
        self.since = 0.0
        self._stopping = asyncio.Event()

    async def __call__(self, exc: StoreUnavailable) -> None:
        if self.tries == 0:
            await self._begin()
        self.tries += 1
        pause = min(FIRST_WAIT_SECONDS * 2 ** (self.tries - 1), MOST_WAIT_SECONDS)
        # the reason names the store by its URL without the password (db.safe_url)
        log.warning("waiting for the store", extra={"reason": str(exc), "tries": self.tries, "retry_in_seconds": pause})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._stopping.wait()
        if self.stopped:
            raise StoppedWaiting

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    async def _begin(self) -> None:
        self.since = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        if self.server is not None:
            await self.server.start()

    def _stop(self) -> None:
        """A stop while waiting (a rollout replaced the pod, Ctrl-C) ends the pause at once; a try under way
        ends first (a refused connection at once; one that times out, within asyncpg's 60 s or the pod's
        grace period)."""
        self._stopping.set()

    async def end(self) -> None:
        if self.tries == 0:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if self.server is not None:
            await self.server.stop()
        if not self.stopped:
            log.info("the store answers, starting", extra={"waited_seconds": round(self.waited(), 1)})

    def waited(self) -> float:
        return time.monotonic() - self.since

    def describe(self) -> str:
        """What /readyz says. Not the URL nor the driver's error (an address, a user name): the API's port may
        be reachable from outside the cluster; the log line says which store and why."""
        return (
            f"not ready: waiting for the store, which cannot be reached yet ({self.tries} tries in "
            f"{self.waited():.0f} s; the log's 'waiting for the store' lines say why)\n"
        )


class _StandIn(HealthServer):
    """The service's port while it waits: alive, not ready, nothing else served yet."""

    def __init__(self, host: str, port: int, waiting: _Waiting) -> None:
        super().__init__(host, port, ready=lambda: False, alive=lambda: True)
        self.waiting = waiting

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path in ("/healthz", "/metrics"):
            return super()._respond(path)
        if path == "/readyz":
            return NOT_READY, "text/plain; charset=utf-8", self.waiting.describe().encode()
        return NOT_READY, "text/plain; charset=utf-8", b"waiting for the store\n"
