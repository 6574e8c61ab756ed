"""`python -m services.ingress`: settings -> endpoints file -> producer -> FastAPI app -> uvicorn (uvloop, httptools).

Exit 2 with `file:line: path: problem` when the endpoints file or a secret it names is wrong.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

import uvicorn
from starlette.types import ASGIApp
from uvicorn.loops.auto import auto_loop_factory

from services.common import observability as plog
from services.common.config import ConfigError
from services.common.serving import CoalescingHttpToolsProtocol
from services.common.settings import run_service
from services.ingress import endpoints as endpoints_file
from services.ingress.app import create_app
from services.ingress.publisher import Publisher
from services.ingress.settings import IngressSettings

log = logging.getLogger("services.ingress")


async def main() -> int:
    settings = IngressSettings()  # the endpoints file from the environment (POSTCALL_INGRESS__ENDPOINTS_FILE)
    plog.setup("ingress", settings.log_level, coalesce=True)  # a line per request
    try:
        endpoints = endpoints_file.load(settings.ingress.endpoints_file)
    except ConfigError as exc:
        print(f"ingress: invalid endpoints file:\n{exc}", file=sys.stderr)
        return 2
    publisher = Publisher(
        settings.kafka, settings.ingress.publish_timeout_seconds, max_event_bytes=settings.ingress.max_event_bytes
    )
    config = server_config(settings, create_app(settings, endpoints, publisher))
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler that was there
    # before it: a no-op, so that a drained shutdown exits 0 (what Kubernetes and the tests expect)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # what exists now (modules, the app, pydantic's validators) lives as long as the process: out of the
    # collector's way, so that a full collection walks only the requests' objects (without this one
    # took tens of milliseconds under load, the p99 of bench/ingress.py)
    gc.collect()
    gc.freeze()
    # A young-generation collection walks every object the requests in flight hold (a few thousand at
    # concurrency 32) however few died since the last one: at Python's default of 700 allocations it ran
    # every few requests. 10,000 cut the CPU per webhook by about a tenth in an A/B on one broker (0.297
    # -> 0.263 ms median of 6 rounds of 1,500; 50,000 gave no more); older generations keep their ratios.
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    await uvicorn.Server(config).serve()
    return 0


def server_config(settings: IngressSettings, app: ASGIApp) -> uvicorn.Config:
    """uvicorn's settings for the ingress. With the ingress's app, the webhook requests are served on
    serving.py's protocol itself (IngressApp.direct_route), every other request through the app as ASGI."""
    return uvicorn.Config(
        app,
        # httptools, one socket write per response, a request's head and reading time bounded (serving.py)
        http=CoalescingHttpToolsProtocol.with_read_timeout(settings.ingress.read_timeout_seconds),
        host=settings.ingress.host,
        port=settings.ingress.port,
        log_config=None,  # the JSON root handler set up in main
        access_log=False,  # one JSON line per request comes from the app, with its outcome
        server_header=False,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.ingress.publish_timeout_seconds * 2) + 5,
    )


def start(label: str = "ingress") -> int:
    """Run until stopped on the event loop uvicorn.run would pick (loop="auto": uvloop, which
    uvicorn[standard] installs); a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, IngressSettings, auto_loop_factory())


if __name__ == "__main__":
    sys.exit(start())
