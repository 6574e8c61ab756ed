"""One socket write per response (services/ingress/serving.py): what is written in one loop step goes out
in one write, in order; a close writes what is held first; over a real socket with uvicorn, keep-alive and
`Connection: close` answers arrive whole."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from services.ingress.serving import CoalescingHttpToolsProtocol, CoalescingTransport


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
