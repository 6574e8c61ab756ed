"""SSRF guard: resolve, vet every address, and connect only to a vetted one.

Vetting happens where the socket is opened (an httpcore network backend), not before the request: the
address that passed the check is the address connected to, so a DNS answer that changes between check
and connect (rebinding) has no window. Connection pooling stays keyed by host name, so the Host header,
TLS SNI and certificate verification all use the name from the URL.

Refused: private, loopback, link-local, CGNAT 100.64/10, cloud metadata, multicast, unspecified,
documentation, benchmarking, reserved, and the IPv4-mapped / IPv4-compatible / SIIT-translated / 6to4 /
NAT64 / Teredo forms of those; the whole local-use NAT64 prefix 64:ff9b:1::/48; anything `ipaddress` does
not call global. `allow_private` (demo and test sinks) lifts everything except the cloud metadata endpoints,
which stay refused in every form: no destination has a reason to post to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import select
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "fd00:ec2::23")
)
_NETS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this' network"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("198.18.0.0/15", "benchmarking"),
    ("240.0.0.0/4", "reserved"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6)"),
    ("fc00::/7", "unique local"),
    ("fec0::/10", "site local (deprecated)"),
)
BLOCKED_NETWORKS = tuple((ipaddress.ip_network(n), why) for n, why in _NETS)
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215 local-use NAT64: the operator picks the prefix length (/48 to /96), so where the IPv4
# address sits is not knowable; the whole /48 is non-public and metadata at any RFC 6052 position is refused
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765): ::ffff:0:a.b.c.d
_V4_COMPATIBLE = ipaddress.ip_network("::/96")  # IPv4-compatible (RFC 4291, deprecated): ::a.b.c.d


class AddressRefused(Exception):
    """Raised when a destination host resolves only to addresses the guard refuses."""


class UrlRefused(ValueError):
    """Raised when a configured URL is not one httpx can send to; the message says what is wrong without
    quoting any part of the URL (a user:password, a secret URL's path). The caller names the field."""


_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
PERCENT_ENCODED = "a password with / ? or # in it is written percent-encoded: %2F %3F %23"


def checked_http_url(url: str, *, login_refused: str | None = None) -> httpx.URL:
    """`url` parsed, when it is an http:// or https:// URL (any case, as RFC 3986 has it) with a host that is a
    valid name, a port in 1-65535 and no space or control character; else UrlRefused. With `login_refused`
    (why, for this caller), a user name or password in it is refused too: the CLI's API address, the LLM's
    base URL and the dispatcher's destinations use this one check (they had three, each missing a case)."""
    if not url[:8].lower().startswith(("http://", "https://")):
        raise UrlRefused("the URL must start with http:// or https://")
    if _SPACE_OR_CONTROL.search(url):
        raise UrlRefused("the URL has a space or control character")
    try:
        parsed = httpx.URL(url)
        parsed.host.encode("idna")  # what connecting does with it: `a..b`, a label over 63 characters
    except httpx.InvalidURL as exc:
        raise UrlRefused(f"the URL cannot be parsed: {_parse_problem(exc, url)}") from None
    except ValueError:  # idna's errors (httpx decoding an `xn--` label, or the encoding above) are ValueErrors
        raise UrlRefused("the URL's host is not a valid name") from None
    if not parsed.host:
        raise UrlRefused("the URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UrlRefused("the URL's port is not 1-65535")
    if login_refused is not None and parsed.userinfo:
        raise UrlRefused(login_refused)
    return parsed


def _parse_problem(exc: httpx.InvalidURL, url: str) -> str:
    """httpx's complaint without what it quotes: a password with an unencoded / ? or # ends the URL's host
    there, and the rest of the password is then quoted as the port (`Invalid port: 'hunter2'`)."""
    said = re.sub(r"(component|with) '(\w+|/+|:)'", r"\1 \2", str(exc))  # the name of a part, not its value
    problem = re.split("['\"]", said, maxsplit=1)[0].rstrip(" :,") or "it cannot be parsed"
    return f"{problem} ({PERCENT_ENCODED})" if "@" in url else problem


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, IPv4-compatible, SIIT-translated, 6to4, NAT64 /96,
    Teredo), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN or ip in _SIIT or (ip in _V4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def local_nat64_candidates(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 address at each RFC 6052 position a 64:ff9b:1::/48 address may carry it (/48, /56, /64, /96);
    bits 64-71 are the reserved `u` octet, skipped."""

    def bits(start: int, count: int) -> int:
        return (int(ip) >> (128 - start - count)) & ((1 << count) - 1)

    words = (
        bits(48, 16) << 16 | bits(72, 16),
        bits(56, 8) << 24 | bits(72, 24),
        bits(72, 32),
        bits(96, 32),
    )
    return [ipaddress.IPv4Address(w) for w in words]


def refusal(ip: IPAddress, allow_private: bool = False) -> str | None:
    """None when the address may be connected to; otherwise why not."""
    if ip in METADATA:
        return "cloud metadata endpoint"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        if any(inner in METADATA for inner in local_nat64_candidates(ip)):
            return f"cloud metadata endpoint (embedded in {ip})"
        return None if allow_private else "local-use NAT64 (RFC 8215)"
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = refusal(inner, allow_private)
        if why is not None:
            return f"{why} (embedded in {ip})"
    if allow_private:
        return None
    return _category(ip)


def _category(ip: IPAddress) -> str | None:
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
    )
    for hit, why in checks:
        if hit:
            return why
    for net, why in BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return why
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def vetted_addresses(host: str, port: int, allow_private: bool, resolver: Resolver) -> list[str]:
    """The resolved addresses that pass the guard, in resolver order; AddressRefused when none do."""
    try:
        answers = await resolver(host, port)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    allowed: list[str] = []
    refused: list[str] = []
    for answer in answers:
        ip = ipaddress.ip_address(answer.split("%", 1)[0])
        why = refusal(ip, allow_private)
        if why is None:
            allowed.append(answer)
        else:
            refused.append(f"{ip} ({why})")
    if not allowed:
        raise AddressRefused(f"refusing to connect to {host}: {', '.join(refused) or 'no address'}")
    return allowed


class VettingBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses that passed `refusal`."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception | None = None
        for address in await vetted_addresses(host, port, self._allow_private, self._resolver):
            try:
                stream = await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
                return SocketStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


HELD_BYTES = 64 * 1024  # a request's writes held back to go out together, at most


class SocketStream(httpcore.AsyncNetworkStream):
    """httpcore's anyio stream with its socket looked up once, and a request written in one send.

    Before every request httpcore's pool asks each idle connection whether its socket is readable (the
    server closed it), and the anyio stream finds the socket by building every socket attribute anew
    (getsockname, getpeername, ...): about a fifth of the CPU of a request in bench/dispatcher.py's bare
    httpx loop. The check itself is the same poll(2) on the same socket.

    httpcore writes a request's head and its body separately, each a send(2) (on loopback the sender's
    CPU also carries the receiver's side of TCP, and wakes it) and an anyio write (a cancel scope, a
    checkpoint): one write instead cut the dispatcher's CPU per delivery in process by 11 %
    (bench/dispatcher.py, 2026-12-07). This stream holds what is written until the next read (HTTP/1.1
    reads the answer only after the whole request is written) or until HELD_BYTES are held, and sends it
    at once: one segment for a webhook instead of two (an answer h11 already holds needs no read:
    GuardedTransport refuses it while the request is held). The held bytes go out under the write timeout
    they were written with; a WriteError sending them is left for the read to find, as httpcore does with
    a request the server stopped reading (it may have answered, 413 say, before closing)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._held = b""
        self._held_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            with contextlib.suppress(httpcore.WriteError):
                await self._send_held()
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._held += buffer
        self._held_timeout = timeout
        if len(self._held) >= HELD_BYTES:
            await self._send_held()

    async def _send_held(self) -> None:
        held, self._held = self._held, b""
        await self._inner.write(held, self._held_timeout)

    @property
    def holding(self) -> bool:
        """Whether bytes written have not been sent yet: only between a request's writes and its first read."""
        return bool(self._held)

    async def aclose(self) -> None:
        self._held = b""
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        if self._held:
            await self._send_held()
        return SocketStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            return readable(self._socket)
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


def readable(sock: socket.socket | None) -> bool:
    """Whether a read would not block (data, or the peer's close); a missing or closed socket counts
    as readable, so the connection is dropped (httpcore's rule)."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool, its assignment pass linear in the number of connections.

    httpcore runs the pass when a request arrives and when an answer is closed. Version 1.0.9 recounts the
    connections for each idle one (the length of a list of every connection's is_idle()), so a pass makes
    connections² calls: about 250 is_idle() calls per delivery in bench/dispatcher.py's 17-connection
    pools. This pass makes the same decisions in the same order; the count it compares with
    max_keepalive_connections is len(self._connections), what that list's length always was. It replaces a
    private method: pyproject.toml pins httpcore 1.0, and tests/unit/common/test_ssrf.py fails if a
    release renames the method (this one would then never run)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        # closed ones dropped; expired ones, and idle ones beyond the keep-alive limit, closed
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired() or (
                connection.is_idle() and len(self._connections) > self._max_keepalive_connections
            ):
                self._connections.remove(connection)
                closing.append(connection)
        # each queued request: the first connection that can take it, else a new one, else a new one in
        # place of the first idle one
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            connections = self._connections
            reused = next((c for c in connections if c.can_handle_request(origin) and c.is_available()), None)
            if reused is not None:
                pool_request.assign_to_connection(reused)
                continue
            if len(connections) >= self._max_connections:
                idle = next((c for c in connections if c.is_idle()), None)
                if idle is None:
                    continue  # it waits for a connection to come free
                connections.remove(idle)
                closing.append(idle)
            connection = self.create_connection(origin)
            connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing


class StatelessClient(httpx.AsyncClient):
    """httpx's client keeping no cookies: a Set-Cookie in an answer is dropped, not sent back with every
    later request to that host, as httpx's own jar does (a delivery, or a transcript fetch, carries what
    it is given and nothing an earlier answer asked for). Not reading each answer into a jar also saves
    about 30 us of CPU per request (through the guarded transport to a loopback server, 2026-12-07): some
    2 % of the dispatcher's 1,373 us per delivery in process. A cookie put in a request is still sent: a
    Cookie header a destination configures, or httpx's deprecated per-request `cookies=`."""

    def __init__(self, **options: typing.Any) -> None:
        if options.get("cookies"):
            raise ValueError("a StatelessClient sends no cookies")
        super().__init__(**options)
        self._no_cookies = _AnswersIgnored()

    @property
    def cookies(self) -> httpx.Cookies:  # what httpx reads to add cookies to a request and to keep an answer's
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise ValueError("a StatelessClient sends no cookies")


