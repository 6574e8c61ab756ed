"""The webhooks as the server serves them: on services/common/serving.py's HTTP protocol itself
(IngressApp.direct_route, a DirectRequest per webhook), over real HTTP on a free 127.0.0.1 port, with
`python -m services.ingress`'s uvicorn settings (server_config). Each scenario is also run against the same
app served as plain ASGI (what uvicorn did before), and the two must answer the same bytes (but the date
header), publish the same events, log the same lines and count the same metrics: keep-alive and
`Connection: close`, pipelining (webhooks and other requests mixed), bodies in many packets or chunked,
Expect: 100-continue, the size limit declared or while streaming, the bodies-in-flight budget, a client
gone mid-body, X-Forwarded-For, a route that fails, a drained shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from prometheus_client import REGISTRY

from services.common.observability import JsonFormatter, textless_tracebacks
from services.devkit.webhooks import DEMO_ENDPOINTS, DEMO_SECRETS, example, signed_headers
from services.ingress import endpoints as endpoints_file
from services.ingress.__main__ import server_config
from services.ingress.app import IngressApp, create_app
from services.ingress.settings import IngressHttpSettings, IngressSettings
from tests.unit.ingress.test_app import RecordingPublisher

RETELL = example("retell/phone-voicemail-analyzed.json")


@dataclass
class Served:
    port: int
    app: IngressApp
    publisher: RecordingPublisher
    server: uvicorn.Server
    lines: list[logging.LogRecord] = field(default_factory=list)

    def budget_held(self) -> int:
        return next(iter(self.app.direct_routes.values())).budget.held


class Lines(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def asgi_only(app: IngressApp) -> Callable[..., Awaitable[None]]:
    """The app without its direct_route: every request served as ASGI, as before serving.py's DirectRequest."""

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    return plain


