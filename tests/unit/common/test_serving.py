"""One socket write per response (services/common/serving.py): what is written in one loop step goes out
in one write, in order; a close writes what is held first; over a real socket with uvicorn, keep-alive and
`Connection: close` answers arrive whole."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import itertools
import logging
import socket
import textwrap
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.lifespan.on import LifespanOn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import ServerState

from services.common import observability, serving
from services.common.observability import JsonFormatter
from services.common.serving import (
    MAX_HEAD_BYTES,
    MAX_PIPELINED,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
    DirectRequest,
    forwarded_client,
)


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_loop_step_go_out_as_one_write_in_order() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(memoryview(b'{"status":"published"}'))
    assert real.writes == [] and transport.get_write_buffer_size() == 41
    await asyncio.sleep(0)
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"status":"published"}']
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_close_writes_what_is_held_first_and_a_gone_peer_gets_nothing() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"answer")
    transport.close()
    assert real.events == ["write", "close"] and real.writes == [b"answer"]
    gone = RecordingTransport()
    late = CoalescingTransport(gone, asyncio.get_running_loop())
    late.write(b"answer")
    gone.closing = True  # the peer closed before the loop step ended
    await asyncio.sleep(0)
    assert gone.writes == []


class PausingTransport(RecordingTransport):
    """Calls its protocol's pause_writing once over 64 KiB is buffered, as a real transport does."""

    def __init__(self) -> None:
        super().__init__()
        self.paused_after: int | None = None  # bytes written when pause_writing was called

    def write(self, data: Any) -> None:
        super().write(data)
        written = sum(map(len, self.writes))
        if written > 64 * 1024 and self.paused_after is None:
            self.paused_after = written


async def test_a_large_response_meets_backpressure_within_the_loop_step() -> None:
    """A response in many body messages without an await between them (a streamed response over an
    in-memory iterator) reaches the real transport within the same loop step once 64 KiB are held, so
    that its pause_writing comes before the app could write the rest."""
    real = PausingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    chunk = b"x" * 16 * 1024
    for _ in range(3):
        transport.write(chunk)
    assert real.writes == []  # 48 KiB: held for one write
    transport.write(chunk)
    assert [len(w) for w in real.writes] == [64 * 1024]  # at the mark: written now, in this step
    for _ in range(60):
        transport.write(chunk)
    assert real.paused_after == 128 * 1024 and transport.get_write_buffer_size() == 0  # before the step ended
    await asyncio.sleep(0)
    assert sum(map(len, real.writes)) == 64 * 16 * 1024


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    body = scope["path"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


async def test_uvicorn_answers_whole_on_keep_alive_and_on_connection_close() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        received = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closed after /two
        writer.close()
    finally:
        server.should_exit = True
        await serving
    answers = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"/one", b"/two"]
    assert b"connection: close" in answers[1]


@contextlib.asynccontextmanager
async def served(
    protocol: type[asyncio.Protocol], keep_alive: float = 5, application: Any = None
) -> AsyncIterator[int]:
    """`application` (else `app`) on uvicorn with `protocol`, on a free port, for the block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        application or app, http=protocol, log_config=None, lifespan="off", timeout_keep_alive=keep_alive
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await serving


async def send_until_answered(port: int, chunks: Iterable[bytes]) -> tuple[bytes, int]:
    """Send `chunks` on one connection, reading between them (a server that closes with bytes unread
    resets the connection, and the answer would be lost); the answer and the bytes sent before it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer, sent = b"", 0
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            if reader.at_eof() or answer:
                break
            writer.write(chunk)
            sent += len(chunk)
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.01)
            await writer.drain()
        answer += await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer, sent


