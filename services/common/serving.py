"""uvicorn's HTTP protocol (httptools) with one socket write per response instead of two, and bounds on what a
client can hold before any route (or its authentication) sees the request: the ingress and the query API serve with it.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`: two `send()` system calls, and on the receiving side two segments to read.
The webhook answers are small, so those calls were the largest single cost left in the ingress's
py-spy profile under bench/ingress.py's load (~15% of its samples). `CoalescingTransport` holds what is
written during one event-loop step and writes it at the end of that step with one call, in the order it
was written; a close writes what is held first. Once what is held reaches uvicorn's high-water mark
(64 KiB) it is written at once, so that a large or streamed response meets the real transport's
backpressure (pause_writing) as it would without this.

`CoalescingHttpToolsProtocol` also bounds what a client can hold, which uvicorn's httptools protocol
does not: a request's line and headers over `MAX_HEAD_BYTES` are answered 431 and the connection
closed (httptools keeps every header byte it is given: one endless header grew the process by
hundreds of MB); a request whose head and body have not all arrived `read_timeout` seconds after the
connection or its first byte is answered 408 and closed (uvicorn times out only the idle wait between
requests: a connection that sends nothing, or trickles its head or body, was held for ever), with
one timer per connection, re-armed when it fires, not one per request; and a client that sends more
than `MAX_PIPELINED` requests ahead of their answers has its connection closed (uvicorn queues every
pipelined request it parses, and reads on).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("postcall.http")
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; the vendors' are under 2 KiB
MAX_PIPELINED = 16  # requests read ahead of the one being answered; webhook senders send one at a time


class CoalescingTransport(asyncio.Transport):
    """A transport that writes what it was given during one loop step with one write to `transport`."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes >= HIGH_WATER_LIMIT:
            self.flush()  # a large or streamed response: the real transport applies backpressure at once

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        if not self._transport.is_closing():  # the peer went away: nobody to write to
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescingTransport` (uvicorn.Config(http=...)), with a bound
    on a request's head and on the time its head and body take to arrive (module docstring)."""

    read_timeout = 30.0  # seconds; `with_read_timeout` sets it from the settings
    _reading_since: float | None = None  # loop time the request being read began (or the connection)
    _head_bytes: int | None = None  # bytes received while reading a head; None once it is complete
    _read_timer: asyncio.TimerHandle | None = None  # the connection's one timer: read timeout and keep-alive
    _idle_since: float | None = None  # loop time an answer left the connection waiting for its next request

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[CoalescingHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))
        self._reading_since, self._head_bytes = self.loop.time(), 0
        self._read_timer = self.loop.call_later(min(self.read_timeout, self.timeout_keep_alive), self._check_read)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._idle_since is not None:  # what arrives ends the keep-alive wait, as uvicorn's cancelled timer did
            self._idle_since = None
            if self._reading_since is None:
                # and is the next request's first byte, even when it begins no message (httptools skips a
                # CRLF before a request line): else CRLFs sent once answered held the connection for good
                self._reading_since = self.loop.time()
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, "headers_too_large", f"the request line and headers are over {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._idle_since = None  # a request begins (in the bytes that completed one answered early, too)
        if self._reading_since is None:  # the first request's time counts from the connection
            self._reading_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self.transport.is_closing():  # closed while the rest of what was read is parsed: no more requests
            return
        super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED:
            # each request read ahead waits with its scope and headers, and uvicorn reads on: a connection
            # pipelining 200,000 small requests grew the process by 430 MB. No answer is written: it would be
            # read as the answer to the first request still unanswered.
            self._close("too_many_pipelined", f"over {MAX_PIPELINED} requests sent ahead of their answers")

    def on_message_complete(self) -> None:
        self._reading_since, self._head_bytes = None, 0  # what comes next is the next request's head
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.transport.is_closing():
            # answered before its body had all arrived (a 404, a declared size over the limit): the body's
            # bytes ended the keep-alive wait the answer began, and it begins again now (else nothing timed
            # the connection any more: it stayed open for good)
            self._idle_since = self.loop.time()

    def on_response_complete(self) -> None:
        """uvicorn's (0.55), except that the keep-alive wait after an answer is timed by the connection's
        one timer (`_check_read`) instead of a timer that uvicorn makes after every answer and the next
        request cancels: a uvloop timer made and cancelled per request was a few percent of a webhook's
        CPU. The wait ends, and the connection is closed, at the same time as uvicorn's."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = self.loop.time()

    def _check_read(self) -> None:
        now, since, idle = self.loop.time(), self._reading_since, self._idle_since
        if idle is not None and now - idle >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()  # uvicorn's: the connection is closed
            return
        # reading paused by this side (a pipelined request waiting for the answer before it) is not the
        # client's delay
        if since is not None and now - since >= self.read_timeout and not self.flow.read_paused:
            if not self.transport.is_closing():
                self._refuse(408, "request_timeout", f"the request did not arrive within {self.read_timeout:g} s")
            return
        # never further ahead than either limit, so that a wait that begins before the timer fires (an
        # answer, then nothing) is still seen at its own end, where the timer is set next
        wait = min(self.read_timeout, self.timeout_keep_alive)
        if since is not None:
            left = since + self.read_timeout - now
            wait = min(wait, left if left > 0 else 1.0)
        if idle is not None:
            wait = min(wait, idle + self.timeout_keep_alive - now)
        self._read_timer = self.loop.call_later(wait, self._check_read)

    def _close(self, error: str, message: str, status: int | None = None) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        extra = {"client": client, "detail": message} | ({"status": status} if status else {})
        log.warning(f"request refused: {error}", extra=extra)
        self.transport.close()

    def _refuse(self, status: int, error: str, message: str) -> None:
        """Answer (unless an answer to this request was already written) and close the connection."""
        # never written where it would be read as the answer to an earlier request, or after this one's
        cycle = self.cycle
        reading_head = self._head_bytes is not None
        if cycle is None or (cycle.response_complete if reading_head else not cycle.response_started):
            body = orjson.dumps({"error": error, "message": message})
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
            )
        self._close(error, message, status)
