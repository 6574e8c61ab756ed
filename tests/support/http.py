"""A real HTTP server on 127.0.0.1, in a thread, for tests that need one answering their own way."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serves `handler` on a free port until the block ends; yields the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def answers(url: str, status: int) -> bool:
    """Whether a GET of `url` answers `status` now (False while nothing listens there)."""
    try:
        return httpx.get(url, timeout=5).status_code == status
    except httpx.TransportError:
        return False