async def test_a_request_head_over_the_limit_is_answered_431_and_its_connection_closed() -> None:
    """httptools keeps every header byte it is given: one endless header grew the process by hundreds
    of MB. The answer comes once the head passes MAX_HEAD_BYTES, long before 8 MiB are sent."""
    endless = itertools.chain(
        [b"POST /webhooks/vapi/x HTTP/1.1\r\nhost: x\r\nx-pad: "], itertools.repeat(b"a" * 65536, 128)
    )
    async with served(CoalescingHttpToolsProtocol) as port:
        answer, sent = await send_until_answered(port, endless)
    assert answer.startswith(b"HTTP/1.1 431 "), (sent, answer[:200])
    assert b"connection: close" in answer and b'"error":"headers_too_large"' in answer
    assert sent < 4 * 1024 * 1024  # the server stopped reading: the socket buffers took the rest


async def test_a_head_over_the_limit_that_ends_in_the_read_crossing_it_is_refused_too() -> None:
    """The count was checked after each read was parsed: a head whose end came in the read that crossed
    MAX_HEAD_BYTES (a 70,000-byte header sent in one write) was complete by then and served."""

    def request(pad: int) -> bytes:
        return b"GET /big HTTP/1.1\r\nhost: x\r\nx-pad: %s\r\nconnection: close\r\n\r\n" % (b"a" * pad)

    async with served(CoalescingHttpToolsProtocol) as port:
        over, _ = await send_until_answered(port, [request(70_000)])
        under, _ = await send_until_answered(port, [request(60_000)])
    assert over.startswith(b"HTTP/1.1 431 ") and b'"error":"headers_too_large"' in over, over[:200]
    assert under.startswith(b"HTTP/1.1 200 ") and under.endswith(b"/big")


async def test_a_head_is_measured_to_its_own_end_not_to_a_later_blank_line_in_the_read() -> None:
    """bab9251 looked in the read crossing MAX_HEAD_BYTES for the first blank line: a head whose last LF
    began that read (its CR LF CR came before) was measured to a blank line in its body and refused 431,
    and a head after CRLFs (skipped before a request line) was measured to them and served. A head of
    exactly MAX_HEAD_BYTES is served, one byte more refused, in one write or two."""
    body = b"a" * 69_000 + b"\r\n\r\n" + b"b" * 996
    head = b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    base = len(b"GET /edge HTTP/1.1\r\nhost: x\r\nx-pad: \r\nconnection: close\r\n\r\n")

    def request(size: int) -> bytes:
        return b"GET /edge HTTP/1.1\r\nhost: x\r\nx-pad: %s\r\nconnection: close\r\n\r\n" % (b"a" * (size - base))

    async with served(CoalescingHttpToolsProtocol) as port:
        split, _ = await send_until_answered(port, [head[:-1], head[-1:] + body])
        after_crlfs, _ = await send_until_answered(port, [b"\r\n\r\n" + request(70_000)])
        at, _ = await send_until_answered(port, [request(MAX_HEAD_BYTES)])
        over, _ = await send_until_answered(port, [request(MAX_HEAD_BYTES + 1)])
        at_in_two, _ = await send_until_answered(port, [request(MAX_HEAD_BYTES)[:-1], b"\n"])
    assert split.startswith(b"HTTP/1.1 200 ") and split.endswith(b"/body"), split[:200]
    assert after_crlfs.startswith(b"HTTP/1.1 431 "), after_crlfs[:200]
    assert at.startswith(b"HTTP/1.1 200 ") and at_in_two.startswith(b"HTTP/1.1 200 "), (at[:200], at_in_two[:200])
    assert over.startswith(b"HTTP/1.1 431 "), over[:200]


async def test_a_head_of_many_headers_over_the_limit_is_refused_and_one_under_it_answered() -> None:
    def request(count: int) -> Iterator[bytes]:  # 11 bytes a header
        yield b"GET /many HTTP/1.1\r\nhost: x\r\n"
        for start in range(0, count, 1000):
            yield b"".join(b"x-%05d: 1\r\n" % i for i in range(start, min(start + 1000, count)))
        yield b"connection: close\r\n\r\n"

    async with served(CoalescingHttpToolsProtocol) as port:
        under, _ = await send_until_answered(port, request(5_000))
        over, _ = await send_until_answered(port, request(50_000))
    assert under.startswith(b"HTTP/1.1 200 ") and under.endswith(b"/many")
    assert over.startswith(b"HTTP/1.1 431 ")


