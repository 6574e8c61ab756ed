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

`CoalescingHttpToolsProtocol` also bounds what a client can hold, which uvicorn's httptools protocol does not:
a request's line and headers over `MAX_HEAD_BYTES` are answered 431 and the connection closed (httptools keeps
every header byte it is given: one endless header grew the process by hundreds of MB; a read that would take a
head past the limit is parsed only as far as the limit, so a head that ends later in the same read is refused
too); a request whose head and body have not all arrived `read_timeout` seconds after the connection or its
first byte is answered 408 and closed (uvicorn times out only the idle wait between requests: a connection
that sends nothing, or trickles its head or body, was held for ever), with one timer per connection, re-armed
when it fires, not one per request; a client that reads nothing of the answers written to it for as long (the
transport past its high-water mark, or closed with bytes still to write) is disconnected (without a timeout it
held the connection for good), while one that reads a large answer slowly is not cut off; and a client that
sends more than `MAX_PIPELINED` requests ahead of their answers has its connection closed (uvicorn queues
every pipelined request it parses, and reads on).

An app may also serve some requests on the protocol itself, without ASGI: if it has a
`direct_route(method, path)` that answers a `DirectRoute` (and a path parameter) for a request (the same
for the same method and path: its answer is kept per method and URL, for every connection), that
request is a `DirectRequest`, not an ASGI scope, a RequestResponseCycle with its asyncio.Event and a Task
reading the body through `receive()`: the route is told when the request's turn comes, is given each
piece of the body as httptools parses it, and, once the body is whole, is run in one Task; it writes its
answer's bytes itself (`DirectRequest.answer`). uvicorn's per-request Python was about 15% of the
ingress's instructions per webhook; served so, a webhook takes 8% fewer (whole process under
bench/ingress.py's load). Everything else is uvicorn's: keep-alive and `Connection: close`, the order of
pipelined answers (direct and ASGI requests mixed), Expect: 100-continue, the bounds above, the default
headers (date), the client address its ProxyHeadersMiddleware would give (X-Forwarded-For from a
trusted peer), the 500 of a route that fails, the graceful shutdown (an unanswered request is answered,
then its connection closed).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import typing
import urllib.parse
import weakref
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware, _TrustedHosts
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("postcall.http")
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; the vendors' are under 2 KiB
MAX_PIPELINED = 16  # requests read ahead of the one being answered; webhook senders send one at a time
MAX_ROUTES = 1024  # request lines whose direct_route answer is kept, per app (emptied when full)
#: a longer URL's answer is not kept (asked every time): a URL is the caller's and may fill MAX_HEAD_BYTES,
#: a webhook's is /webhooks/<platform>/<endpoint> after a root path (an endpoint's name: 63 characters at most)
MAX_ROUTE_URL_BYTES = 1024

Route = tuple["DirectRoute", str]
#: What an app's direct_route answered, by (method, URL) as received, for every connection to it: a webhook
#: sender posts to the same URL every time, and reading the path from the URL and asking the app cost ~10,000
#: instructions per request (a tenth of the protocol's work for a webhook)
_ROUTES: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, bytes], Route | None]] = weakref.WeakKeyDictionary()

#: The oldest uvicorn this module is proven on (pyproject's floor): it subclasses uvicorn's httptools protocol
#: and calls its internals. `_start_asgi_task` came in 0.45; before 0.53 uvicorn's own answers to HTTP/1.0 and
#: on keep-alive differ from what the tests hold (tests/unit/common/test_serving.py, test_served.py).
UVICORN_FLOOR = (0, 53)


def uvicorn_refused(version: str) -> str | None:
    """Why this module cannot serve on uvicorn `version`, or None."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None  # a development build: not judged
    if found < UVICORN_FLOOR:
        floor = ".".join(map(str, UVICORN_FLOOR))
        return f"services.common.serving needs uvicorn >= {floor} (it subclasses its HTTP protocol); found {version}"
    return None


if _refused := uvicorn_refused(uvicorn.__version__):
    raise ImportError(_refused)


class CoalescingTransport(asyncio.Transport):
    """A transport that writes what it was given during one loop step with one write to `transport`."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._written = 0  # bytes given to `transport` (`sent`)

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
            self._written += len(data)
            self._transport.write(data)

    def write_now(self, data: bytes) -> None:
        """Write `data` at once, after what is held: an answer written whole has nothing to wait for."""
        if self._held:
            self.write(data)
            self.flush()
        elif not self._transport.is_closing():
            self._written += len(data)
            self._transport.write(data)

    def sent(self) -> int:
        """How many bytes `transport` has passed on to the socket: it stays the same while the peer reads none."""
        return self._written - self._transport.get_write_buffer_size()

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


