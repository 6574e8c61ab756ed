"""bench/ingress.py's HTTP client (wrk with bench/ingress_client.lua) against a counting HTTP server:
every request is sent exactly once (wrk throws away the script's first `request()`, which the script
must not use up) and answered, and a request left unanswered ends the run with an error instead of a
rate computed from nothing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable

import pytest

from bench.ingress import bodies, through_ingress

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (scripts/ensure-tools.sh)")


class CountingServer:
    """HTTP/1.1 keep-alive: reads each request's body, answers 200 (after `delay(body)` s) unless `withhold(body)`."""

    def __init__(
        self, withhold: Callable[[bytes], bool] = lambda _: False, delay: Callable[[bytes], float] = lambda _: 0.0
    ) -> None:
        self.bodies: list[bytes] = []
        self.withhold, self.delay = withhold, delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                length = int(fields[b"content-length"])
                body = await reader.readexactly(length)
                self.bodies.append(body)
                if self.withhold(body):
                    continue  # never answered: the connection waits
                if pause := self.delay(body):
                    await asyncio.sleep(pause)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(server: CountingServer) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def test_every_request_is_sent_once_and_answered() -> None:
    payloads = bodies("wrk-once", 300)
    server = CountingServer()
    async with serving(server) as url:
        rate, p99, answers = await through_ingress([url], payloads, limit_seconds=30)
    assert sorted(server.bodies) == sorted(payloads)
    assert answers == {"200": 300}
    assert rate > 0 and p99 > 0


async def test_replicas_each_get_every_other_request_once_and_the_run_waits_for_both() -> None:
    """Two urls (the bench's replicas): one wrk thread each, every request sent once, to one of them, and
    the rate's clock stops at the last answer of either (one replica held back 1 s)."""
    payloads = bodies("wrk-two", 301)
    first, second = CountingServer(delay=lambda body: 1.0 if body == payloads[-1] else 0.0), CountingServer()
    async with serving(first) as one, serving(second) as two:
        rate, _, answers = await through_ingress([one, two], payloads, limit_seconds=30)
    assert sorted(first.bodies) == sorted(payloads[0::2]) and sorted(second.bodies) == sorted(payloads[1::2])
    assert answers == {"200": 301}
    assert rate < 301  # over a second: the slower replica's last answer ends the clock


async def test_a_request_left_unanswered_ends_the_run_with_an_error() -> None:
    payloads = bodies("wrk-hold", 40)
    server = CountingServer(withhold=lambda body: body == payloads[7])
    async with serving(server) as url:
        with pytest.raises(RuntimeError, match="39 of 40 requests answered in 2 s"):
            await through_ingress([url], payloads, limit_seconds=2)