async def refuse_asgi(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a webhook served as ASGI by the server")


@contextlib.asynccontextmanager
async def serving(direct: bool, publisher: RecordingPublisher | None = None, **ingress: Any) -> AsyncIterator[Served]:
    settings = IngressSettings(
        ingress=IngressHttpSettings(endpoints_file=DEMO_ENDPOINTS, max_body_bytes=64 * 1024, **ingress)
    )
    publisher = publisher or RecordingPublisher()
    app = create_app(settings, endpoints_file.load(Path(DEMO_ENDPOINTS), {}), publisher)
    if direct:
        for route in app.webhook_routes.values():
            route.app = refuse_asgi  # the server must not reach a webhook route's ASGI app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(settings, app if direct else asgi_only(app)))
    lines: list[logging.LogRecord] = []
    handler = Lines(lines)
    watched = [logging.getLogger(name) for name in ("services.ingress", "postcall.http", "uvicorn.error")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        yield Served(sock.getsockname()[1], app, publisher, server, lines)
    finally:
        server.should_exit = True
        await task
        for logger, level in zip(watched, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def post(platform: str, body: bytes, *, endpoint: str = "copperline", extra: bytes = b"", chunks: int = 0) -> bytes:
    """A signed POST of `body` (chunked in `chunks` pieces if any, else with its Content-Length)."""
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in signed_headers(platform, body, DEMO_SECRETS[platform]).items())
    line = f"POST /webhooks/{platform}/{endpoint} HTTP/1.1\r\nhost: ingress\r\n".encode()
    if not chunks:
        return line + head + b"content-length: %d\r\n" % len(body) + extra + b"\r\n" + body
    size = -(-len(body) // chunks)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return line + head + b"transfer-encoding: chunked\r\n" + extra + b"\r\n" + framed


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    found = re.search(rb"\r\ncontent-length: (\d+)\r\n", head)
    return head + (await asyncio.wait_for(reader.readexactly(int(found.group(1))), 10) if found else b"")


async def exchange(port: int, pieces: Sequence[bytes], answers: int, pause: float = 0.0) -> list[bytes]:
    """Send `pieces` on one connection (`pause` s apart), read `answers` answers (a 100 Continue is one),
    then what else comes before the server closes or 0.2 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        got = [await read_answer(reader) for _ in range(answers)]
        with contextlib.suppress(TimeoutError, ConnectionError):
            rest = await asyncio.wait_for(reader.read(), 0.2)
            got.append(rest or b"<closed>")
        return got
    finally:
        writer.close()


def undated(answers: list[bytes]) -> list[bytes]:
    return [re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", a) for a in answers]


def requests_counted() -> dict[tuple[str, ...], float]:
    return {
        (s.labels["source"], s.labels["endpoint"], s.labels["outcome"]): s.value
        for metric in REGISTRY.collect()
        if metric.name == "postcall_ingress_requests"
        for s in metric.samples
        if s.name.endswith("_total")
    }


def peer(client: str | None) -> str | None:
    """The test client's port is the system's pick: any port of 127.0.0.1 is the same peer."""
    return re.sub(r"^127\.0\.0\.1:\d+$", "127.0.0.1:*", client) if client else client


def what_was_done(served: Served, before: dict[tuple[str, ...], float]) -> dict[str, Any]:
    after = requests_counted()
    return {
        "published": [(e.event_id, source) for e, source in served.publisher.sent],
        "lines": [
            (r.name, r.getMessage(), peer(r.__dict__.get("client")), r.__dict__.get("status"), r.__dict__.get("detail"))
            for r in served.lines
            if r.name == "services.ingress" and r.getMessage().startswith("webhook ")
        ],
        "counted": {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)},
        "budget_held": served.budget_held(),
    }


Scenario = Callable[[Served], Awaitable[list[list[bytes]]]]


async def both_ways(scenario: Scenario, **ingress: Any) -> tuple[list[list[bytes]], dict[str, Any]]:
    """The scenario's answers and effects with the direct path; asserted equal to those as ASGI."""
    results = []
    for direct in (True, False):
        before = requests_counted()
        async with serving(direct, **ingress) as served:
            answers = [undated(a) for a in await scenario(served)]
            await asyncio.sleep(0.05)  # a route still running after its client left
            results.append((answers, what_was_done(served, before)))
    (direct_answers, direct_done), (asgi_answers, asgi_done) = results
    assert direct_answers == asgi_answers
    assert direct_done == asgi_done
    return direct_answers, direct_done


SIGNED = [
    ("vapi", example("vapi/phone-inbound-with-analysis.json")),
    ("retell", RETELL),
    ("elevenlabs", example("elevenlabs/web-with-analysis.json")),
    ("native", example("../conversations/0004-sales-voicemail.json")),
]


async def test_each_answer_is_the_asgi_paths_bytes_on_one_keep_alive_connection() -> None:
    """Every kind of answer, one request after another on one connection (read between them): published,
    duplicate, ignored, 400, 401, 404, 413 declared, 422, an unknown platform (FastAPI's 404), a `/` at
    the end, an empty body. The connection stays open after each (no `connection: close`)."""
    cases = [post(p, body) for p, body in SIGNED]
    cases += [
        post("retell", RETELL),  # the same event again: duplicate
        post("vapi", example("vapi/status-update.json")),
        post("retell", b'{"event": "call_ended", '),
        post("retell", b'{"x": "\xc3\x28"}'),
        post("vapi", example("vapi/phone-inbound-with-analysis.json")).replace(b"x-signature: ", b"x-signature: 00"),
        post("vapi", b"{}", endpoint="nobody"),
        post("retell", b'{"pad": "' + b"x" * (70 * 1024) + b'"}'),
        post("vapi", b'{"message": {"type": "end-of-call-report"}}'),
        post("retell", b"{}").replace(b"/webhooks/retell/", b"/webhooks/nope/"),
        post("retell", b"[1, 2]").replace(b"/copperline ", b"/copperline/ "),
        post("retell", b""),
    ]

    async def scenario(served: Served) -> list[list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        answers = []
        for request in cases:
            writer.write(request)
            answers.append(await read_answer(reader))  # after a 413 declared, its body is read and dropped
        writer.close()
        return [answers]

    (answers,), done = await both_ways(scenario)
    statuses = [a.split(b" ", 2)[1] for a in answers]
    assert statuses == [b"200"] * 6 + [b"400", b"400", b"401", b"404", b"413", b"422", b"404", b"422", b"400"]
    assert not any(b"connection: close" in a for a in answers)
    assert len(done["published"]) == 4 and done["budget_held"] == 0
    assert all(client == "127.0.0.1:*" for _, _, client, _, _ in done["lines"])


async def test_pipelined_requests_are_answered_in_order_and_other_routes_between_them() -> None:
    """Webhooks and other requests sent at once, without reading between them: each answered in turn."""
    other = b"GET /healthz HTTP/1.1\r\nhost: ingress\r\n\r\n"
    burst = post("retell", RETELL) + other + post("vapi", b"{}", endpoint="nobody") + post("vapi", SIGNED[0][1])

    async def scenario(served: Served) -> list[list[bytes]]:
        return [await exchange(served.port, [burst + other], 5)]

    (answers,), done = await both_ways(scenario)
    assert [a.split(b" ", 2)[1] for a in answers[:5]] == [b"200", b"200", b"404", b"200", b"200"]
    assert answers[1].endswith(b'{"status":"ok"}') and len(done["published"]) == 2


async def test_a_body_in_many_packets_or_chunked_is_the_same_bytes() -> None:
    """A body split over many TCP packets, or chunked (in 40 chunks, and chunked over many packets), is
    verified and mapped on the joined bytes."""
    whole = post("retell", RETELL)
    head, body = whole.split(b"\r\n\r\n", 1)
    native = SIGNED[3][1]

    async def scenario(served: Served) -> list[list[bytes]]:
        pieces = [head + b"\r\n\r\n"] + [body[i : i + 300] for i in range(0, len(body), 300)]
        chunked = post("native", native, chunks=40)
        return [
            await exchange(served.port, pieces, 1, pause=0.01),
            await exchange(served.port, [post("vapi", SIGNED[0][1], chunks=40)], 1),
            await exchange(served.port, [chunked[i : i + 500] for i in range(0, len(chunked), 500)], 1, pause=0.01),
        ]

    answers, done = await both_ways(scenario)
    assert [a[0].split(b" ", 2)[1] for a in answers] == [b"200"] * 3 and len(done["published"]) == 3


async def test_a_body_over_the_limit_while_streaming_is_413_and_the_connection_goes_on() -> None:
    """A chunked body with no declared size is refused once it passes max_body_bytes (64 KiB here), while
    it still streams; the rest of it is read and dropped, and the next request on the connection answered."""
    big = post("retell", b"x" * (200 * 1024), chunks=50)
    head, body = big.split(b"\r\n\r\n", 1)

    async def scenario(served: Served) -> list[list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(head + b"\r\n\r\n" + body[: 80 * 1024])
        early = await read_answer(reader)  # before the rest was sent
        writer.write(body[80 * 1024 :] + post("retell", RETELL))
        after = await read_answer(reader)
        writer.close()
        return [[early, after]]

    ((early, after),), done = await both_ways(scenario)
    assert early.startswith(b"HTTP/1.1 413 ") and b'"error":"payload_too_large"' in early
    assert after.startswith(b"HTTP/1.1 200 ") and done["budget_held"] == 0


async def test_a_client_gone_mid_body_gives_its_body_back_and_nothing_is_answered_or_logged() -> None:
    request = post("retell", RETELL)

    async def scenario(served: Served) -> list[list[bytes]]:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(request[:-500])
        await writer.drain()
        await asyncio.sleep(0.1)
        held = served.budget_held()
        writer.close()
        await asyncio.sleep(0.1)
        assert held > 0 and served.budget_held() == 0, held
        return [await exchange(served.port, [request], 1)]  # still serving

    (answer,), done = await both_ways(scenario)
    assert answer[0].startswith(b"HTTP/1.1 200 ") and len(done["lines"]) == 1 and len(done["published"]) == 1


async def test_expect_100_continue_is_answered_before_the_body_as_uvicorn_does() -> None:
    """uvicorn writes `100 Continue` when the app first reads the body: for a known endpoint whose declared
    size is within the limit, not for an unknown endpoint or a size over the limit (answered at once)."""
    expect = b"expect: 100-continue\r\n"
    request = post("retell", RETELL, extra=expect)
    head, body = request.split(b"\r\n\r\n", 1)

    async def scenario(served: Served) -> list[list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(head + b"\r\n\r\n")
        go_on = await read_answer(reader)
        writer.write(body)
        answer = await read_answer(reader)
        writer.close()
        unknown = post("retell", RETELL, endpoint="nobody", extra=expect).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        too_large = head.replace(b"content-length: %d" % len(body), b"content-length: 999999") + b"\r\n\r\n"
        return [[go_on, answer], await exchange(served.port, [unknown], 1), await exchange(served.port, [too_large], 1)]

    (continued, unknown, too_large), _ = await both_ways(scenario)
    assert continued[0] == b"HTTP/1.1 100 Continue\r\n\r\n" and continued[1].startswith(b"HTTP/1.1 200 ")
    assert unknown[0].startswith(b"HTTP/1.1 404 ") and too_large[0].startswith(b"HTTP/1.1 413 ")


async def test_connection_close_and_http_1_0_are_answered_then_closed() -> None:
    close = post("retell", RETELL, extra=b"connection: close\r\n")
    http10 = post("vapi", SIGNED[0][1]).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)

    async def scenario(served: Served) -> list[list[bytes]]:
        return [await exchange(served.port, [close], 1), await exchange(served.port, [http10], 1)]

    answers, _ = await both_ways(scenario)
    for answer in answers:
        assert b"\r\nconnection: close\r\n" in answer[0] and answer[1] == b"<closed>", answer


async def test_the_client_logged_is_the_one_a_trusted_proxy_forwards_and_only_then() -> None:
    forwarded = post("retell", RETELL, extra=b"x-forwarded-for: 198.51.100.7, 10.0.0.1\r\n")

    async def scenario(served: Served) -> list[list[bytes]]:
        return [await exchange(served.port, [forwarded], 1)]

    _, trusted = await both_ways(scenario)
    assert [client for _, _, client, _, _ in trusted["lines"]] == ["10.0.0.1:0"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")  # not the peer: X-Forwarded-For is ignored
        _, untrusted = await both_ways(scenario)
    assert [client for _, _, client, _, _ in untrusted["lines"]] == ["127.0.0.1:*"]


async def test_the_bodies_in_flight_are_bounded_on_the_direct_path_too() -> None:
    """A body held unfinished takes its bytes from the budget; a request past it is 503 overloaded with
    Retry-After; once the held one is answered, everything is given back."""
    holding = post("vapi", b"x" * 60_001)

    async def scenario(served: Served) -> list[list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(holding[:-1])
        await writer.drain()
        await asyncio.sleep(0.1)
        past = await exchange(served.port, [post("vapi", b"y" * 50_000)], 1)
        fits = await exchange(served.port, [post("retell", RETELL)], 1)
        writer.write(holding[-1:])
        first = await read_answer(reader)
        writer.close()
        assert served.budget_held() == 0
        return [past, fits, [first]]

    (past, fits, first), _ = await both_ways(scenario, max_body_bytes_in_flight=100 * 1024)
    assert past[0].startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 5\r\n" in past[0]
    assert b'"error":"overloaded"' in past[0] and fits[0].startswith(b"HTTP/1.1 200 ")
    assert first[0].startswith(b"HTTP/1.1 400 ")  # signed, not JSON: read whole, then refused


class FailingPublisher(RecordingPublisher):
    said = ""

    async def _send(self, event: Any, source: str) -> Any:
        self.said = f"a bug on {event.conversation_id}: {event.messages[0].text}"  # the payload's own text
        raise ZeroDivisionError(self.said)


async def test_a_webhook_the_ingress_fails_on_is_a_json_500_counted_and_logged_and_the_connection_goes_on() -> None:
    """An exception of the ingress's own (here the publisher's) is the webhook's answer like any other: a
    JSON 500 `internal_error` that says the event is not known to be published, counted as outcome `error`
    and logged at ERROR with its traceback by the ingress's line, the body's bytes given back, and the
    connection kept (the request was read whole). Before, it was uvicorn's plain-text "Internal Server
    Error", counted nowhere (no alert could see it), and the connection closed."""

    async def scenario(served: Served) -> list[list[bytes]]:
        return [await exchange(served.port, [post("retell", RETELL), post("vapi", SIGNED[0][1])], 2)]

    answers, done = await both_ways(scenario, publisher=FailingPublisher())
    first, second = answers[0][:2]
    assert first.startswith(b"HTTP/1.1 500 ") and b"\r\ncontent-type: application/json\r\n" in first
    assert b"connection: close" not in first
    body = orjson.loads(first.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == "internal_error"
    assert "not known to be published" in body["message"] and "a bug" not in body["message"]
    assert second.startswith(b"HTTP/1.1 500 ")  # answered on the same connection
    assert done["counted"] == {("retell", "copperline", "error"): 1, ("vapi", "copperline", "error"): 1}
    assert [line[1] for line in done["lines"]] == ["webhook error", "webhook error"]
    assert done["budget_held"] == 0


async def test_the_traceback_of_a_webhook_the_ingress_fails_on_is_logged_once_at_error_without_its_text() -> None:
    """The line's `exc` is the traceback with the exception's type, not its text, which here quotes the
    transcript (before, logging's traceback wrote it: the log line carries no body)."""
    for direct in (True, False):
        publisher = FailingPublisher()
        async with serving(direct, publisher=publisher) as served:
            await exchange(served.port, [post("retell", RETELL)], 1)
            failed = [r for r in served.lines if r.exc_info is not None or "exc" in r.__dict__]
            assert len(failed) == 1, [r.getMessage() for r in failed]
            assert failed[0].name == "services.ingress" and failed[0].levelno == logging.ERROR
            exc = orjson.loads(JsonFormatter("ingress").format(failed[0]))["exc"]  # as the pod writes it
            assert exc.startswith("Traceback (most recent call last):\n") and ", in _send\n" in exc
            assert "ZeroDivisionError" in exc
            assert publisher.said and publisher.said.split(": ", 1)[1] not in exc


async def test_a_route_that_fails_after_its_answer_is_made_is_answered_500_and_closed_as_uvicorn_does() -> None:
    """What the route cannot answer itself (here a handler that returns no answer, a bug in the route's
    own code): the server's 500, the connection closed."""

    async def no_answer(*args: Any) -> Any:
        return None

    answers = []
    textless_tracebacks()  # as observability.setup does in the service
    for direct in (True, False):
        async with serving(direct) as served:
            for route in served.app.direct_routes.values():
                route.handler.handle = no_answer  # type: ignore[method-assign]
            answers.append(undated(await exchange(served.port, [post("retell", RETELL)], 1)))
            failures = [r for r in served.lines if r.getMessage().startswith("Exception in ASGI application")]
            assert len(failures) == 1 and failures[0].__dict__["exc"].startswith("Traceback (most recent call last):")
            assert served.budget_held() == 0
    assert answers[0] == answers[1]
    assert answers[0][0].startswith(b"HTTP/1.1 500 ") and b"connection: close" in answers[0][0]


class SlowPublisher(RecordingPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()

    async def _send(self, event: Any, source: str) -> Any:
        self.sending.set()
        await asyncio.sleep(0.3)
        return await super()._send(event, source)


async def test_a_webhook_in_flight_at_shutdown_is_answered_then_its_connection_closed() -> None:
    """SIGTERM (uvicorn's should_exit): the webhook being published is answered, with `connection: close`,
    and the server waits for it before it stops."""
    publisher = SlowPublisher()
    async with serving(True, publisher=publisher) as served:
        answering = asyncio.create_task(exchange(served.port, [post("retell", RETELL)], 1))
        await asyncio.wait_for(publisher.sending.wait(), 5)
        served.server.should_exit = True
        answer, closed = await answering
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close\r\n" in answer
    assert b'"status":"published"' in answer and closed == b"<closed>"


async def small_buffered_client(served: Served) -> socket.socket:
    """A non-blocking client socket to `served` whose receive buffer, and the server side's send buffer, are
    4 KiB: answers it does not read soon fill both, and the server's transport passes its high-water mark."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", served.port))
    client.setblocking(False)
    while not served.server.server_state.connections:
        await asyncio.sleep(0.01)
    for connection in served.server.server_state.connections:
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


async def test_a_webhook_whose_turn_came_while_its_client_read_no_answers_is_read_on_once_it_does() -> None:
    """A client that sends many requests before reading their answers (its socket's buffers small, so the
    server's transport passes its high-water mark): reading stops until it reads them, and then goes on,
    also for a pipelined webhook that began meanwhile with part of its body (before, it was never read
    further: no answer, its body's bytes held in the budget and the connection kept for good). Direct
    only: as ASGI, the 404s answered at once here are each a task, so the burst is over the pipelining bound."""
    unknown = b"POST /webhooks/retell/nobody HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    second = post("vapi", SIGNED[0][1])
    async with serving(True) as served:
        loop = asyncio.get_running_loop()
        client = await small_buffered_client(served)
        await loop.sock_sendall(client, unknown * 700 + post("retell", RETELL) + second[:-50])
        await asyncio.sleep(0.5)  # the answers pile up unread
        received = b""
        for wanted in (1, 2):
            with contextlib.suppress(TimeoutError):
                while received.count(b"HTTP/1.1 200 ") < wanted:
                    chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), 3)
                    assert chunk, received[-300:]
                    received += chunk
            if wanted == 1:
                await loop.sock_sendall(client, second[-50:])
        client.close()
        held = served.budget_held()
    assert [a.split(b" ", 1)[0] for a in received.split(b"HTTP/1.1 ")[1:]] == [b"404"] * 700 + [b"200", b"200"]
    assert len(served.publisher.sent) == 2 and held == 0


async def test_a_client_that_reads_none_of_its_answers_is_disconnected_after_the_read_timeout() -> None:
    """A client that sends requests and never reads the answers (the server's transport past its high-water
    mark, writing paused) holds its connection only `read_timeout_seconds`, as one that never sends does.
    Before, such a connection stayed open for good: nothing timed a wait on the client's reading, and
    closing it waited for the unread bytes to be written."""
    unknown = b"POST /webhooks/retell/nobody HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    async with serving(True, read_timeout_seconds=1.0) as served:
        loop = asyncio.get_running_loop()
        client = await small_buffered_client(served)
        await loop.sock_sendall(client, unknown * 2000)  # the answers fill both buffers: writing pauses
        async with asyncio.timeout(6):
            while served.server.server_state.connections:
                await asyncio.sleep(0.05)
        refused = [r for r in served.lines if r.getMessage() == "request refused: write_timeout"]
        client.close()
    assert len(refused) == 1 and "1 s" in refused[0].__dict__["detail"]
