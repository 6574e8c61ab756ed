"""A demo and test receiver: a small real HTTP server (webhooks, Slack, telephony posts) and an SMTP
server (aiosmtpd), in one asyncio process.

Every HTTP request is checked against the Standard Webhooks secrets the sink is given, printed as one
line, and recorded with how many times its webhook-id has been seen (repeats are what the dispatcher's
ledger is there to prevent). Every email is recorded the same way by its X-Postcall-Action-Id.

    GET /received   every request and email, in arrival order (JSON list)
    GET /counts     {webhook-id: times received}
    GET /healthz    ok

    python -m services.devkit.sink --port 8765 --smtp-port 8025     # secrets: SINK_WEBHOOK_SECRETS

Tests script answers per path (`sink.script("/crm", Reply(503), Reply(200))`) and read `sink.received`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import os
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from services.dispatcher.signing import verify

# Public demo secrets (also the demo defaults in examples/dispatcher/destinations.yaml). Never use in production.
DEMO_SECRETS = (
    "whsec_Lg6OyBH/4llMLhZdUkX1EPJtJTzZLIUK2KAo3uw+VOA=",  # crm
    "whsec_Jl/52bhAf8OpbPQrIjf+FE4I/dgAQVScYGRc4EAEwJY=",  # sales-crm
    "whsec_vAzDOszUSwKg5HbthT1Hs6rrFhWkBp3F6EuSK12nW3Y=",  # telephony
)
REASONS = {200: "OK", 302: "Found", 404: "Not Found", 410: "Gone", 429: "Too Many Requests", 503: "Unavailable"}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a stalled receiver)
    body: bytes = b'{"ok":true}'
    trickle: float = 0.0  # seconds between the answer's bytes (a hostile receiver holding the request open)
    endless: bool = False  # a chunked body that never ends (a hostile receiver filling our memory)
    echo: bool = False  # the body is the request's headers as JSON (a debugging endpoint quoting credentials)
    body_delay: float = 0.0  # seconds between the answer's head and its body (a receiver slow after its 2xx)
    hang_up: bool = False  # the head and the body's first byte, then the connection drops (a proxy's reset)
    reset: bool = False  # no answer: the connection is reset (a receiver that crashed mid-request)


class Sink:
    def __init__(
        self,
        secrets: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        smtp_port: int | None = None,
        smtp_login: tuple[str, str] | None = None,
        smtp_tls: ssl.SSLContext | None = None,
        quiet: bool = False,
    ) -> None:
        self.secrets = list(secrets)
        self.host, self.port, self.smtp_port = host, port, smtp_port
        self.smtp_login, self.smtp_tls, self.quiet = smtp_login, smtp_tls, quiet
        self.received: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.smtp_replies: list[str] = []  # answers to DATA, in order, before "250"
        self._scripts: dict[str, tuple[list[Reply], Reply]] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # ── lifecycle ──
    async def start(self) -> Sink:
        http = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = http.sockets[0].getsockname()[1]
        self._servers.append(http)
        if self.smtp_port is not None:
            smtp = await asyncio.get_running_loop().create_server(self._smtp_protocol, self.host, self.smtp_port)
            self.smtp_port = smtp.sockets[0].getsockname()[1]
            self._servers.append(smtp)
        return self

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answer requests to `path` with `replies` in order, then with `then` (default 200) forever."""
        self._scripts[path] = (list(replies), then or Reply())

    def ids(self, path: str | None = None) -> list[str]:
        return [r["webhook_id"] for r in self.received if path is None or r["path"] == path]

    # ── HTTP ──
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the sink is stopping; ending normally keeps asyncio's stream callback from logging it
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.rstrip("\r\n").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await _read_body(reader, headers)
        reply = self._route(method, target.split("?", 1)[0], headers, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.reset:  # SO_LINGER 0: close() sends a RST, not a FIN
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
        status_line = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\n"
        length = "Transfer-Encoding: chunked" if reply.endless else f"Content-Length: {len(reply.body)}"
        answer = f"{status_line}Content-Type: application/json\r\n{length}\r\n{extra}\r\n".encode()
        if reply.endless:
            await _write(writer, answer, reply.trickle)
            chunk = b"%x\r\n%s\r\n" % (len(reply.body), reply.body)
            while True:  # until the client hangs up (ConnectionError ends the connection)
                await _write(writer, chunk, reply.trickle)
        if reply.hang_up or reply.body_delay:
            await _write(writer, answer, reply.trickle)
            answer = b""
            if reply.hang_up:
                await _write(writer, reply.body[:1], reply.trickle)
                return False
            await asyncio.sleep(reply.body_delay)
        await _write(writer, answer + reply.body, reply.trickle)
        return headers.get("connection", "").lower() != "close"

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "GET" and path not in self._scripts:  # a scripted GET: a hostile transcript_url, say
            if path == "/received":
                return Reply(body=orjson.dumps(self.received))
            if path == "/counts":
                return Reply(body=orjson.dumps(dict(self.counts)))
            return Reply(body=b"ok") if path == "/healthz" else Reply(404, body=b"{}")
        replies, then = self._scripts.get(path, ([], Reply()))
        reply = replies.pop(0) if replies else then
        if reply.echo:  # credentials first, as a debugging endpoint's error page would show them
            quoted = dict(sorted(headers.items(), key=lambda kv: kv[0] not in ("authorization", "x-api-key")))
            reply = Reply(reply.status, reply.headers, reply.delay, orjson.dumps({"you_sent": quoted}))
        webhook_id = headers.get("webhook-id", "")
        verified = verify(self.secrets, headers, body) if "webhook-signature" in headers else None
        self._record(
            "http",
            webhook_id,
            path=path,
            method=method,
            verified=verified,
            status=reply.status,
            accept_encoding=headers.get("accept-encoding"),
            authorization=headers.get("authorization"),
            supersedes=headers.get("postcall-supersedes"),
            body=_json_or_text(body),
        )
        return reply

    def _record(self, kind: str, webhook_id: str, **fields: Any) -> None:
        self.counts[webhook_id] += 1
        count = self.counts[webhook_id]
        entry = {
            "n": len(self.received) + 1,
            "kind": kind,
            "webhook_id": webhook_id,
            "count": count,
            "received_at": time.time(),
            **fields,
        }
        self.received.append(entry)
        if not self.quiet:
            signed = {True: "signature ok", False: "SIGNATURE BAD", None: "unsigned"}[fields.get("verified")]
            repeat = f"  REPEAT #{count}" if count > 1 else ""
            where = fields.get("path") or ",".join(fields.get("to", []))
            print(f"sink  {kind:5} {where}  id={webhook_id}  {signed}{repeat}", flush=True)

    # ── SMTP ──
    def _smtp_protocol(self) -> SMTP:
        return SMTP(
            _Mailbox(self),
            hostname="sink.local",
            tls_context=self.smtp_tls,
            require_starttls=self.smtp_tls is not None,
            auth_required=self.smtp_login is not None,
            auth_require_tls=self.smtp_tls is not None,
            authenticator=self._authenticate if self.smtp_login else None,
        )

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.smtp_login == (data.login.decode(), data.password.decode())
        return AuthResult(success=ok, handled=False)


class _Mailbox:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.smtp_replies:
            return self.sink.smtp_replies.pop(0)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        self.sink._record(
            "email",
            str(msg.get("X-Postcall-Action-Id") or msg.get("Message-ID") or ""),
            to=list(envelope.rcpt_tos),
            sender=envelope.mail_from,
            subject=str(msg.get("Subject", "")),
            text=text.get_content() if text else None,
            html=html.get_content() if html else None,
            message_id=str(msg.get("Message-ID", "")),
            tls=session.ssl is not None,
        )
        return "250 Message accepted for delivery"


async def _write(writer: asyncio.StreamWriter, data: bytes, trickle: float) -> None:
    if not trickle:
        writer.write(data)
        await writer.drain()
        return
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(trickle)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return b"".join(chunks)
    return await reader.readexactly(int(headers.get("content-length", "0") or 0))


def _json_or_text(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace")


async def _main(args: argparse.Namespace) -> None:
    secrets = os.environ.get("SINK_WEBHOOK_SECRETS", "").split() or list(DEMO_SECRETS)
    sink = Sink(secrets, host=args.host, port=args.port, smtp_port=args.smtp_port, quiet=args.quiet)
    async with sink:
        print(f"sink  listening  http://{sink.host}:{sink.port}  smtp {sink.host}:{sink.smtp_port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SINK_PORT", "8765")))
    parser.add_argument("--smtp-port", type=int, default=int(os.environ.get("SINK_SMTP_PORT", "8025")))
    parser.add_argument("--quiet", action="store_true", help="no line per request (benchmarks)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))