class _AnswersIgnored(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the vetting backend under its connection pool; no retries, no proxy."""

    def __init__(
        self,
        *,
        allow_private: bool,
        limits: httpx.Limits,
        verify: ssl.SSLContext | bool = True,
        resolver: Resolver = system_resolver,
    ) -> None:
        super().__init__(limits=limits, trust_env=False, retries=0)
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        # httpx has no public seam for the network backend; the pool is rebuilt with the same options
        self._pool = LinearPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=0,
            network_backend=VettingBackend(allow_private, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """An answer that comes back while its request is still held (SocketStream) was read from bytes the
        server sent before it, a second answer to an earlier request that h11 kept: it is not this request's
        answer, and the request never left. Refused, and the connection closed with the request in it; taken,
        it would be a 2xx for a request the server never got."""
        response = await super().handle_async_request(request)
        stream = response.extensions.get("network_stream")
        if isinstance(stream, SocketStream) and stream.holding:
            await response.aclose()  # unread: httpcore closes the connection
            raise httpx.RemoteProtocolError(
                "the server sent an answer before the request (more than one answer to an earlier one)",
                request=request,
            )
        return response


def guarded_client(*, allow_private: bool, limits: httpx.Limits, **options: typing.Any) -> StatelessClient:
    """The client for URLs someone else chose (a destination's, a transcript_url): the SSRF guard under its
    pool, no cookie jar, redirects not followed, no proxy from the environment. `options`: httpx's others."""
    transport = GuardedTransport(allow_private=allow_private, limits=limits)
    return StatelessClient(transport=transport, trust_env=False, follow_redirects=False, **options)