async def test_the_read_timeout_counts_from_each_requests_first_byte_not_from_the_connection() -> None:
    """A keep-alive connection older than the read timeout is not refused: each request's time counts
    from its own first byte (the wait between requests is uvicorn's keep-alive timeout); a request that
    has not arrived whole in time is answered 408 and closed."""
    async with served(CoalescingHttpToolsProtocol.with_read_timeout(0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for path in (b"/one", b"/two", b"/three"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
            answers.append(await asyncio.wait_for(reader.readuntil(path), 5))
            await asyncio.sleep(0.4)  # 1.2 s in all on one connection
        writer.write(b"GET /late HTTP/1.1\r\nhost: x\r\n")
        late = await asyncio.wait_for(reader.read(), 5)  # to EOF
        writer.close()
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert late.startswith(b"HTTP/1.1 408 ") and b"connection: close" in late


async def pipelined(port: int, requests: list[bytes]) -> list[bytes]:
    """The bodies of the 200 answers to `requests`, written at once on one connection without reading
    between them, until all are answered or the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(requests))
    count = len(requests)
    received = b""
    with contextlib.suppress(ConnectionError):
        while len(received.split(b"HTTP/1.1 200 OK")) <= count:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
    writer.close()
    return [a.rsplit(b"\r\n\r\n", 1)[1] for a in received.split(b"HTTP/1.1 200 OK\r\n")[1:]]


async def test_a_client_pipelining_too_far_ahead_is_closed_and_one_within_the_bound_answered_in_order() -> None:
    """uvicorn queues every pipelined request it parses, and reads on: a connection pipelining 200,000
    small requests without reading the answers grew the process by 430 MB."""

    async def pipeline(count: int) -> list[bytes]:
        return await pipelined(port, [b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(count)])

    async with served(CoalescingHttpToolsProtocol) as port:
        within = await pipeline(MAX_PIPELINED + 1)  # one answered, the others read ahead
        beyond = await pipeline(5_000)
    assert within == [b"/%d" % i for i in range(MAX_PIPELINED + 1)]
    assert len(beyond) <= MAX_PIPELINED + 1, len(beyond)


async def test_an_idle_keep_alive_connection_is_closed_at_the_keep_alive_timeout_and_a_busy_one_kept() -> None:
    """uvicorn's timeout_keep_alive, timed by the connection's one timer: a connection that asks nothing
    more after an answer is closed once the timeout has passed since that answer, not before; one whose
    requests come closer together than that stays open however long it lives."""
    async with served(CoalescingHttpToolsProtocol.with_read_timeout(5), keep_alive=0.6) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/one", b"/two", b"/three", b"/four"):  # 1.2 s in all, each wait under 0.6 s
            await asyncio.sleep(0.3)
            writer.write(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(path), 5)
        answered = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        idle = asyncio.get_running_loop().time() - answered
        writer.close()
    assert 0.55 <= idle < 1.0, idle


async def test_bytes_that_start_no_request_after_an_answer_do_not_hold_the_connection_open() -> None:
    """What arrives after an answer ends the keep-alive wait; httptools skips a CRLF before a request line
    without beginning a message, so a client sending only CRLFs once answered was timed by neither limit:
    the connection stayed open for good (trickled, up to MAX_HEAD_BYTES of them). The read timeout counts
    from those bytes as from any request's first byte."""
    async with served(CoalescingHttpToolsProtocol.with_read_timeout(0.5), keep_alive=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"/one"), 5)
        writer.write(b"\r\n")
        sent = asyncio.get_running_loop().time()
        late = await asyncio.wait_for(reader.read(), 5)  # to EOF (TimeoutError before: still open)
        held = asyncio.get_running_loop().time() - sent
        writer.close()
    assert late.startswith(b"HTTP/1.1 408 ") and b"connection: close" in late
    assert 0.45 <= held < 1.5, held


async def answered_unread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers without reading the body, as the ingress does an unknown endpoint or a declared size over its limit."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})


async def answered_before_its_body(port: int, answer_ends: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose POST /x declared a 4-byte body, answered before any of it was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(answer_ends), 5)
    return reader, writer


async def test_a_request_answered_before_its_body_arrived_is_idle_once_the_body_has() -> None:
    """The answer began the keep-alive wait, and the body arriving after it ended that wait, as any bytes
    do; the request then being read whole, no read timeout ran either: the connection stayed open for good.
    The keep-alive wait begins again once the request answered early has arrived."""
    async with served(
        CoalescingHttpToolsProtocol.with_read_timeout(5), keep_alive=0.3, application=answered_unread
    ) as port:
        reader, writer = await answered_before_its_body(port, b"no")
        await asyncio.sleep(0.1)
        writer.write(b"body")
        sent = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed (TimeoutError before: still open)
        idle = asyncio.get_running_loop().time() - sent
        writer.close()
    assert 0.25 <= idle < 1.0, idle


async def slow_or_unread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/slow: read, then answered after 0.8 s; anything else answered at once, its body unread."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await receive()
        await asyncio.sleep(0.8)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_arriving_with_the_body_of_one_answered_early_is_not_cut_by_the_keep_alive() -> None:
    """The keep-alive wait that begins once a request answered early has arrived ends when the next
    request begins in the same bytes: that request is answered however long it takes."""
    async with served(
        CoalescingHttpToolsProtocol.with_read_timeout(5), keep_alive=0.3, application=slow_or_unread
    ) as port:
        reader, writer = await answered_before_its_body(port, b"ok")
        writer.write(b"bodyGET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        second = await asyncio.wait_for(reader.readuntil(b"ok"), 5)  # IncompleteReadError: closed at 0.3 s
        writer.close()
    assert second.startswith(b"HTTP/1.1 200 ")


def test_the_on_response_complete_overridden_is_uvicorns_own_but_for_the_keep_alive_timer() -> None:
    """CoalescingHttpToolsProtocol.on_response_complete is a copy of uvicorn's (0.55) without its keep-alive
    timer; pyproject.toml does not bound uvicorn from above. Another uvicorn that changed what is done after
    an answer fails here, rather than being skipped by the copy without a word: re-read it, update the copy."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    def code(method: Any) -> str:
        (function,) = ast.parse(textwrap.dedent(inspect.getsource(method))).body
        assert isinstance(function, ast.FunctionDef)
        body = function.body[1:] if ast.get_docstring(function) else function.body
        return "\n".join(ast.unparse(statement) for statement in body)

    timer = (
        "self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)"
    )
    theirs = code(HttpToolsProtocol.on_response_complete)
    assert timer in theirs
    assert theirs.replace(timer, "self._idle_since = self.loop.time()") == code(
        CoalescingHttpToolsProtocol.on_response_complete
    )


class DirectApp:
    """An ASGI app with a direct route for POST /direct (serving.DirectRoute), answering the body back."""

    def __init__(self) -> None:
        self.route = EchoRoute()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    def direct_route(self, method: str, path: str) -> tuple[EchoRoute, str] | None:
        return (self.route, "p") if (method, path) == ("POST", "/direct") else None


class EchoRoute:
    def __init__(self) -> None:
        self.served: list[bytes] = []

    def begin(self, request: DirectRequest) -> None:
        pass

    def receive(self, request: DirectRequest, chunk: bytes) -> None:
        request.chunks.append(chunk)

    async def serve(self, request: DirectRequest) -> None:
        body = b"".join(request.chunks)
        self.served.append(body)
        request.answer(200, b"content-length: %d\r\n" % len(body), body)

    def lost(self, request: DirectRequest) -> None:
        pass


def protocol_of(
    application: Any, transport: asyncio.Transport, config: uvicorn.Config | None = None, state: Any = None
) -> CoalescingHttpToolsProtocol:
    if config is None:
        config = uvicorn.Config(application, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off")
        config.load()
    loop = asyncio.get_running_loop()
    protocol = CoalescingHttpToolsProtocol(config, state or ServerState(), {"k": "v"}, loop)
    protocol.connection_made(transport)
    return protocol


async def test_the_scope_made_once_a_request_is_known_not_to_be_direct_is_uvicorns() -> None:
    """With a direct route, on_message_begin makes no ASGI scope; `_scope` makes it once the request is
    known to go to ASGI: the protocol is then as uvicorn's on_message_begin (0.55) leaves it."""
    config = uvicorn.Config(DirectApp(), http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off")
    config.load()
    state = ServerState()
    ours, theirs = (protocol_of(None, PausableTransport(), config, state) for _ in range(2))
    assert ours._direct is not None
    ours.on_message_begin()
    ours.scope = ours._scope()
    theirs._direct = None  # on_message_begin is then uvicorn's, with this module's own timing of the request
    theirs.on_message_begin()
    theirs._direct = ours._direct
    mine, uvicorns = vars(ours), vars(theirs)
    assert mine.keys() == uvicorns.keys()
    for name in mine:
        if name not in ("transport", "flow", "parser", "_read_timer", "_reading_since"):  # each connection's own
            assert mine[name] == uvicorns[name], name


@pytest.mark.parametrize(
    ("trusted", "forwarded"),
    [
        ("127.0.0.1", []),
        ("127.0.0.1", [b"198.51.100.7"]),
        ("127.0.0.1", [b"198.51.100.7, 127.0.0.1"]),
        ("127.0.0.1,10.0.0.0/8", [b"198.51.100.7, 10.1.2.3"]),
        ("127.0.0.1,10.0.0.0/8", [b"198.51.100.7:4711, 10.1.2.3", b"10.0.0.9"]),
        ("127.0.0.1", [b"[2001:db8::1]:80"]),
        ("127.0.0.1", [b""]),
        ("127.0.0.1", [b" , "]),
        ("*", [b"203.0.113.5, 198.51.100.7"]),
        ("127.0.0.1", [b"10.0.0.1, 127.0.0.1"]),
        ("127.0.0.1", [b"caf\xe9"]),
    ],
)
async def test_the_forwarded_client_is_the_one_uvicorns_proxy_headers_middleware_gives(
    trusted: str, forwarded: list[bytes]
) -> None:
    headers = [(b"host", b"x"), *((b"x-forwarded-for", value) for value in forwarded)]
    scope = {"type": "http", "client": ("127.0.0.1", 5000), "headers": headers}
    seen: list[Any] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["client"])

    middleware = ProxyHeadersMiddleware(inner, trusted_hosts=trusted)  # type: ignore[arg-type]
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert forwarded_client(middleware.trusted_hosts, ("127.0.0.1", 5000), headers) == seen[0]


class PausableTransport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def test_a_peer_that_reads_no_answers_is_read_no_further_until_it_does() -> None:
    """uvicorn's send() awaits the transport's drain before an answer, and the next request waits for that
    answer: a client pipelining without reading held at most the bound. A direct answer is written at once,
    so once the transport is over its high-water mark, reading stops until it is drained."""
    real = PausableTransport()
    application = DirectApp()
    protocol = protocol_of(application, real)
    request = b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi"
    protocol.data_received(request)
    await asyncio.sleep(0.01)
    assert real.writes[-1].endswith(b"\r\n\r\nhi") and real.reading
    protocol.pause_writing()  # the transport's buffer is over its high-water mark
    protocol.data_received(request)
    await asyncio.sleep(0.01)
    assert real.writes[-1].endswith(b"\r\n\r\nhi") and len(real.writes) == 2 and not real.reading
    protocol.resume_writing()
    assert real.reading
    assert application.route.served == [b"hi", b"hi"]


async def test_direct_and_asgi_requests_pipelined_on_one_connection_are_answered_in_order() -> None:
    """A direct request queued behind an ASGI one (and the reverse) waits for its turn; its body read
    meanwhile is given to the route when the turn comes."""
    application = DirectApp()
    burst = b"".join(
        [
            b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n",
            b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nfirst",
            b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n",
            b"POST /direct HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
            b"GET /three HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        ]
    )
    async with served(CoalescingHttpToolsProtocol, application=application) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(burst)
        received = await asyncio.wait_for(reader.read(), 5)  # to EOF: closed after /three
        writer.close()
    answers = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"/one", b"first", b"/two", b"second", b"/three"]
    assert application.route.served == [b"first", b"second"]


async def test_direct_requests_pipelined_too_far_ahead_close_the_connection_as_asgi_ones_do() -> None:
    application = DirectApp()

    async def pipeline(count: int) -> list[bytes]:
        requests = [b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n%04d" % i for i in range(count)]
        return await pipelined(port, requests)

    async with served(CoalescingHttpToolsProtocol, application=application) as port:
        within = await pipeline(MAX_PIPELINED + 1)  # one answered, the others read ahead
        application.route.served.clear()
        beyond = await pipeline(5_000)
    assert within == [b"%04d" % i for i in range(MAX_PIPELINED + 1)]
    assert len(beyond) <= MAX_PIPELINED + 1 and len(application.route.served) <= MAX_PIPELINED + 1


async def test_a_request_begun_while_the_peer_read_no_answers_is_read_on_once_it_does() -> None:
    """Reading stopped because the peer read no answers (the test above) resumes once it reads them, also
    when the request whose turn came meanwhile is still waiting for its body: else nothing read that body
    any more, and the read timeout, which does not count a pause of this side's, never ended the wait."""
    real = PausableTransport()
    application = DirectApp()
    protocol = protocol_of(application, real)
    protocol.pause_writing()  # the peer reads no answers
    second = b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nsecond"
    protocol.data_received(b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nfirst" + second[:-3])
    await asyncio.sleep(0.01)
    assert real.writes[-1].endswith(b"\r\n\r\nfirst") and not real.reading  # the second's turn: its body partly read
    protocol.resume_writing()  # the peer read its answer
    assert real.reading
    protocol.data_received(second[-3:])
    await asyncio.sleep(0.01)
    assert application.route.served == [b"first", b"second"]


def test_pyproject_asks_for_the_uvicorn_this_module_is_proven_on() -> None:
    """pyproject allowed uvicorn 0.34, on which serving.py could not run (`_start_asgi_task` came in 0.45;
    before 0.53 the keep-alive and HTTP/1.0 answers differ from what these tests hold): an install that
    resolved an older uvicorn started an ingress that failed on its first pipelined request."""
    import re
    import tomllib
    from pathlib import Path

    from services.common import serving

    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    [spec] = [d for d in project["dependencies"] if d.startswith("uvicorn")]
    floor = re.search(r">=([0-9.]+)", spec)
    assert floor is not None, spec
    assert tuple(int(p) for p in floor.group(1).split(".")[:2]) == serving.UVICORN_FLOOR
    assert serving.uvicorn_refused("0.52.9") is not None and "found 0.52.9" in str(serving.uvicorn_refused("0.52.9"))
    assert serving.uvicorn_refused("0.53.0") is None and serving.uvicorn_refused("1.0.0") is None


class CountingApp(DirectApp):
    """DirectApp, counting what its direct_route is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def direct_route(self, method: str, path: str) -> tuple[EchoRoute, str] | None:
        self.asked.append((method, path))
        return super().direct_route(method, path)


async def test_an_apps_direct_route_is_asked_once_per_method_and_url_for_every_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its answer is kept per (method, URL as received), shared by the app's connections; a URL of the same
    path spelt otherwise is asked on its own, and the kept answers are bounded (emptied when full)."""
    application = CountingApp()
    first, second = (protocol_of(application, PausableTransport()) for _ in range(2))
    for protocol in (first, second, first):
        protocol.data_received(b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        protocol.data_received(b"POST /dir%65ct?q=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nho")
        protocol.data_received(b"GET /direct HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(0.01)
    assert application.asked == [("POST", "/direct"), ("POST", "/direct"), ("GET", "/direct")]
    assert application.route.served == [b"hi", b"ho"] * 3
    monkeypatch.setattr(serving, "MAX_ROUTES", 2)
    protocol = protocol_of(application, PausableTransport())
    for path in (b"/a", b"/b", b"/c", b"/a"):
        protocol.data_received(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
        await asyncio.sleep(0.01)
    assert application.asked[3:] == [("GET", "/a"), ("GET", "/b"), ("GET", "/c"), ("GET", "/a")]


async def test_a_long_urls_direct_route_answer_is_not_kept() -> None:
    """A URL is the caller's and may be as long as a request's head (MAX_HEAD_BYTES): only a short one's
    answer is kept, so what an app's kept answers hold at MAX_ROUTES stays a few MiB, not that many heads
    (64 MiB, and the path parameter again); a long one is asked every time and served as before."""
    application = CountingApp()
    protocol = protocol_of(application, PausableTransport())
    long = b"/direct?q=" + b"x" * 30_000
    for url in (long, long, b"/direct", b"/direct"):
        protocol.data_received(b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi" % url)
        await asyncio.sleep(0.01)
    assert application.asked == [("POST", "/direct")] * 3
    assert application.route.served == [b"hi"] * 4
    assert list(serving._ROUTES[application]) == [(b"POST", b"/direct")]


LARGE = b"x" * (1024 * 1024)


async def large(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with LARGE in one body, as the API answers a conversation with a long transcript."""
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(LARGE))]})
        await send({"type": "http.response.body", "body": LARGE})


def small_send_buffer(read_timeout: float) -> type[CoalescingHttpToolsProtocol]:
    """The protocol with a 4 KiB socket send buffer: a client that does not read leaves the transport past its
    high-water mark at once (localhost's buffers would take the whole answer)."""

    class Small(CoalescingHttpToolsProtocol.with_read_timeout(read_timeout)):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            super().connection_made(transport)

    return Small


async def small_window_connection(port: int) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
    return client


async def test_a_client_reading_a_large_answer_slowly_but_steadily_is_not_cut_off() -> None:
    """The write timeout is a wait with nothing read, not a bound on the whole answer: 1 MiB read at about
    0.5 MB/s takes 2 s, over the 0.5 s read timeout, with writing paused nearly the whole time. Before, a
    client that took longer than the read timeout to read an answer (the API's conversation with a long
    transcript, over a slow link) was aborted in the middle of it."""
    async with served(small_send_buffer(0.5), application=large) as port:
        loop = asyncio.get_running_loop()
        client = await small_window_connection(port)
        await loop.sock_sendall(client, b"GET /conversation HTTP/1.1\r\nhost: x\r\n\r\n")
        received, began = b"", loop.time()
        with contextlib.suppress(ConnectionError):
            while len(received.partition(b"\r\n\r\n")[2]) < len(LARGE):
                chunk = await asyncio.wait_for(loop.sock_recv(client, 8192), 5)
                if not chunk:
                    break
                received += chunk
                await asyncio.sleep(0.015)
        took = loop.time() - began
        client.close()
    assert took > 1.0, took  # slower than the read timeout, or the test shows nothing
    assert received.endswith(b"\r\n\r\n" + LARGE)


async def test_a_client_that_reads_none_of_an_answer_is_disconnected_though_the_keep_alive_closed_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The keep-alive wait after the answer ends (0.2 s) before the read timeout (0.5 s): uvicorn closes the
    connection, and a close waits for the answer's bytes to be written. Before, the timer stopped there and a
    client that never read held the connection for good."""
    async with served(small_send_buffer(0.5), keep_alive=0.2, application=large) as port:
        loop = asyncio.get_running_loop()
        client = await small_window_connection(port)
        await loop.sock_sendall(client, b"GET /conversation HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(1.5)
        received = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := await asyncio.wait_for(loop.sock_recv(client, 65536), 2):
                received += chunk
        client.close()
    assert [r.getMessage() for r in caplog.records if r.name == "postcall.http"] == ["request refused: write_timeout"]
    assert len(received) < len(LARGE)  # aborted: what was not written is dropped


SECRET_TEXT = "token=sk-live-never-logged"


class FailingRoute(EchoRoute):
    async def serve(self, request: DirectRequest) -> None:
        raise ValueError(f"could not read {SECRET_TEXT}")  # as int(value) or a parser quotes what it was given


class FailingApp(DirectApp):
    """A direct route and an ASGI app that raise with the request's content in the exception's text."""

    def __init__(self) -> None:
        super().__init__()
        self.route = FailingRoute()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await receive()
            raise ValueError(f"could not read {SECRET_TEXT}")


async def test_an_app_failing_on_a_request_is_logged_with_its_traceback_but_not_the_exceptions_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn logs an app's exception with logging's traceback, which ends with the exception's text: an error
    raised on a request's content may quote it (the console's sign-in form carries a token), and the log line
    carries no request. With the filter observability.setup puts on uvicorn's logger, the line keeps the frames
    and the types, on both ways a request is served (an ASGI app, serving.py's direct route)."""
    observability.textless_tracebacks()
    observability.textless_tracebacks()  # twice (setup in a test, then in a service): one filter
    assert sum(isinstance(f, observability.TextlessTracebacks) for f in logging.getLogger("uvicorn.error").filters) == 1
    caplog.set_level(logging.ERROR, "uvicorn.error")
    async with served(CoalescingHttpToolsProtocol, application=FailingApp()) as port:
        asgi = b"GET /asgi HTTP/1.1\r\nhost: x\r\n\r\n"
        direct = b"POST /direct HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi"
        for request in (asgi, direct):
            answer, _ = await send_until_answered(port, [request])
            assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), answer
    failed = [r for r in caplog.records if r.getMessage().startswith("Exception in ASGI application")]
    assert len(failed) == 2
    for record in failed:
        line = orjson.loads(JsonFormatter("api").format(record))  # as the pod writes it
        assert SECRET_TEXT not in str(line) and line["level"] == "error"
        assert line["exc"].startswith("Traceback (most recent call last):\n")
        assert "builtins.ValueError (its text left out)" in line["exc"]
    assert [", in serve\n" in record.exc for record in failed] == [False, True]  # type: ignore[attr-defined]  # ASGI, direct


async def test_an_app_failing_to_start_is_logged_with_the_exceptions_text(caplog: pytest.LogCaptureFixture) -> None:
    """The filter leaves uvicorn's other lines alone: a lifespan failure (the API's start, before any request)
    says what it could not reach, and an SRE needs that text."""

    async def unstartable(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ConnectionRefusedError("cannot reach the store at postgresql://store:5432/postcall")

    observability.textless_tracebacks()
    caplog.set_level(logging.ERROR, "uvicorn.error")
    config = uvicorn.Config(unstartable, log_config=None, lifespan="on")
    config.load()
    lifespan = LifespanOn(config)  # what uvicorn.Server runs before it serves (and then exits with 3)
    await asyncio.wait_for(lifespan.startup(), 10)
    assert lifespan.should_exit
    [failed] = [r for r in caplog.records if r.getMessage().startswith("Exception in 'lifespan' protocol")]
    line = orjson.loads(JsonFormatter("api").format(failed))
    assert line["exc"].endswith("ConnectionRefusedError: cannot reach the store at postgresql://store:5432/postcall")