class DirectRoute(typing.Protocol):
    """A route an app serves on the protocol itself (module docstring). Its methods are called in this
    order for one request; the route answers it once, with `DirectRequest.answer`, in any of them."""

    def begin(self, request: DirectRequest) -> None:
        """The request's turn (every request before it on its connection is answered): answer now, or
        wait for the body."""

    def receive(self, request: DirectRequest, chunk: bytes) -> None:
        """The next piece of the body, while it is unanswered."""

    async def serve(self, request: DirectRequest) -> None:
        """The body is whole and the request unanswered: answer it (the request's one Task)."""

    def lost(self, request: DirectRequest) -> None:
        """The connection closed after `begin` before the body was whole (answered or not)."""


class DirectRequest:
    """One request a `DirectRoute` serves: what uvicorn's RequestResponseCycle is to an ASGI request (the
    protocol reads `response_started`, `response_complete` and `keep_alive` of either). `chunks`, `size`,
    `since` and `target` are the route's."""

    __slots__ = (
        "begun",
        "chunks",
        "client",
        "disconnected",
        "headers",
        "keep_alive",
        "more_body",
        "param",
        "pending",
        "protocol",
        "response_complete",
        "response_started",
        "route",
        "since",
        "size",
        "target",
        "task",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        protocol: CoalescingHttpToolsProtocol,
        route: DirectRoute,
        param: str,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        keep_alive: bool,
        expect_100_continue: bool,
    ) -> None:
        self.protocol, self.route, self.param = protocol, route, param
        self.headers = headers  # lower-case names, as in an ASGI scope
        self.client = client  # the peer, or the address a trusted proxy forwarded (as ProxyHeadersMiddleware)
        self.keep_alive, self.waiting_for_100_continue = keep_alive, expect_100_continue
        self.begun = self.response_started = self.response_complete = self.disconnected = False
        self.more_body = True  # until httptools has parsed the whole body
        self.pending: list[bytes] | None = None  # body read before the request's turn
        self.chunks: list[bytes] = []
        self.size = 0
        self.since = 0.0
        self.target: Any = None
        self.task: asyncio.Task[None] | None = None  # the one running `serve`

    def begin(self) -> None:
        self.begun = True
        try:
            self.route.begin(self)
            if self.response_complete:
                return
            if self.waiting_for_100_continue and not self.protocol.transport.is_closing():
                self.protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as uvicorn's first receive()
                self.waiting_for_100_continue = False
            pending, self.pending = self.pending, None
            for chunk in pending or ():
                if self.response_complete:
                    return
                self.route.receive(self, chunk)
        except Exception as exc:
            self._failed(exc)
            return
        if not self.more_body and not self.response_complete:
            self._serve()

    def received(self, chunk: bytes) -> None:
        """A piece of the body (httptools' on_body)."""
        if not self.begun:
            if self.pending is None:
                self.pending = []
            self.pending.append(chunk)  # the connection's reading is paused until this request's turn
            return
        try:
            self.route.receive(self, chunk)
        except Exception as exc:
            self._failed(exc)

    def completed(self) -> None:
        """The body is whole (httptools' on_message_complete)."""
        self.more_body = False
        if self.begun and not self.response_complete:
            self._serve()

    def lost(self) -> None:
        """The connection closed while this was its latest request."""
        if not self.response_complete:
            self.disconnected = True  # nobody to answer: `answer` writes nothing
        if self.begun and self.more_body:
            self.route.lost(self)

    def answer(self, status: int, head: bytes, content: bytes) -> None:
        """Write the answer: the status line, the server's default headers (date), `head` (header lines,
        each ending in CRLF; `connection: close` is added when the connection is not kept alive),
        `content`; then the connection goes on to its next request, or is closed."""
        if self.response_started:
            raise RuntimeError("a direct request answered twice")
        self.response_started = self.response_complete = True
        self.waiting_for_100_continue = False
        if self.disconnected:
            return
        protocol = self.protocol
        parts = [STATUS_LINE[status]]
        for name, value in protocol.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(head)
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", content)
        protocol.transport.write_now(b"".join(parts))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
        if protocol.flow.write_paused:
            # the peer reads no answers: read no more requests until it does (uvicorn's send() awaits the
            # drain before answering, and the next request waits for that answer)
            protocol.flow.pause_reading()

    def _serve(self) -> None:
        protocol = self.protocol
        if protocol.config.reset_contextvars:
            task = protocol.loop.create_task(self._run(), context=contextvars.Context())
        else:
            task = protocol.loop.create_task(self._run())
        self.task = task
        protocol.tasks.add(task)  # the graceful shutdown waits for it

    async def _run(self) -> None:
        try:
            await self.route.serve(self)
        except BaseException as exc:
            self._failed(exc)
        else:
            if not self.response_started and not self.disconnected:
                self._failed(RuntimeError("the direct route returned without answering"))
        finally:
            # here rather than in a done callback (uvicorn's), one loop callback less per request; a task
            # cancelled before it ran is left in the set, which the shutdown that cancelled it no longer reads
            self.protocol.tasks.discard(self.task)

    def _failed(self, exc: BaseException) -> None:
        """uvicorn's run_asgi on an app that raised: logged, answered 500 and closed."""
        self.protocol.logger.error("Exception in ASGI application\n", exc_info=exc)
        if self.response_started:
            self.protocol.transport.close()
            return
        self.keep_alive = False
        self.answer(500, b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n", b"Internal Server Error")


def forwarded_client(
    trusted: _TrustedHosts, client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int] | None:
    """The client of a request from `client`, a peer `trusted` holds: what uvicorn's ProxyHeadersMiddleware
    puts in the scope (the first address not trusted in X-Forwarded-For, read from the end)."""
    forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
    if forwarded:
        host, port = trusted.get_trusted_client_address(b", ".join(forwarded).decode("latin1"))
        if host:
            return host, port
    return client


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescingTransport` (uvicorn.Config(http=...)), with a bound
    on a request's head and on the time its head and body take to arrive (module docstring)."""

    read_timeout = 30.0  # seconds; `with_read_timeout` sets it from the settings
    _reading_since: float | None = None  # loop time the request being read began (or the connection)
    _head_bytes: int | None = None  # bytes received while reading a head; None once it is complete
    _read_timer: asyncio.TimerHandle | None = None  # the connection's one timer: read timeout and keep-alive
    _idle_since: float | None = None  # loop time an answer left the connection waiting for its next request
    _stalled_since: float | None = None  # writing paused, or a close waiting to write: since when the peer read nothing
    _stalled_sent = 0  # the transport's `sent()` then

    _forwarded = False  # the peer is a proxy uvicorn trusts: X-Forwarded-For names the client
    cycle: Any  # uvicorn's RequestResponseCycle, or a DirectRequest (which has what uvicorn reads of one)
    transport: CoalescingTransport  # connection_made wraps the server's

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app, self._trusted = self.app, None
        if isinstance(app, ProxyHeadersMiddleware):
            self._trusted = app.trusted_hosts
            app = app.app
        # with a concurrency limit (uvicorn's 503) or a root path of uvicorn's own, every request is ASGI
        direct = (
            getattr(app, "direct_route", None) if not config.root_path and config.limit_concurrency is None else None
        )
        self._direct: typing.Callable[[str, str], Route | None] | None = direct
        self._routes = _ROUTES.setdefault(app, {}) if direct is not None else {}

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[CoalescingHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))
        self._reading_since, self._head_bytes = self.loop.time(), 0
        self._read_timer = self.loop.call_later(min(self.read_timeout, self.timeout_keep_alive), self._check_read)
        self._forwarded = self._trusted is not None and (self.client[0] if self.client else None) in self._trusted

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            self.cycle = None  # uvicorn's connection_lost is for its own cycle
            cycle.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._idle_since is not None:  # what arrives ends the keep-alive wait, as uvicorn's cancelled timer did
            self._idle_since = None
            if self._reading_since is None:
                # and is the next request's first byte, even when it begins no message (httptools skips a
                # CRLF before a request line): else CRLFs sent once answered held the connection for good
                self._reading_since = self.loop.time()
        while self._head_bytes is not None and self._head_bytes + len(data) > MAX_HEAD_BYTES:
            # parsed only as far as the head may go: a head whose end comes later (in this read too, where it
            # would be complete once parsed, and served) is over the limit
            room = MAX_HEAD_BYTES - self._head_bytes
            self._head_bytes = MAX_HEAD_BYTES  # None once the head ends, 0 once its request is whole
            if room:
                super().data_received(data[:room])
            if self.transport.is_closing():
                return
            if self._head_bytes == MAX_HEAD_BYTES:
                self._refuse(431, "headers_too_large", f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
                return
            data = data[room:]
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        if self._direct is None:
            super().on_message_begin()
        else:  # uvicorn's, but the ASGI scope is made once the request is known not to be direct (_scope)
            self.url, self.expect_100_continue, self.headers = b"", False, []
        self._idle_since = None  # a request begins (in the bytes that completed one answered early, too)
        if self._reading_since is None:  # the first request's time counts from the connection
            self._reading_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self.transport.is_closing():  # closed while the rest of what was read is parsed: no more requests
            return
        if self._direct is None:
            super().on_headers_complete()
        elif not self._begin_direct():
            self.scope = self._scope()
            super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED:
            # each request read ahead waits with its scope and headers, and uvicorn reads on: a connection
            # pipelining 200,000 small requests grew the process by 430 MB. No answer is written: it would be
            # read as the answer to the first request still unanswered.
            self._close("too_many_pipelined", f"over {MAX_PIPELINED} requests sent ahead of their answers")

    def _scope(self) -> Any:
        """The ASGI scope uvicorn's on_message_begin makes (test_serving.py compares the two)."""
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def _begin_direct(self) -> bool:
        """Make the request just parsed a DirectRequest and begin it (or queue it behind the requests before
        it), if the app's direct_route takes it; else False. Its path is read as uvicorn reads it."""
        parser = self.parser
        if parser.should_upgrade():
            return False
        line, routes = (parser.get_method(), self.url), self._routes
        if line in routes:
            found = routes[line]
        else:
            path = httptools.parse_url(self.url).path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            assert self._direct is not None
            found = self._direct(line[0].decode("ascii"), path)
            if len(line[1]) <= MAX_ROUTE_URL_BYTES:
                if len(routes) >= MAX_ROUTES:
                    routes.clear()
                routes[line] = found
        if found is None:
            return False
        headers, client = self.headers, self.client
        if self._forwarded:
            assert self._trusted is not None
            client = forwarded_client(self._trusted, client, headers)
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        request = DirectRequest(self, *found, headers, client, keep_alive, self.expect_100_continue)
        existing, self.cycle = self.cycle, request
        if existing is None or existing.response_complete:
            request.begin()
        else:  # pipelined: its turn comes when the answer before it is written (on_response_complete)
            self.flow.pause_reading()
            self.pipeline.appendleft((request, None))  # type: ignore[arg-type]
        return True

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if type(cycle) is DirectRequest:
            cycle.begin()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            if cycle.more_body and not cycle.response_complete:  # else a body answered early: dropped
                cycle.received(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_since, self._head_bytes = None, 0  # what comes next is the next request's head
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            if cycle.more_body:
                cycle.completed()
        else:
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

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled_since is None:
            self._stalled_since, self._stalled_sent = self.loop.time(), self.transport.sent()

    def resume_writing(self) -> None:
        self._stalled_since = None
        super().resume_writing()
        # reading paused by DirectRequest.answer while the peer read nothing: read on, also when the direct
        # request whose turn came meanwhile still waits for its body (nothing else would read it, and the
        # read timeout does not count this side's pause); a pipelined request waiting keeps it paused
        if type(self.cycle) is DirectRequest and not self.pipeline:
            self.flow.resume_reading()

    def _check_read(self) -> None:
        now, since, idle, stalled = self.loop.time(), self._reading_since, self._idle_since, self._stalled_since
        if stalled is not None and now - stalled >= self.read_timeout:
            sent = self.transport.sent()
            if sent == self._stalled_sent:
                # the peer has read nothing of the answers written to it for as long as a request may take to
                # arrive: aborted, since a close would wait for those bytes to be written
                self._close("write_timeout", f"the client read no answer for {self.read_timeout:g} s", abort=True)
                return
            # it reads, if slowly (a large answer over a slow link): timed again from now, not cut off
            stalled = self._stalled_since = now
            self._stalled_sent = sent
        if not self.transport.is_closing():
            if idle is not None and now - idle >= self.timeout_keep_alive:
                self.timeout_keep_alive_handler()  # uvicorn's: the connection is closed
            # reading paused by this side (a pipelined request waiting for the answer before it) is not the
            # client's delay
            elif since is not None and now - since >= self.read_timeout and not self.flow.read_paused:
                self._refuse(408, "request_timeout", f"the request did not arrive within {self.read_timeout:g} s")
        if self.transport.is_closing():  # closed (now or before): timed until what it holds is written
            self._time_the_close(now)
            return
        # never further ahead than either limit, so that a wait that begins before the timer fires (an
        # answer, then nothing) is still seen at its own end, where the timer is set next
        wait = min(self.read_timeout, self.timeout_keep_alive)
        if since is not None:
            left = since + self.read_timeout - now
            wait = min(wait, left if left > 0 else 1.0)
        if idle is not None:
            wait = min(wait, idle + self.timeout_keep_alive - now)
        if stalled is not None:
            wait = min(wait, stalled + self.read_timeout - now)
        self._read_timer = self.loop.call_later(wait, self._check_read)

    def _time_the_close(self, now: float) -> None:
        """A closed connection ends once its transport has written what it holds: a peer that reads none of it
        (an answer it left unread, then the keep-alive wait's end) held it for good. Timed as a stall."""
        if self.transport.get_write_buffer_size():
            if self._stalled_since is None:
                self._stalled_since, self._stalled_sent = now, self.transport.sent()
            self._read_timer = self.loop.call_later(self._stalled_since + self.read_timeout - now, self._check_read)

    def _close(self, error: str, message: str, status: int | None = None, abort: bool = False) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        extra = {"client": client, "detail": message} | ({"status": status} if status else {})
        log.warning(f"request refused: {error}", extra=extra)
        if abort:
            self.transport.abort()
        else:
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
