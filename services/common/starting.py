"""A dependency a service needs at its start, waited for while it cannot be reached yet: Kafka for every
consumer service (`kafka_reachable`, from runtime.serve and the dispatcher's start), the store for the
recorder and the API (services.store.starting).

A service started while its dependency was down (a broker restarting, a failover, a network policy being
applied, the whole cluster coming back after an outage) crashed at once, with a traceback for Kafka, and
crash-looped with the kubelet's back-off (up to five minutes between tries) long after the dependency
answered again. Now a try that finds it unreachable is followed by another after 1 s, then twice as long
each time up to 30 s, one log line a try with the reason. Meanwhile the service's own port answers
/healthz ok (alive: a restart would not help), /readyz 503 saying what it waits for, /metrics, and anything
else 503; SIGTERM or SIGINT ends the wait (StoppedWaiting: nothing started, exit 0). What waiting cannot fix
is refused at once by the caller, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.common.observability import HealthServer
from services.common.settings import KafkaSettings

log = logging.getLogger("postcall.starting")
FIRST_WAIT_SECONDS = 1.0
MOST_WAIT_SECONDS = 30.0
NOT_READY = "503 Service Unavailable"
KAFKA_TRY_SECONDS = 10.0  # one bootstrap try: a broker that takes the connection and never answers


class StoppedWaiting(Exception):
    """Raised when SIGTERM or SIGINT arrives while the service waits for a dependency: nothing started, exit 0."""


class Waiting:
    """Called once per failed try with its reason: the stand-in server (the service's port, 0: none) and
    signal handlers from the first one, then a pause growing to MOST_WAIT_SECONDS (StoppedWaiting when a
    stop comes); `end()` once the dependency answered or waiting stopped. `what` names the dependency on
    /readyz; `waiting_line` and `answered_line` are the log lines (the runbooks quote them)."""

    def __init__(self, what: str, host: str, port: int, *, waiting_line: str, answered_line: str) -> None:
        self.what, self.waiting_line, self.answered_line = what, waiting_line, answered_line
        self.server = _StandIn(host, port, self) if port else None
        self.tries = 0
        self.since = 0.0
        self._stopping = asyncio.Event()

    async def __call__(self, reason: object) -> None:
        if self.tries == 0:
            await self._begin()
        self.tries += 1
        pause = min(FIRST_WAIT_SECONDS * 2 ** (self.tries - 1), MOST_WAIT_SECONDS)
        log.warning(self.waiting_line, extra={"reason": str(reason), "tries": self.tries, "retry_in_seconds": pause})
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
        ends first (a refused connection at once, one that times out within its own bound)."""
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
            log.info(self.answered_line, extra={"waited_seconds": round(self.waited(), 1)})

    def waited(self) -> float:
        return time.monotonic() - self.since

    def describe(self) -> str:
        """What /readyz says. Not an address nor a driver's error: the port may be reachable from outside the
        cluster; the log line says which and why."""
        return (
            f"not ready: waiting for {self.what}, which cannot be reached yet ({self.tries} tries in "
            f"{self.waited():.0f} s; the log's '{self.waiting_line}' lines say why)\n"
        )


class _StandIn(HealthServer):
    """The service's port while it waits: alive, not ready, nothing else served yet."""

    def __init__(self, host: str, port: int, waiting: Waiting) -> None:
        super().__init__(host, port, ready=lambda: False, alive=lambda: True)
        self.waiting = waiting

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path in ("/healthz", "/metrics"):
            return super()._respond(path)
        if path == "/readyz":
            return NOT_READY, "text/plain; charset=utf-8", self.waiting.describe().encode()
        return NOT_READY, "text/plain; charset=utf-8", f"waiting for {self.waiting.what}\n".encode()


async def kafka_reachable(kafka: KafkaSettings, *, host: str, port: int) -> None:
    """Return once a broker of `kafka.bootstrap_servers` answers a metadata request; until then wait (above),
    with `host:port` (the service's metrics port, 0: none) answering probes. aiokafka's bootstrap reports a
    broker that refuses the credentials or the certificate as one it could not connect to (its own log line
    says which): those are waited for too, the reason in every try's line."""
    waiting = Waiting("Kafka", host, port, waiting_line="waiting for Kafka", answered_line="Kafka answers, starting")
    try:
        while True:
            try:
                await _bootstrap(kafka)
                break
            except (KafkaConnectionError, OSError, TimeoutError) as exc:
                # aiokafka's own lines say why each broker did not answer; the addresses hold no secret
                await waiting(f"no broker of {kafka.bootstrap_servers} answered ({type(exc).__name__})")
    finally:
        await waiting.end()
    if waiting.stopped:  # during the last try, which then succeeded: the stop still stands
        raise StoppedWaiting


async def kafka_or_stop(kafka: KafkaSettings, *, host: str, port: int) -> bool:
    """`kafka_reachable`: True once Kafka answers, False when the service was stopped while it waited."""
    try:
        await kafka_reachable(kafka, host=host, port=port)
    except StoppedWaiting:
        log.info("stopped while waiting for Kafka")
        return False
    return True


async def _bootstrap(kafka: KafkaSettings) -> None:
    client = AIOKafkaClient(**kafka.client_options(), client_id=f"{kafka.client_id}-start")
    try:
        async with asyncio.timeout(KAFKA_TRY_SECONDS):
            await client.bootstrap()
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()
