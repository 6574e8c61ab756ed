"""The SSRF guard: which addresses are refused, and that the transport never connects to them."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import typing

import httpcore
import httpx
import pytest
from httpcore._async.connection_pool import AsyncPoolRequest

from services.common.ssrf import (
    HELD_BYTES,
    AddressRefused,
    GuardedTransport,
    LinearPool,
    SocketStream,
    StatelessClient,
    UrlRefused,
    checked_http_url,
    readable,
    refusal,
    vetted_addresses,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "'this' network"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.88.99.1", "6to4 relay"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "loopback (embedded"),
    ("::ffff:10.0.0.1", "private (embedded"),
    ("::ffff:169.254.169.254", "cloud metadata endpoint (embedded"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata endpoint (embedded"),
    ("64:ff9b::7f00:1", "loopback (embedded"),
    ("2002:7f00:1::", "loopback (embedded"),
    ("2002:a00:1::", "private (embedded"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ""),  # Teredo
    # SIIT IPv4-translated ::ffff:0:a.b.c.d
    ("::ffff:0:a9fe:a9fe", "cloud metadata endpoint (embedded"),
    ("::ffff:0:7f00:1", "loopback (embedded"),
    ("::ffff:0:a00:1", "private (embedded"),
    # IPv4-compatible ::a.b.c.d (deprecated): refused whatever it carries, metadata named
    ("::169.254.169.254", "cloud metadata endpoint (embedded"),
    ("::10.0.0.1", "private (embedded"),
    ("::8.8.8.8", "IPv4-compatible (deprecated)"),
    # local-use NAT64 64:ff9b:1::/48: non-public whatever it embeds, metadata named at every RFC 6052 position
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("64:ff9b:1:0:8:808:800:0", "local-use NAT64"),
    ("64:ff9b:1:a9fe:a9:fe00::", "cloud metadata endpoint (embedded"),  # /48
    ("64:ff9b:1:a9:fe:a9fe::", "cloud metadata endpoint (embedded"),  # /56
    ("64:ff9b:1:0:a9:fea9:fe00:0", "cloud metadata endpoint (embedded"),  # /64
    ("64:ff9b:1::a9fe:a9fe", "cloud metadata endpoint (embedded"),  # /96
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "::ffff:0:808:808",  # SIIT form of a public address
    "64:ff9b::808:808",  # well-known NAT64 of a public address
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_non_global_addresses_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "100.64.0.1"])
def test_allow_private_lifts_the_guard_for_private_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize("address", ["64:ff9b:1::808:808", "::ffff:0:7f00:1"])
def test_allow_private_lifts_the_guard_for_local_nat64_and_translated_private_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "::ffff:0:a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1:a9fe:a9:fe00::",
        "64:ff9b:1:a9:fe:a9fe::",
        "64:ff9b:1:0:a9:fea9:fe00:0",
        "64:ff9b:1::a9fe:a9fe",
        "::169.254.169.254",  # IPv4-compatible (deprecated ::a.b.c.d)
        "::169.254.170.2",
    ],
)
def test_metadata_endpoints_stay_refused_even_with_allow_private(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=True) is not None


async def test_only_vetted_addresses_of_a_mixed_answer_are_kept() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["10.0.0.5", "93.184.216.34", "::1"]

    assert await vetted_addresses("mixed.example", 443, False, resolver) == ["93.184.216.34"]


async def test_a_name_resolving_only_to_private_addresses_is_refused_with_the_reason() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    with pytest.raises(AddressRefused, match="metadata"):
        await vetted_addresses("rebind.example", 80, False, resolver)


async def test_transport_refuses_before_connecting() -> None:
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(
        transport=GuardedTransport(allow_private=False, limits=limits, resolver=resolver)
    ) as client:
        with pytest.raises(AddressRefused, match="loopback"):
            await client.post("http://internal.example:8080/hook", content=b"{}")
    assert resolved == ["internal.example"]


async def test_a_pooled_connection_the_server_closed_is_noticed_and_replaced() -> None:
    """The pool asks each idle connection whether its socket is readable before reusing it
    (services.common.ssrf.SocketStream answers from the socket it looked up once): a connection the
    server closed after answering is dropped, the next request goes out on a new one, each time
    through the guard."""
    connections: list[int] = []
    resolved: list[str] = []

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # keep-alive, then closed anyway
        await writer.drain()
        writer.close()

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    server = await asyncio.start_server(answer_once_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = GuardedTransport(allow_private=True, limits=httpx.Limits(max_connections=4), resolver=resolver)
    async with server, httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            answer = await client.get(f"http://sink.example:{port}/")
            assert answer.text == "ok"
            await asyncio.sleep(0.05)  # the server's close reaches us while the connection sits in the pool
    assert len(connections) == 3
    assert resolved == ["sink.example"] * 3


def test_a_closed_or_missing_socket_counts_as_readable() -> None:
    a, b = socket.socketpair()
    try:
        assert not readable(a)
        b.sendall(b"x")
        assert readable(a)
    finally:
        a.close()
        b.close()
    assert readable(a) and readable(None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://ops:s3cret@files.example/x", "the URL must start with http:// or https://"),
        ("ops:s3cret@127.0.0.1:8400", "the URL must start with http:// or https://"),
        ("http://a s3cret/", "the URL has a space or control character"),  # httpx sends to host a%20s3cret
        ("http://127.0.0.1:8400/s3cret\n", "the URL has a space or control character"),
        ("http://ops:s3cret/pw@127.0.0.1:8400", "the URL cannot be parsed: Invalid port (a password with / ? or"),
        ("https:///s3cret", "the URL has no host"),
        ("http://ops:s3cret@api..example", "the URL's host is not a valid name"),
        ("http://ops:s3cret@xn--a.example", "the URL's host is not a valid name"),
        ("http://ops:s3cret@127.0.0.1:99999", "the URL's port is not 1-65535"),
        ("http://ops:s3cret@127.0.0.1:0", "the URL's port is not 1-65535"),
    ],
)
def test_a_url_httpx_cannot_send_to_is_refused_saying_why_without_quoting_it(url: str, problem: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        checked_http_url(url)
    assert str(refused.value).startswith(problem) and "s3cret" not in str(refused.value)


def test_a_login_in_the_url_is_refused_only_where_the_caller_says_why() -> None:
    url = "HTTPS://ops:s3cret@crm.example.com:8443/hooks"
    assert checked_http_url(url).port == 8443
    with pytest.raises(UrlRefused, match=r"^set the credential once$"):
        checked_http_url(url, login_refused="set the credential once")
    assert checked_http_url("https://crm.example.com/hooks", login_refused="set the credential once").host


class Recording(httpcore.AsyncNetworkStream):
    """A network stream that records what is sent and answers reads from a script."""

    def __init__(self, fail_writes: bool = False) -> None:
        self.sent: list[tuple[bytes, float | None]] = []
        self.fail_writes = fail_writes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.fail_writes:
            raise httpcore.WriteError("connection reset by peer")
        self.sent.append((buffer, timeout))

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> object:
        return None


async def test_a_request_head_and_body_go_out_in_one_send_before_the_answer_is_read() -> None:
    """httpcore writes the head and the body separately: two send(2)s and two anyio writes per webhook."""
    inner = Recording()
    stream = SocketStream(inner)
    await stream.write(b"POST /hook HTTP/1.1\r\ncontent-length: 2\r\n\r\n", timeout=5.0)
    await stream.write(b"{}", timeout=5.0)
    assert inner.sent == []
    await stream.read(65536, timeout=1.0)
    assert inner.sent == [(b"POST /hook HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}", 5.0)]
    await stream.read(65536)
    assert len(inner.sent) == 1  # nothing held, nothing sent again


async def test_a_large_body_is_sent_as_it_is_written_not_held_whole() -> None:
    inner = Recording()
    stream = SocketStream(inner)
    await stream.write(b"h" * 100)
    await stream.write(b"b" * HELD_BYTES)
    assert [len(b) for b, _ in inner.sent] == [100 + HELD_BYTES]
    await stream.write(b"tail")
    await stream.aclose()  # a connection closed with bytes held sends nothing more
    assert [len(b) for b, _ in inner.sent] == [100 + HELD_BYTES]


async def test_a_failed_send_of_held_bytes_is_left_for_the_read_to_find() -> None:
    """httpcore ignores a WriteError while writing a request and reads the answer (a server may answer
    413 and close before reading the body); the held bytes keep that rule."""
    stream = SocketStream(Recording(fail_writes=True))
    await stream.write(b"POST / HTTP/1.1\r\n\r\n")
    assert (await stream.read(65536)).startswith(b"HTTP/1.1 200")
    with pytest.raises(httpcore.WriteError):
        await stream.write(b"x" * HELD_BYTES)


def one_loopback_connection() -> GuardedTransport:
    """The guarded transport with one pooled connection, every name resolved to 127.0.0.1."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    return GuardedTransport(allow_private=True, limits=httpx.Limits(max_connections=1), resolver=resolver)


