"""`python -m services.api` (or `postcall run api`): settings -> store -> bind check -> uvicorn.

Refuses, with one line and exit code 2, a non-loopback address without authentication configured and a
store it cannot use as configured; waits for one that cannot be reached yet (services.store.starting).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvicorn

from services.api.app import create_app
from services.api.auth import BindRefused, check_bind
from services.api.settings import ApiSettings
from services.common import observability as plog
from services.common.serving import CoalescingHttpToolsProtocol
from services.common.settings import run_service
from services.store import starting
from services.store.db import StoreError

log = logging.getLogger("postcall.api")
#: how long uvicorn waits for the requests in flight once asked to exit, before it cancels them: a replay or
#: re-extraction stops between two records (app.state.stopping), once the record being sent and its replay
#: marker are acknowledged (each within the producer's 30 s request timeout), then settles its letters and
#: completes its audit row. deploy/k8s/base/api.yaml's terminationGracePeriodSeconds is longer.
SHUTDOWN_TIMEOUT_SECONDS = 2 * 30 + 10


async def serve(settings: ApiSettings) -> None:
    async with starting.opened(settings.database, host=settings.api.host, port=settings.api.port) as store:
        await check_bind(store, settings.api.host)
        app = create_app(settings, store=store)
        config = uvicorn.Config(
            app,
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            # a request's head, reading time and pipelining bounded before the token is checked (serving.py)
            http=CoalescingHttpToolsProtocol.with_read_timeout(settings.api.read_timeout_seconds),
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_SECONDS,
        )
        server = uvicorn.Server(config)
        # uvicorn stops gracefully on SIGTERM, then raises the signal again under the handler it found:
        # with this one, a stop is a clean exit 0 (as the consumer services do) rather than death by signal
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        watcher = asyncio.create_task(_follow(server, app.state.stopping))
        try:
            await server.serve()
        finally:
            watcher.cancel()


async def _follow(server: uvicorn.Server, stopping: asyncio.Event) -> None:
    """Say where it listens once it does; set `stopping` once it is asked to exit (SIGTERM, SIGINT), so that
    an operation sending (a replay at 50/s may take minutes) stops within the pod's grace period instead of
    being killed mid-send with its letters claimed and its audit row saying "sending"."""
    await _announce(server)
    while not server.should_exit:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.1)
    stopping.set()


async def _announce(server: uvicorn.Server) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    log.info("listening", extra={"url": f"http://{host}:{port}/api/v1/conversations"})


async def main() -> None:
    settings = ApiSettings()
    plog.setup("api", settings.log_level)
    try:
        await serve(settings)
    except starting.StoppedWaiting:
        log.info("stopped while waiting for the store")
    except (BindRefused, StoreError) as exc:
        print(f"postcall api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def start(label: str = "api") -> int:
    """Run until stopped; a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, ApiSettings)


if __name__ == "__main__":
    sys.exit(start())