@pytest.mark.parametrize("size", [0, 2, HELD_BYTES - 1, 3 * HELD_BYTES + 7])
async def test_requests_of_every_size_arrive_whole_through_the_guarded_transport(size: int) -> None:
    """A real server on loopback reads each request's head and exactly content-length bytes of body, and
    answers with what it got; three requests on one pooled connection."""
    got: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            body = await reader.readexactly(length)
            got.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            if reader.at_eof():
                break

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(transport=one_loopback_connection(), timeout=10) as client:
        for i in range(3):
            body = bytes([65 + i]) * size
            answer = await client.post(f"http://sink.example:{port}/hook", content=body)
            assert answer.content == body
    assert got == [bytes([65 + i]) * size for i in range(3)]


async def test_an_answer_sent_before_the_request_is_not_taken_as_its_answer() -> None:
    """A server that sends two answers to one request leaves the second in the client's buffer, and the next
    request on that connection is 'answered' from it before any read: with the request held until that read,
    it never left, yet came back 200 (and was dropped when the connection closed). It is refused instead;
    the retry goes out on a new connection and gets its own answer."""
    got: list[bytes] = []
    connections = 0

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while data := await reader.read(65536):
            got.append(data.rsplit(b"\r\n\r\n", 1)[1])
            extra = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale" if len(got) == 1 else b""
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n" + got[-1] + extra)
            await writer.drain()

    server = await asyncio.start_server(twice, "127.0.0.1", 0)
    url = f"http://sink.example:{server.sockets[0].getsockname()[1]}/hook"
    async with server, httpx.AsyncClient(transport=one_loopback_connection(), timeout=5) as client:
        assert (await client.post(url, content=b"A")).content == b"A"
        with pytest.raises(httpx.RemoteProtocolError, match="before the request"):
            await client.post(url, content=b"B")
        assert (await client.post(url, content=b"C")).content == b"C"
    assert got == [b"A", b"C"]
    assert connections == 2


class Held:
    """A loopback HTTP/1.1 server that answers each request once `release` is set (every request held
    until then), and counts the connections it was opened and the requests it holds."""

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.waiting = 0
        self.most_open = 0
        self.release = asyncio.Event()
        self.release.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.waiting += 1
                await self.release.wait()
                self.waiting -= 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1


async def until(condition: typing.Callable[[], bool]) -> None:
    """Waits (5 s at most) for what the server sees, instead of guessing how long it takes to get there."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("pool_type", [httpcore.AsyncConnectionPool, LinearPool])
async def test_the_linear_pool_decides_as_httpcores_own(pool_type: type[httpcore.AsyncConnectionPool]) -> None:
    """The same outcomes with httpcore's pool and ours, on a real server: sequential requests share one
    connection; 8 at once over at most 3 connections all get their answer; of 3 connections left idle
    with keep-alive for 1, one stays open."""
    held = Held()
    server = await asyncio.start_server(held.serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server:
        async with pool_type(max_connections=3, max_keepalive_connections=3) as pool:
            for _ in range(3):
                assert (await pool.request("GET", url)).content == b"ok"
            assert held.connections == 1
            held.release.clear()
            answers = [asyncio.ensure_future(pool.request("GET", url)) for _ in range(8)]
            await until(lambda: held.waiting == 3)
            assert held.most_open == 3  # the other 5 wait for a connection to come free
            held.release.set()
            assert [a.content for a in await asyncio.gather(*answers)] == [b"ok"] * 8
            assert held.connections == 3
        held.connections = held.most_open = 0
        async with pool_type(max_connections=3, max_keepalive_connections=1) as pool:
            held.release.clear()
            answers = [asyncio.ensure_future(pool.request("GET", url)) for _ in range(3)]
            await until(lambda: held.waiting == 3)
            held.release.set()
            await asyncio.gather(*answers)
            assert held.connections == 3
            assert len(pool.connections) == 1
            assert (await pool.request("GET", url)).content == b"ok"
            assert held.connections == 3  # the kept one is reused


class FakeConnection(httpcore.AsyncConnectionInterface):
    """A pooled connection reduced to the answers the assignment pass asks of it."""

    def __init__(self, name: str, origin: httpcore.Origin, flags: list[bool]) -> None:
        self.name, self.origin = name, origin
        self.closed, self.expired, self.idle, self.available = flags

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available


class FakePool(LinearPool):
    """A pool of FakeConnections; a new one is available at once when `multiplexed` (HTTP/2 over TLS)."""

    def __init__(self, multiplexed: bool, max_connections: int, max_keepalive_connections: int) -> None:
        super().__init__(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
        self.multiplexed = multiplexed
        self.created = 0

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        self.created += 1
        return FakeConnection(f"new{self.created}", origin, [False, False, False, self.multiplexed])


async def test_the_linear_pass_decides_as_httpcores_own_in_every_state() -> None:
    """httpcore's pass and ours, each on its own copy of 5,000 random pool states: connections closed,
    expired, idle, available (a multiplexed one while busy) or none of these, for two origins, under, at
    and one over max_connections, over keep-alive or not; queued requests and assigned ones. The same
    connections closed in the same order, the same left in the same order, each request on the same one."""
    urls = [httpcore.URL("http://a.example/"), httpcore.URL("https://b.example/")]
    rng = random.Random(21)
    for case in range(5000):
        limits = (rng.random() < 0.3, max_connections := rng.randint(1, 5), rng.randint(0, max_connections))
        connections = [
            (rng.randrange(2), [rng.random() < p for p in (0.15, 0.15, 0.5, 0.5)])
            for _ in range(rng.randint(0, max_connections + 1))
        ]
        requests = [(rng.randrange(2), rng.randrange(-2, len(connections))) for _ in range(rng.randint(0, 6))]
        outcomes = []
        for assign in (
            httpcore.AsyncConnectionPool._assign_requests_to_connections,
            LinearPool._assign_requests_to_connections,
        ):
            pool = FakePool(*limits)
            pool._connections = [FakeConnection(f"c{n}", urls[u].origin, f) for n, (u, f) in enumerate(connections)]
            pool._requests = [AsyncPoolRequest(httpcore.Request("GET", urls[u])) for u, _ in requests]
            for request, (_, on) in zip(pool._requests, requests, strict=True):
                if on >= 0:  # already sent on a connection
                    request.assign_to_connection(pool._connections[on])
            closing = typing.cast(list[FakeConnection], assign(pool))
            outcomes.append(
                (
                    [c.name for c in closing],
                    [typing.cast(FakeConnection, c).name for c in pool._connections],
                    [typing.cast(FakeConnection, r.connection).name if r.connection else None for r in pool._requests],
                )
            )
        assert outcomes[0] == outcomes[1], f"case {case}: {limits} {connections} {requests}"


async def test_httpcore_still_calls_the_pass_the_linear_pool_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """LinearPool replaces a private method of httpcore's pool: a release that renames it would leave
    ours unused (correct, and slow again) without this failing."""
    calls = 0
    replaced = LinearPool._assign_requests_to_connections

    def counted(self: LinearPool) -> list[httpcore.AsyncConnectionInterface]:
        nonlocal calls
        calls += 1
        return replaced(self)

    monkeypatch.setattr(LinearPool, "_assign_requests_to_connections", counted)
    held = Held()
    server = await asyncio.start_server(held.serve, "127.0.0.1", 0)
    async with server, httpx.AsyncClient(transport=one_loopback_connection()) as client:
        assert (await client.get(f"http://sink.example:{server.sockets[0].getsockname()[1]}/")).text == "ok"
    assert calls >= 2  # the request's arrival and its answer's close
    assert isinstance(one_loopback_connection()._pool, LinearPool)


async def test_a_stateless_client_keeps_no_cookie_an_answer_sets() -> None:
    heads: list[bytes] = []

    async def setter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append((await reader.readuntil(b"\r\n\r\n")).lower())
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: id=1; Path=/\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(setter, "127.0.0.1", 0)
    url = f"http://sink.example:{server.sockets[0].getsockname()[1]}/"
    async with server, StatelessClient(transport=one_loopback_connection()) as client:
        await client.get(url)
        await client.get(url)
        assert not client.cookies
        with pytest.raises(ValueError, match="no cookies"):
            client.cookies = {"id": "2"}
    assert len(heads) == 2
    assert b"\r\ncookie:" not in heads[1]
    with pytest.raises(ValueError, match="no cookies"):
        StatelessClient(cookies={"id": "3"})
